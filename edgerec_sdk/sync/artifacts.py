"""Following a channel's signed artifacts (catalogue deltas, rule sets) on an edge.

One :class:`ArtifactFollower` per ``(channel, kind)``: each poll lists the artifacts after the last one handled,
downloads each under a size cap, checks its sha256 against the listing and its signature exactly as a
manifest's (HMAC-SHA256 under the channel's signing key; unsigned only when no key is configured), then hands
it to ``apply``. ``apply`` either takes the whole artifact or raises; a refused artifact (bad signature,
malformed, ``apply`` raised) is recorded with its reason and skipped for good, and whatever was applied before
keeps serving. Accepted artifacts are kept in ``state_dir/artifacts/<channel>/<kind>/`` and replayed, verified
again, at start-up, so a restarted edge serves the same catalogue before it reaches the hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._impl.files import replace_file
from ..bundle.verify import check_signature
from ..errors import EdgerecError, HubError, ModelIntegrityError

__all__ = ["Artifact", "ArtifactFollower"]

logger = logging.getLogger(__name__)

_MAX_REFUSALS = 20


@dataclass(frozen=True, slots=True)
class Artifact:
    """One verified artifact: its exact bytes and where it came from."""

    channel: str
    kind: str
    seq: int
    body: bytes
    signature: str | None


class ArtifactFollower:
    """Keeps an edge up to date with one ``(channel, kind)`` artifact stream.

    Args:
        client: the hub client (``list_artifacts``/``get_artifact``).
        channel: the channel followed.
        kind: the artifact kind (``"catalogue"``, ``"rules"``).
        signing_key: HMAC key artifacts must be signed with; ``None`` accepts unsigned ones.
        apply: takes one verified artifact whole, or raises (``EdgerecError`` with a ``reason``) to refuse it.
        state_dir: where accepted artifacts are kept for restarts; ``None`` keeps them in memory only.
        max_bytes: cap on one artifact's size.
    """

    def __init__(
        self,
        client: Any,
        *,
        channel: str,
        kind: str,
        signing_key: str | bytes | None,
        apply: Callable[[Artifact], object],
        state_dir: str | os.PathLike[str] | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.channel = channel
        self.kind = kind
        self._key = signing_key
        self._apply = apply
        self._dir = None if state_dir is None else Path(state_dir) / "artifacts" / channel / kind
        self.max_bytes = max_bytes
        self.applied_seq = 0
        self.refusals: list[dict[str, Any]] = []
        self.counts = {"applied": 0, "refused": 0, "poll_errors": 0}
        self._lock = threading.Lock()
        self._episode: str | None = None

    def load_saved(self) -> int:
        """Replay the artifacts kept on disk (verified again); return how many were applied."""
        if self._dir is None or not self._dir.is_dir():
            return 0
        n = 0
        with self._lock:
            for path in sorted(self._dir.glob("*.body")):
                seq = int(path.stem) if path.stem.isdigit() else 0
                if seq <= self.applied_seq:
                    continue
                try:
                    body = path.read_bytes()
                    sig_path = path.with_suffix(".sig")
                    sig = sig_path.read_text("ascii").strip() if sig_path.exists() else None
                except OSError:
                    continue
                if self._take(Artifact(self.channel, self.kind, seq, body, sig), None, persist=False):
                    n += 1
                self.applied_seq = seq
        return n

    def poll_once(self) -> None:
        """List what is new, then verify and apply it in order; hub trouble waits for the next poll."""
        with self._lock:
            try:
                listed = self.client.list_artifacts(self.channel, self.kind, after=self.applied_seq)
                for meta in sorted(listed, key=lambda m: int(m.get("seq", 0))):
                    seq = int(meta.get("seq", 0))
                    if seq <= self.applied_seq:
                        continue
                    size = meta.get("size")
                    if isinstance(size, int) and size > self.max_bytes:
                        self._refuse(seq, "too_large", f"{self.kind} artifact {seq}: {size} bytes over the cap")
                    else:
                        body = self.client.get_artifact(self.channel, self.kind, seq, max_bytes=self.max_bytes)
                        sig = meta.get("signature")
                        art = Artifact(self.channel, self.kind, seq, body, sig if isinstance(sig, str) else None)
                        self._take(art, meta.get("sha256"), persist=True)
                    self.applied_seq = seq
            except HubError as exc:
                self.counts["poll_errors"] += 1
                label = type(exc).__name__
                if self._episode != label:
                    logger.warning("%s artifacts of channel %r: %s; retrying next poll", self.kind, self.channel, exc)
                    self._episode = label
                return
            self._episode = None

    def _take(self, art: Artifact, sha256: object, *, persist: bool) -> bool:
        where = f"{self.kind} artifact {art.seq} of channel {self.channel!r}"
        try:
            if sha256 is not None and hashlib.sha256(art.body).hexdigest() != sha256:
                raise ModelIntegrityError(f"{where}: sha256 does not match the listing")
            if self._key is not None:
                if not art.signature:
                    raise ModelIntegrityError(f"{where}: unsigned, but a signing key is configured")
                check_signature(art.body, art.signature.encode("ascii", "replace"), self._key, source=where)
            self._apply(art)
        except EdgerecError as exc:
            self._refuse(art.seq, _reason(exc), str(exc))
            return False
        except Exception as exc:  # why: a bug in apply must not stop the stream; the old state keeps serving
            logger.exception("%s: apply failed", where)
            self._refuse(art.seq, "apply_failed", f"{type(exc).__name__}: {exc}")
            return False
        self.counts["applied"] += 1
        if persist:
            self._persist(art)
        return True

    def _refuse(self, seq: int, reason: str, message: str) -> None:
        self.counts["refused"] += 1
        entry = {"kind": self.kind, "seq": seq, "reason": reason, "message": message[:200]}
        self.refusals = [*self.refusals[-(_MAX_REFUSALS - 1):], entry]
        logger.error("%s artifact %d refused (%s): %s; what was applied before keeps serving",
                     self.kind, seq, reason, message[:200])

    def _persist(self, art: Artifact) -> None:
        if self._dir is None:
            return
        try:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            base = self._dir / f"{art.seq:012d}"
            for suffix, data in ((".body", art.body), (".sig", (art.signature or "").encode())):
                if suffix == ".sig" and not art.signature:
                    continue
                replace_file(base.with_suffix(suffix), data)
        except OSError as exc:
            logger.warning("cannot keep %s artifact %d on disk (%s); held in memory only", self.kind, art.seq,
                           type(exc).__name__)

    def postfork(self) -> None:
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        return {"applied_seq": self.applied_seq, "refusals": list(self.refusals), **self.counts}


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    if isinstance(exc, ModelIntegrityError):
        msg = str(exc)
        return "unsigned" if "unsigned" in msg else "signature_invalid" if "signature" in msg else "sha256_mismatch"
    return "refused"
