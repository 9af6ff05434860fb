"""Smoke test of a candidate bundle: it loads, the model runs, shapes match, scores are finite.

Runs in a child process started with ``subprocess`` (never fork) under a deadline, so a model that crashes
or hangs onnxruntime kills only the child (fault B09, B14). The signing key reaches the child through an
environment variable, never its command line. ``python -m edgerec_sdk.sync.smoke DIR`` prints one JSON line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from ..errors import ModelError, ModelFormatError, ModelIntegrityError, ModelLoadError, SmokeFailure

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["SmokeFailure", "check_bundle", "reason_of", "run_smoke_subprocess", "smoke_test"]

_KEY_ENV = "EDGEREC_SMOKE_SIGNING_KEY"
_HAS_RLIMIT = sys.platform != "win32"
_MAX_ROWS = 4096


def reason_of(exc: BaseException) -> str:
    """A short machine-readable refusal reason for ``status()``."""
    if isinstance(exc, SmokeFailure):
        return exc.reason
    reason = getattr(exc, "reason", None)  # e.g. the updater's RollbackRefused: "rollback_refused"
    if isinstance(reason, str):
        return reason
    msg = str(exc).lower()
    if isinstance(exc, ModelIntegrityError):
        if "signature" in msg:
            return "signature_invalid"
        if "sha256" in msg:
            return "sha256_mismatch"
        if "size" in msg:
            return "size_mismatch"
        return "integrity"
    if isinstance(exc, ModelFormatError):
        if "finite" in msg or "nan" in msg:
            return "nonfinite"
        if "external" in msg:
            return "onnx_external_data"
        return "format"
    if isinstance(exc, ModelLoadError):
        return "load_failed"
    return type(exc).__name__


def smoke_test(path: str | os.PathLike[str], *, signing_key: bytes | None) -> str:
    """Load the bundle at ``path`` and run its model; return the model version or raise a ``ModelError``."""
    from ..bundle import load_bundle

    bundle = load_bundle(path, signing_key=signing_key)
    check_bundle(bundle)
    return bundle.model_version


def check_bundle(bundle: Bundle) -> None:
    """Run the model of a loaded bundle on a few histories; raise :class:`SmokeFailure` if anything is off."""
    from .._impl.model import SMOKE_BATCHES, InterestModel, last_item_history, table_mismatch, warmup_history

    m = bundle.manifest
    model = InterestModel.for_bundle(bundle)
    n = m.n_items
    # the exact input of the in-process warm-up first, then the last catalogue row, then every batch size
    first = model.embed(model.pad([warmup_history(len(bundle.popular))]))
    try:
        model.embed(model.pad([last_item_history(n)]))
    except ModelLoadError as exc:
        raise SmokeFailure(table_mismatch(n, exc), reason="contract", model_version=m.model_version) from exc
    interest = first
    for batch in SMOKE_BATCHES:
        rows = [np.arange(min(n, j % (m.max_seq_len + 1) + 1), dtype=np.int64) for j in range(batch)]
        interest = model.embed(model.pad(rows))  # shape checked against (batch, dim) by embed()
        if not np.isfinite(interest).all():
            break
    if not (np.isfinite(first).all() and np.isfinite(interest).all()):
        raise SmokeFailure("interest vectors are not finite", reason="nonfinite", model_version=m.model_version)
    sample = np.arange(min(m.n_items, _MAX_ROWS), dtype=np.int64)
    vectors = bundle.vectors.rows_f32(sample)
    if vectors.shape != (len(sample), m.dim):
        raise SmokeFailure(f"item vectors have shape {vectors.shape}", reason="contract", model_version=m.model_version)
    scores = interest @ vectors.T
    if not np.isfinite(scores).all():
        raise SmokeFailure("scores are not finite", reason="nonfinite", model_version=m.model_version)


# The child sets its own memory limit before importing anything (never preexec_fn: unsafe with threads).
_BOOT = (
    "import sys\n"
    "limit = int(sys.argv.pop(1))\n"
    "if limit:\n"
    "    import resource\n"
    "    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))\n"
    "from edgerec_sdk.sync.smoke import _main\n"
    "sys.exit(_main(sys.argv[1:]))\n"
)
_MEMORY_WORDS = ("alloc", "memoryerror", "out of memory", "cannot allocate")


def run_smoke_subprocess(
    path: Path, *, signing_key: bytes | None, timeout_s: float, max_memory_bytes: int | None = None
) -> None:
    """Run :func:`smoke_test` in a child interpreter; raise :class:`SmokeFailure` on any failure.

    ``max_memory_bytes`` caps the child's data segment (``RLIMIT_DATA``: heap and private memory, not the
    memory-mapped bundle files); a model that needs more is refused with reason ``smoke_memory``. Where the
    platform has no such limit (Windows), the smoke test runs without one.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEREC_")}
    if signing_key is not None:
        env[_KEY_ENV] = signing_key.hex()
    env["OMP_NUM_THREADS"] = "1"
    limit = max_memory_bytes if max_memory_bytes and _HAS_RLIMIT else 0
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _BOOT, str(limit), str(path)],
            env=env,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SmokeFailure(f"smoke test passed its {timeout_s:.0f} s deadline", reason="smoke_timeout") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        verdict = orjson.loads(lines[-1]) if lines else None
    except orjson.JSONDecodeError:
        verdict = None
    if proc.returncode == 0 and isinstance(verdict, dict) and verdict.get("ok"):
        return
    said = (str(verdict.get("error", "")) if isinstance(verdict, dict) else "") + proc.stderr[-2000:].decode(
        "utf-8", "replace")
    if limit and any(w in said.lower() for w in _MEMORY_WORDS):
        raise SmokeFailure(f"smoke test ran out of its memory budget of {limit // 2**20} MiB "
                           "(SyncConfig.smoke_max_memory_mb); the model needs more memory than the budget",
                           reason="smoke_memory")
    if isinstance(verdict, dict) and verdict.get("reason"):
        raise SmokeFailure(str(verdict.get("error", "smoke test failed"))[:300], reason=str(verdict["reason"])[:40])
    raise SmokeFailure(f"smoke test process died (exit {proc.returncode})", reason="smoke_crashed")


def _main(argv: list[str]) -> int:
    key_hex = os.environ.get(_KEY_ENV)
    key = bytes.fromhex(key_hex) if key_hex else None
    try:
        version = smoke_test(argv[0], signing_key=key)
    except MemoryError:
        sys.stdout.write(orjson.dumps({"ok": False, "reason": "smoke_memory", "error": "MemoryError"}).decode() + "\n")
        return 1
    except ModelError as exc:
        sys.stdout.write(orjson.dumps({"ok": False, "reason": reason_of(exc), "error": str(exc)[:300]}).decode() + "\n")
        return 1
    sys.stdout.write(orjson.dumps({"ok": True, "model_version": version}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
