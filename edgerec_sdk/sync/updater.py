# Over 500 lines: one ordered update transaction (verify, stage, smoke, swap, pointer) sharing its state.
"""The model updater: poll the channel manifest, stage, verify, smoke-test, swap (docs/design.md).

``poll_once()`` is the whole loop body. Order of checks (fault B): signature over the exact manifest bytes,
manifest schema, the rollback check (``created_at`` not older than the newest this edge accepted for its
channel, fault C04), total size under ``max_bundle_bytes``, then every file taken from a verified local bundle
holding the same sha256 or else streamed into a per-process staging directory under its declared size with its
sha256 checked, the smoke test in a child process, the move into
``state_dir/bundles/``, the in-process load (which re-hashes everything) and only then ``on_bundle(bundle)``
and the atomic ``current`` pointer (write, fsync, ``os.replace``, fsync dir). A refused candidate is recorded
with its reason and its manifest hash marked bad until the manifest changes; the current bundle keeps serving.

State directory::

    state_dir/current               name of the last good bundle directory
    state_dir/bundles/<ver>-<sha>/  verified bundles (the current one and ``keep_bundles - 1`` before it)
    state_dir/staging/<name>.<pid>/ downloads in progress (a dead pid's are removed at start)
    state_dir/smoke_ok/<sha>        smoke passes, shared by the workers of the host
    state_dir/high_water/<channel>.json  the newest manifest accepted for the channel (created_at, version)

Rollback protection (fault C04) lives in ``high_water.py``: a manifest older than the newest this edge
accepted for its channel, or stamped beyond the clock-skew allowance, is refused before anything is downloaded.
An operator rolls back on purpose by publishing the old model again with a fresh stamp (``edgerec publish
--restamp``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._impl.files import fsync_dir, link_or_copy_verified, replace_file, sha256_file, write_synced
from .._impl.threads import Clock, RepeatingTask, SystemClock
from ..bundle import Bundle, Manifest, load_bundle
from ..bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ..bundle.verify import check_signature, check_signing_key
from ..errors import (
    ConfigError,
    DownloadError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTransportError,
    ModelError,
    ModelFormatError,
    ModelIntegrityError,
    RollbackRefused,
    SmokeFailure,
)
from . import protocol
from .client import HubClient, ManifestResponse
from .config import SyncConfig, check_origin_url
from .high_water import HighWaterMark
from .smoke import check_bundle, reason_of, run_smoke_subprocess

__all__ = ["RollbackRefused", "Updater"]

logger = logging.getLogger(__name__)

_MAX_REFUSALS = 20
_SAFE_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Updater:
    """Keeps this edge on the channel's current bundle.

    Args:
        client: the hub client.
        config: the channel, signing key, poll interval, caps, deadlines and smoke-test settings.
        state_dir: where bundles, staging and the ``current`` pointer live (created ``0700``); default
            ``config.state_dir``.
        on_bundle: called with each new verified, smoke-tested :class:`Bundle` (the Recommender's swap).
        on_candidate: called with ``(bundle, percent)`` when the channel rolls a candidate out to ``percent`` %
            of users, and with ``(None, 0.0)`` when the rollout ends; ``None`` ignores rollouts.
        backoff: retry delays after transient failures; default from ``config.backoff_base_s``/``backoff_max_s``.
        clock, rng: time and jitter (inject in tests).
    """

    def __init__(
        self,
        client: HubClient,
        config: SyncConfig,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        on_bundle: Callable[[Bundle], object] | None = None,
        on_candidate: Callable[[Bundle | None, float], object] | None = None,
        backoff: protocol.Backoff | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.config = config
        root = config.state_dir if state_dir is None else os.fspath(state_dir)
        if not root:
            raise ConfigError("the updater needs a state_dir (in SyncConfig or as an argument)")
        self.state_dir = Path(root)
        self.channel = config.channel
        self._key = None if config.signing_key is None else check_signing_key(config.signing_key)
        self.on_bundle = on_bundle
        self.on_candidate = on_candidate
        self.candidate_version: str | None = None
        self.candidate_sha: str | None = None
        self.rollout_percent = 0.0
        self._candidate_bundle: Bundle | None = None
        self._candidate_dir = ""
        self._rng = rng or random.Random()
        self.backoff = backoff or protocol.Backoff(base_s=config.backoff_base_s, max_s=config.backoff_max_s,
                                                   rng=self._rng)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._busy_since: float | None = None  # monotonic start of the poll in progress
        self._stage_name = "idle"
        self._etag: str | None = None
        self._bad: dict[str, str] = {}
        self._seen: set[str] = set()
        self._rollback_logged: set[str] = set()
        self.high_water = HighWaterMark(self.state_dir, self.channel, max_clock_skew_s=config.max_clock_skew_s)
        self._episode: str | None = None
        self.current_sha: str | None = None
        self.current_version: str | None = None
        self.bundle_origin: str | None = None
        self.auth_failed = False
        self.last_update_error: dict[str, Any] | None = None
        self.refusals: list[dict[str, Any]] = []
        self.refusals_by_reason: dict[str, int] = {}  # every refusal counted (``refusals`` keeps the newest)
        self.counts = dict.fromkeys(("polls", "not_modified", "updates", "refused", "verify_failed", "poll_errors"), 0)
        for sub in ("bundles", "staging", "smoke_ok"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.task = RepeatingTask("edgerec-updater", self.poll_once, interval_s=config.poll_interval_s)

    # --- start-up -------------------------------------------------------------------------------------

    def load_last_good(self) -> Bundle | None:
        """Serve at once from disk (fault A02): re-verify the bundle named by ``current``.

        A corrupt one is moved aside and never served (fault C05). Also removes staging leftovers of dead
        processes (fault D11). Never raises for disk trouble.
        """
        self._clean_staging()
        pointer = self.state_dir / "current"
        try:
            name = pointer.read_text("utf-8").strip()
        except OSError:
            return None
        path = self.state_dir / "bundles" / name
        if not name or "/" in name or not path.is_dir():
            return None
        try:
            bundle = load_bundle(path, signing_key=self._key)
        except ModelError as exc:
            aside = path.with_name(f"{name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            logger.error("last good bundle %s failed verification (%s); moved aside, not served", name, reason_of(exc))
            return None
        self.current_sha = sha256_file(path / MANIFEST_NAME)
        self.current_version = bundle.model_version
        self._seen.add(bundle.model_version)
        self.bundle_origin = "disk"
        self.high_water.raise_to(bundle.manifest.created_at, bundle.model_version)  # state dirs of older SDKs
        logger.info("serving %s from disk", bundle.model_version)
        return bundle

    def _clean_staging(self) -> None:
        for entry in (self.state_dir / "staging").iterdir():
            pid = entry.name.rsplit(".", 1)[-1]
            if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
                shutil.rmtree(entry, ignore_errors=True)

    # --- the loop body ----------------------------------------------------------------------------------

    def poll_once(self) -> float:
        """One conditional GET and, when the manifest changed, one update attempt; return the next delay.

        Never waits for another poll in progress (the updater thread's, or one wedged in untrusted work):
        it returns at once and ``status()["update_in_progress"]`` says what that poll is doing.
        """
        if not self._lock.acquire(blocking=False):
            logger.debug("updater poll skipped: another is in progress (%s)", self._stage_name)
            return self.config.poll_interval_s
        try:
            self._busy_since = self._clock.monotonic()
            self._stage_name = "manifest"
            return self._poll_locked()
        finally:
            self._busy_since = None
            self._lock.release()

    def _poll_locked(self) -> float:
        self.counts["polls"] += 1
        try:
            resp = self.client.get_manifest(self.channel, etag=self._etag, max_bytes=self.config.max_manifest_bytes)
        except HubAuthError as exc:
            return self._long_backoff("auth", f"hub refused the edge token ({exc.status})", auth=True)
        except HubStatusError as exc:
            if exc.retryable:
                return self._retry("poll", exc, exc.retry_after_s)
            what = "channel not found" if exc.status in (404, 410) else f"hub answered {exc.status}"
            return self._long_backoff(f"http_{exc.status}", f"{what} for channel {self.channel!r}")
        except HubProtocolError as exc:  # a header or body that breaks protocol v1: say so in status()
            self._record(None, "hub_protocol", exc)
            return self._retry("poll", exc, None)
        except HubError as exc:
            return self._retry("poll", exc, None)
        except Exception as exc:  # why: nothing from the hub may escape the updater (poll_once included)
            return self._internal_error(exc)
        self.auth_failed = False
        if resp is None:
            self.counts["not_modified"] += 1
            return self._ok()
        try:
            self._apply(resp)
        except (HubError, OSError) as exc:
            reason = exc.reason if isinstance(exc, DownloadError) else reason_of(exc)
            self._record(getattr(exc, "model_version", None), reason, exc)
            return self._retry("download", exc, getattr(exc, "retry_after_s", None))
        except Exception as exc:  # why: as above; the current bundle keeps serving
            return self._internal_error(exc)
        return self._ok()

    def _internal_error(self, exc: Exception) -> float:
        logger.exception("updater poll failed unexpectedly; current bundle keeps serving")
        self._record(getattr(exc, "model_version", None), "internal_error", exc)
        return self._retry("poll", exc, None)

    def _ok(self) -> float:
        if self._episode is not None:
            logger.info("updater recovered")
        self._episode = None
        self.backoff.reset()
        return self.config.poll_interval_s * (1.0 + 0.1 * self._rng.random())

    def _retry(self, kind: str, exc: BaseException, retry_after_s: float | None) -> float:
        self.counts["poll_errors"] += 1
        label = f"{kind}:{type(exc).__name__}"
        if self._episode != label:
            logger.warning("updater %s failed (%s); retrying with backoff", kind, type(exc).__name__)
            self._episode = label
        return max(self.config.poll_interval_s, self.backoff.next_delay(retry_after_s))

    def _long_backoff(self, label: str, message: str, *, auth: bool = False) -> float:
        self.counts["poll_errors"] += 1
        self.auth_failed = auth
        if self._episode != label:
            logger.error("%s; current bundle keeps serving, retrying every ~%.0f s", message, self.config.auth_backoff_s)
            self._episode = label
        return self.backoff.jitter(self.config.auth_backoff_s)

    # --- one update -------------------------------------------------------------------------------------

    def _apply(self, resp: ManifestResponse) -> None:
        settled = self._apply_base(resp)
        if self.on_candidate is not None:
            settled = self._apply_candidate(resp) and settled
        if settled:
            self._etag = resp.etag  # refused or applied: not fetched again until the manifest changes

    def _verify(self, raw: bytes, signature: str | None, sha: str,
                expect_version: str | None = None, origin: str | None = None) -> tuple[Bundle, Path]:
        """Signature, schema, size cap, staged download, smoke test, load: a ready bundle or a ``ModelError``."""
        if self._key is not None:
            check_signature(raw, signature.encode() if signature else None, self._key, source="hub manifest")
        manifest = Manifest.from_bytes(raw, source="hub manifest")
        if expect_version is not None and manifest.model_version != expect_version:
            raise ModelFormatError(f"hub manifest: the rollout names {expect_version!r} but its manifest is "
                                   f"{manifest.model_version!r}", model_version=manifest.model_version)
        self.high_water.check(manifest)
        total = sum(e.size for e in manifest.files.values())
        if total > self.config.max_bundle_bytes:
            raise SmokeFailure(f"bundle declares {total} bytes, over max_bundle_bytes", reason="too_large",
                               model_version=manifest.model_version)
        try:
            self._stage_name = "download"
            final = self._stage(manifest, raw, signature, sha, origin)
            self._stage_name = "load"
            bundle = load_bundle(final, signing_key=self._key)
            if not self.config.smoke_in_subprocess:
                check_bundle(bundle)
        except ModelError as exc:
            exc.model_version = exc.model_version or manifest.model_version
            raise
        except DownloadError as exc:  # retried later; status() still names the version that failed
            exc.model_version = manifest.model_version  # type: ignore[attr-defined]
            raise
        return bundle, final

    def _apply_base(self, resp: ManifestResponse) -> bool:
        sha = hashlib.sha256(resp.raw).hexdigest()
        if sha == self.current_sha or sha in self._bad:
            return True
        try:
            bundle, final = self._verify(resp.raw, resp.signature, sha, origin=resp.origin)
        except ModelError as exc:
            self._refuse(sha, exc)
            return True
        old = self.current_version
        if self.on_bundle is not None:
            try:
                self._stage_name = "swap"
                self.on_bundle(bundle)
            except ModelError as exc:  # the in-process warm-up refused it (deadline, contract): not retried
                self._refuse(sha, exc)
                return True
            except Exception as exc:  # why: a failing swap must leave the current bundle serving
                self._record(bundle.model_version, "swap_failed", exc)
                logger.exception("swap to %s failed; keeping %s", bundle.model_version, old)
                return False
        self._write_pointer(final.name)
        self.high_water.raise_to(bundle.manifest.created_at, bundle.model_version)
        self.current_sha, self.current_version, self.bundle_origin = sha, bundle.model_version, "hub"
        self.counts["updates"] += 1
        self.last_update_error = None
        restamped = bundle.manifest.extra.get("restamped_from")
        if isinstance(restamped, dict) and old is not None:
            logger.warning("channel %r rolled back on purpose: %r -> %r, a restamp of %r (created_at %r)",
                           self.channel, old, bundle.model_version, restamped.get("model_version"),
                           restamped.get("created_at"))
        elif old is not None and bundle.model_version in self._seen:
            logger.warning("channel %s moved back from %s to %s", self.channel, old, bundle.model_version)
        self._seen.add(bundle.model_version)
        logger.info("bundle swapped %s -> %s", old, bundle.model_version)
        self._prune(keep={final.name, self._candidate_dir})
        return True

    def _apply_candidate(self, resp: ManifestResponse) -> bool:
        """Follow the channel's rollout: load its candidate version next to the base (sticky A/B by user)."""
        cand, pct = resp.candidate_version, resp.rollout_percent
        if cand is None or pct <= 0 or cand == self.current_version:
            if self.candidate_version is not None:
                self.candidate_version, self.candidate_sha, self.rollout_percent = None, None, 0.0
                self._candidate_bundle, self._candidate_dir = None, ""
                self._notify_candidate(None, 0.0)
            return True
        raw, origin = self.client.get_version_manifest(cand, max_bytes=self.config.max_manifest_bytes)
        sig = self.client.get_bytes(protocol.bundle_file_path(cand, SIGNATURE_NAME), max_bytes=1024, missing_ok=True)
        sha = hashlib.sha256(raw).hexdigest()
        if sha == self.candidate_sha:
            if pct != self.rollout_percent:
                self.rollout_percent = pct
                self._notify_candidate(self._candidate_bundle, pct)
            return True
        if sha in self._bad:
            return True
        try:
            bundle, final = self._verify(raw, sig.decode("ascii", "replace").strip() if sig else None, sha,
                                         expect_version=cand, origin=origin)
        except ModelError as exc:
            self._refuse(sha, exc)
            return True
        try:
            self._stage_name = "swap"
            self._notify_candidate(bundle, pct)
        except ModelError as exc:  # the in-process warm-up refused it: the candidate serves nobody
            self._refuse(sha, exc)
            return True
        self.candidate_sha, self.candidate_version, self.rollout_percent = sha, bundle.model_version, pct
        self._candidate_bundle, self._candidate_dir = bundle, final.name
        logger.info("rollout candidate %s on %.1f%% of users", bundle.model_version, pct)
        return True

    def _notify_candidate(self, bundle: Bundle | None, percent: float) -> None:
        """Tell the Recommender; a ``ModelError`` (its warm-up refused the bundle) goes to the caller."""
        if self.on_candidate is None:
            return
        try:
            self.on_candidate(bundle, percent)
        except ModelError:
            raise
        except Exception:  # why: a user callback must not break the updater (fault E14)
            logger.exception("on_candidate callback failed")

    def _stage(self, manifest: Manifest, raw: bytes, signature: str | None, sha: str,
               origin: str | None = None) -> Path:
        name = f"{manifest.model_version}-{sha[:12]}"
        final = self.state_dir / "bundles" / name
        if (final / MANIFEST_NAME).is_file():
            return final  # verified earlier (another worker, or a rollback): load_bundle re-hashes it
        staging = self.state_dir / "staging" / f"{name}.{os.getpid()}"
        self._drop_own_staging(keep=staging.name)  # an earlier manifest's leftovers (the hub moved on)
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        local = self._local_files()
        try:
            for fname, entry in manifest.files.items():
                if _reuse(local.get((entry.sha256, entry.size)), staging / fname, entry.sha256):
                    continue  # same bytes already verified on this host (a restamp, a rollback)
                got = self.client.download_file(
                    self._file_url(manifest.model_version, fname, origin),
                    staging / fname,
                    expected_size=entry.size,
                    deadline_s=self.config.download_deadline_s,
                    min_bytes_per_s=self.config.min_download_bytes_per_s,
                )
                if got != entry.sha256:
                    (staging / fname).unlink(missing_ok=True)
                    raise ModelIntegrityError(f"{fname}: sha256 mismatch", model_version=manifest.model_version)
            write_synced(staging / MANIFEST_NAME, raw)
            if signature:
                write_synced(staging / SIGNATURE_NAME, signature.encode() + b"\n")
            if self.config.smoke_in_subprocess and not (self.state_dir / "smoke_ok" / sha).exists():
                self._stage_name = "smoke"
                run_smoke_subprocess(staging, signing_key=self._key, timeout_s=self.config.smoke_timeout_s,
                                     max_memory_bytes=self.config.smoke_max_memory_mb * 1024**2 or None)
                (self.state_dir / "smoke_ok" / sha).touch()
            try:
                os.replace(staging, final)
            except OSError:
                if not (final / MANIFEST_NAME).is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # another worker of the host got there first
            fsync_dir(final.parent)
        except HubTransportError:
            raise  # a reset mid-file: the partial file stays for the Range resume of the next poll (fault A05)
        except BaseException:
            # every other failure (refusal, 4xx/5xx, deadline, disk full: fault D12) leaves nothing behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def _drop_own_staging(self, *, keep: str = "") -> None:
        suffix = f".{os.getpid()}"
        with contextlib.suppress(OSError):
            for entry in (self.state_dir / "staging").iterdir():
                if entry.name.endswith(suffix) and entry.name != keep:
                    shutil.rmtree(entry, ignore_errors=True)

    def _file_url(self, version: str, name: str, origin: str | None) -> str:
        """The hub's path of a file, or its URL on the external origin the hub named (checked, never trusted)."""
        if origin is None:
            return protocol.bundle_file_path(version, name)
        try:
            return f"{check_origin_url(origin, allow_insecure_http=self.config.allow_insecure_http)}/{name}"
        except ConfigError as exc:
            raise DownloadError(f"origin refused: {exc}", reason="origin_refused") from exc

    def _local_files(self) -> dict[tuple[str, int], Path]:
        """(sha256, size) -> a file of a verified bundle on disk, from those bundles' manifests."""
        out: dict[tuple[str, int], Path] = {}
        with contextlib.suppress(OSError):
            for d in (self.state_dir / "bundles").iterdir():
                if ".corrupt-" in d.name or not d.is_dir():
                    continue
                try:
                    m = Manifest.from_bytes((d / MANIFEST_NAME).read_bytes(), source=d.name)
                except (OSError, ModelError):
                    continue
                for fname, e in m.files.items():
                    out.setdefault((e.sha256, e.size), d / fname)
        return out

    def _refuse(self, sha: str, exc: ModelError) -> None:
        version = exc.model_version
        self._bad[sha] = reason_of(exc)
        self.counts["refused"] += 1
        self.refusals_by_reason[reason_of(exc)] = self.refusals_by_reason.get(reason_of(exc), 0) + 1
        if isinstance(exc, ModelIntegrityError):
            self.counts["verify_failed"] += 1
        self._record(version, reason_of(exc), exc)
        if isinstance(exc, RollbackRefused):
            if version not in self._rollback_logged:  # once per version, however often it is replayed
                self._rollback_logged.add(str(version))
                logger.error("%s; refused as a rollback or replay, current %r keeps serving (to roll back on "
                             "purpose, publish it again with `edgerec publish --restamp`)", exc,
                             self.current_version)
            return
        logger.error("candidate bundle %r refused (%s); current %s keeps serving",
                     version, reason_of(exc), self.current_version)

    def _record(self, version: str | None, reason: str, exc: BaseException) -> None:
        entry = {"version": version, "reason": reason, "message": str(exc)[:200], "at": self._clock.time()}
        self.last_update_error = entry
        self.refusals = [*self.refusals[-(_MAX_REFUSALS - 1):], entry]

    # --- disk -------------------------------------------------------------------------------------------

    def _write_pointer(self, name: str) -> None:
        replace_file(self.state_dir / "current", name.encode() + b"\n")

    def _prune(self, *, keep: set[str]) -> None:
        root = self.state_dir / "bundles"
        dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        kept = 1
        for p in dirs:
            if p.name in keep:
                continue
            if ".corrupt-" not in p.name and kept < self.config.keep_bundles:
                kept += 1
                continue
            shutil.rmtree(p, ignore_errors=True)

    # --- thread and fork --------------------------------------------------------------------------------

    def start(self) -> bool:
        """Start the ``edgerec-updater`` thread (idempotent)."""
        return self.task.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        return self.task.stop(timeout_s)

    def postfork(self) -> None:
        """In a forked child: fresh lock and thread; never adopt the parent's staging directory."""
        self._lock = threading.Lock()
        self._busy_since, self._stage_name = None, "idle"
        self.task.postfork()

    def status(self) -> dict[str, Any]:
        busy = self._busy_since
        return {
            "model_version": self.current_version,
            "candidate_version": self.candidate_version,
            "rollout_percent": self.rollout_percent,
            "bundle_origin": self.bundle_origin,
            "auth_failed": self.auth_failed,
            "last_update_error": self.last_update_error,
            "refusals": list(self.refusals),
            "refusals_by_reason": dict(self.refusals_by_reason),
            "updater_running": self.task.started,
            "update_in_progress": None if busy is None else {
                "stage": self._stage_name, "for_s": round(self._clock.monotonic() - busy, 3)},
            **{f"updater_{k}": v for k, v in self.counts.items()},
        }


def _reuse(src: Path | None, dst: Path, sha256: str) -> bool:
    """Hard-link (or copy) ``src`` to ``dst`` and check its sha256; False (nothing left) when that fails."""
    if src is None:
        return False
    try:
        return link_or_copy_verified(src, dst, sha256=sha256)
    except OSError:
        dst.unlink(missing_ok=True)
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
