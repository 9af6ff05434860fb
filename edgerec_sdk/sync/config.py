"""Settings of the hub connection (:class:`SyncConfig`) and the feedback outbox (:class:`OutboxConfig`).

Plain values only; live collaborators (transport, clock, callbacks) go to :class:`~edgerec_sdk.sync.EdgeSync`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .._impl.configs import from_mapping
from .._impl.log import redact_url
from ..bundle.verify import check_signing_key
from ..errors import ConfigError

__all__ = ["OutboxConfig", "SyncConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxConfig:
    """The durable local feedback outbox (SQLite, WAL mode)."""

    path: str = ""
    """SQLite file; empty means ``<state_dir>/outbox.sqlite3``. ``":memory:"`` keeps it in memory only."""
    max_outbox_bytes: int = 100 * 1024 * 1024
    """Cap on stored event bytes; new events over it are dropped and counted, stored rows never evicted."""
    max_memory_events: int = 10_000
    """Events kept in memory while the SQLite file is unwritable."""
    batch_size: int = 500
    """Events per upload batch."""
    busy_timeout_s: float = 0.05
    """Seconds an insert waits for another worker's lock before spilling to memory."""
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    """SQLite ``synchronous``: NORMAL survives a process crash, FULL a power loss as well."""
    append_log: bool = True
    """``feedback()`` appends each event to a per-process write-ahead log next to the SQLite file (one write,
    ``fsync``-ed too under FULL) and the uploader stores the log in SQLite in groups: as durable, without a
    commit on the request path. False: one SQLite transaction inside every ``feedback()`` call."""
    lease_s: float = 60.0
    """How long a leased batch stays invisible to other workers of the host."""
    max_dead_letter: int = 10_000
    """Rejected events kept for inspection; older ones are deleted (still counted)."""

    def __post_init__(self) -> None:
        for name in ("max_outbox_bytes", "max_memory_events", "batch_size", "max_dead_letter"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.busy_timeout_s, bool) or not isinstance(self.busy_timeout_s, (int, float)) \
                or not 0 <= self.busy_timeout_s < math.inf:
            raise ConfigError(f"busy_timeout_s must be a number of seconds >= 0, not {self.busy_timeout_s!r}")
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ConfigError("synchronous must be 'NORMAL' or 'FULL'")
        _positive_float("lease_s", self.lease_s)


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncConfig:
    """How an edge talks to its hub: model updates in, feedback out."""

    hub_url: str
    """Base URL of the hub, e.g. ``https://hub.example.com``; ``http://`` only for loopback or when allowed."""
    hub_urls: tuple[str, ...] = ()
    """More replicas of the same hub (same tokens), tried in turn when the one in use is down: a dead replica
    costs one retry. Not needed behind a load balancer that health-checks its replicas (``/healthz``)."""
    token: str = field(default="", repr=False)
    """Edge token sent as ``Authorization: Bearer``."""
    user_id_key: str = field(default="", repr=False)
    """Key of the HMAC that pseudonymises user ids; required to upload feedback."""
    signing_key: str | bytes | None = field(default=None, repr=False)
    """HMAC key bundles are signed with (``edgerec publish --signing-key``); a ``str`` is taken as UTF-8."""
    allow_unsigned_bundles: bool = False
    """Accept bundles without a signature (development only)."""
    allow_insecure_http: bool = False
    """Allow ``http://`` to a non-loopback host."""
    ca_bundle: str | None = None
    """Path of a CA bundle for the hub's TLS certificate; system roots when ``None``."""
    channel: str = "stable"
    """The channel whose bundles this edge serves."""
    edge_id: str = ""
    """Identifies this edge in event batches; empty means host name and pid."""
    state_dir: str = ""
    """Directory of the outbox, the last good bundle and staging; required by :class:`EdgeSync`."""
    poll_interval_s: float = 30.0
    """Seconds between manifest polls (under 30 s is allowed, with a warning)."""
    upload_interval_s: float = 1.0
    """Seconds between outbox checks when nothing is pending."""
    connect_timeout_s: float = 5.0
    """TCP/TLS connect timeout of every request."""
    read_timeout_s: float = 10.0
    """Inactivity timeout of every read."""
    backoff_base_s: float = 1.0
    """First retry delay after a failure; doubles per failure."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay."""
    auth_backoff_s: float = 300.0
    """Retry delay after 401/403 (and 404/410 on the manifest); never stops for good."""
    max_retry_after_s: float = 300.0
    """Largest ``Retry-After`` honoured; larger values are ignored."""
    max_manifest_bytes: int = 1024 * 1024
    """Cap on a manifest response, checked while streaming."""
    max_bundle_bytes: int = 2 * 1024**3
    """Cap on the total declared size of a bundle."""
    download_deadline_s: float = 600.0
    """Deadline of one file download."""
    min_download_bytes_per_s: float = 1024.0
    """Slower downloads are aborted once 30 s have passed (slow drip)."""
    smoke_timeout_s: float = 60.0
    """Deadline of the candidate smoke test (run in a child process)."""
    smoke_in_subprocess: bool = True
    """Run the first load and smoke test of a candidate in a child process."""
    smoke_max_memory_mb: int = 1024
    """Memory budget of the smoke child (its data segment, ``RLIMIT_DATA``: heap and private memory, not the
    memory-mapped bundle files; about 140 MiB of it is the interpreter and onnxruntime). A model that needs
    more is refused (``smoke_memory``) before it can grow the serving process. 0 turns the limit off."""
    keep_bundles: int = 2
    """Verified bundles kept in ``state_dir`` (the current one and its predecessors)."""
    max_clock_skew_s: float = 86400.0
    """A manifest whose signed ``created_at`` is further ahead of this host's clock than this is refused
    (``from_the_future``): accepted, it would outrank every later bundle of the channel."""
    max_artifact_bytes: int = 64 * 1024 * 1024
    """Cap on one channel artifact (a catalogue delta, a rule set); larger ones are refused unread."""
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    """The feedback outbox."""

    def __post_init__(self) -> None:
        _check_url(self.hub_url, self.allow_insecure_http)
        if isinstance(self.hub_urls, str) or not isinstance(self.hub_urls, (tuple, list)):
            raise ConfigError("hub_urls must be a list of URLs")
        object.__setattr__(self, "hub_urls", tuple(self.hub_urls))  # a list from settings or JSON
        for url in self.hub_urls:
            _check_url(url, self.allow_insecure_http)
        if not isinstance(self.token, str):
            raise ConfigError("token must be a string")
        if not self.channel or not isinstance(self.channel, str):
            raise ConfigError("channel must be a non-empty string")
        if self.signing_key is None and not self.allow_unsigned_bundles:
            raise ConfigError("pulling bundles from a hub needs signing_key= (or allow_unsigned_bundles=True)")
        if self.signing_key is not None:
            check_signing_key(self.signing_key)
        for name in (
            "poll_interval_s",
            "upload_interval_s",
            "connect_timeout_s",
            "read_timeout_s",
            "backoff_base_s",
            "backoff_max_s",
            "auth_backoff_s",
            "max_retry_after_s",
            "download_deadline_s",
            "min_download_bytes_per_s",
            "smoke_timeout_s",
            "max_clock_skew_s",
        ):
            _positive_float(name, getattr(self, name))
        for name in ("max_manifest_bytes", "max_bundle_bytes", "keep_bundles", "max_artifact_bytes"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.smoke_max_memory_mb, bool) or not isinstance(self.smoke_max_memory_mb, int) \
                or self.smoke_max_memory_mb < 0:
            raise ConfigError(f"smoke_max_memory_mb must be an int >= 0 (0: no limit), not {self.smoke_max_memory_mb!r}")
        if self.poll_interval_s < 30.0:
            logger.warning("poll_interval_s=%s is under 30 s; fine for tests, heavy for a hub", self.poll_interval_s)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SyncConfig:
        """Build from a plain mapping (a nested ``outbox`` mapping becomes :class:`OutboxConfig`); unknown keys are
        an error."""
        return from_mapping(cls, data)


def connect_sync_config(
    hub_url: str | Sequence[str], *, token: str, user_id_key: str, state_dir: str | os.PathLike[str],
    channel: str = "stable", signing_key: str | bytes | None = None, allow_unsigned_bundles: bool = False,
    poll_interval_s: float = 30.0,
) -> SyncConfig:
    """The :class:`SyncConfig` that ``Recommender.connect`` builds from its arguments (also used to check an
    ``EDGEREC["HUB"]`` mapping at startup, without connecting)."""
    urls = [hub_url] if isinstance(hub_url, str) else list(hub_url)
    if not urls:
        raise ConfigError("hub_url must be a URL or a non-empty list of replica URLs")
    return SyncConfig(
        hub_url=urls[0], hub_urls=tuple(urls[1:]), token=token, user_id_key=user_id_key, channel=channel,
        state_dir=os.fspath(state_dir), signing_key=signing_key, allow_unsigned_bundles=allow_unsigned_bundles,
        poll_interval_s=poll_interval_s,
    )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(url: object, allow_insecure: bool) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError("hub_url must be a non-empty string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("hub_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise ConfigError("hub_url must not hold credentials; pass token= instead")
    if parts.scheme == "http" and not allow_insecure and not is_loopback_host(parts.hostname):
        raise ConfigError("hub_url uses http:// to a non-loopback host; use https:// or allow_insecure_http=True")


def check_origin_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """``url`` if edges may fetch from it (``https://``, or ``http://`` to loopback or when allowed); else raise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ConfigError(f"origin URL {redact_url(url)!r} must be http(s) with a host and no credentials")
    if parts.query or parts.fragment or len(url) > 1024:
        raise ConfigError("origin URL must have no query or fragment and be at most 1024 characters")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ConfigError(f"origin URL {redact_url(url)!r} uses http:// to a non-loopback host; use https://")
    return url.rstrip("/")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


def _positive_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}")
