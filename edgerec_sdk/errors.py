"""The one exception tree of edgerec_sdk.

::

    EdgerecError
    ├── ConfigError (also ValueError)            bad settings; raised at construction, never later
    ├── EventError (also ValueError)             malformed or oversized feedback event
    ├── MissingExtraError (also ImportError)     optional dependency absent; message names the pip extra
    ├── CatalogueError (also ValueError)         a catalogue delta refused (.reason); nothing of it applied
    ├── ModelError                               a bundle cannot be used
    │   ├── ModelFormatError                     manifest schema, unknown format_version, ONNX external data
    │   │   └── ModelIntegrityError              size, sha256 or signature mismatch
    │   │       ├── RollbackRefused              signed, but older than the newest the edge accepted
    │   │       └── FutureManifestRefused        signed, but created_at beyond the clock-skew allowance
    │   ├── ModelLoadError                       onnxruntime refused the model, or the smoke test failed
    │   │   └── SmokeFailure                     the candidate's smoke test failed; .reason
    │   └── NonFiniteScoresError                 the model gave NaN/inf for a user (raised only in strict mode)
    ├── RuleError (also ValueError)              a merchandising rule set is malformed or contradictory
    ├── NotReadyError                            no bundle yet (raised only in strict mode)
    ├── ClosedError                              used after close() (raised only in strict mode)
    ├── ProfileUnavailableError                  a shared profile store (SQLite, Redis) failed or timed out
    ├── HubError                                 the edge talking to the hub
    │   ├── HubTransportError                    connect, read, write, timeout, TLS
    │   ├── HubStatusError                       .status, .retry_after_s, .retryable
    │   │   └── HubAuthError                     401, 403
    │   └── HubProtocolError                     undecodable or incompatible payload
    │       └── DownloadError                    a bundle file download broke a rule; .reason
    ├── PublishError                             the hub refuses an uploaded bundle; .status
    └── StorageBusyError                         the hub's database is busy or unreachable (answered 503)

Third-party exceptions are translated into this tree with ``raise ... from exc`` where the library is called,
and nowhere else:

* onnxruntime: ``_impl/model.py``, ``index/onnx_topk.py``, ``train/export.py`` -> ``ModelLoadError``
* the smoke child (``subprocess``): ``sync/smoke.py`` -> ``SmokeFailure``
* httpx: ``sync/client.py`` -> ``HubTransportError``, ``HubProtocolError``, ``HubError``
* zlib, orjson on the wire: ``sync/protocol.py``, ``sync/client.py`` -> ``HubProtocolError``
* sqlite3, redis in profile stores: ``profile/sqlite.py``, ``profile/redis.py`` -> ``ProfileUnavailableError``
* sqlite3, psycopg in the hub: ``hub/storage/sqlite.py``, ``hub/storage/postgres.py`` -> ``StorageBusyError``
* tarfile: ``hub/publish.py`` -> ``PublishError``
* OSError, orjson reading a catalogue delta: ``bundle/delta.py`` -> ``CatalogueError``
* OSError, numpy, orjson reading a bundle: ``bundle/verify.py``, ``bundle/loader.py``, ``bundle/catalog.py``
  -> ``ModelFormatError``

Two places deliberately translate nothing: ``sync/outbox.py`` absorbs ``sqlite3`` errors (events spill to
memory, nothing is raised), and the offline training commands (``train/``) let ``torch`` and
``tokenizers`` errors through unchanged, since there they are environment or programming errors whose own
traceback says most. Programmer errors (a bad argument) raise the built-in ``TypeError``/``ValueError``.
This module imports none of those libraries.
"""

from __future__ import annotations

__all__ = [
    "CatalogueError",
    "ClosedError",
    "ConfigError",
    "DownloadError",
    "EdgerecError",
    "EventError",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubStatusError",
    "HubTransportError",
    "MissingExtraError",
    "ModelError",
    "ModelFormatError",
    "ModelIntegrityError",
    "ModelLoadError",
    "NonFiniteScoresError",
    "NotReadyError",
    "ProfileUnavailableError",
    "PublishError",
    "RollbackRefused",
    "RuleError",
    "SmokeFailure",
    "StorageBusyError",
]


class EdgerecError(Exception):
    """Base class of every error raised by edgerec_sdk."""


class ConfigError(EdgerecError, ValueError):
    """Invalid settings, raised at construction time."""


class EventError(EdgerecError, ValueError):
    """A feedback event is malformed or oversized.

    Attributes:
        field: the offending field, when one can be named.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CatalogueError(EdgerecError, ValueError):
    """A catalogue delta (``edgerec items upsert``/``delete``) was refused; nothing of it was applied.

    Attributes:
        reason: ``bad_delta`` (malformed rows or columns), ``too_large`` (over the cap) or ``column_type``
            (a column's type disagrees with the serving catalogue).
    """

    def __init__(self, message: str, *, reason: str = "bad_delta") -> None:
        super().__init__(message)
        self.reason = reason


class MissingExtraError(EdgerecError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ModelError(EdgerecError):
    """A bundle cannot be used.

    Attributes:
        path: the file (or bundle directory) concerned, when known.
        model_version: the bundle's model version, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, model_version: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.model_version = model_version


class ModelFormatError(ModelError):
    """The manifest or a file does not follow the bundle format."""


class ModelIntegrityError(ModelFormatError):
    """A file's size, sha256 or the manifest signature does not match."""


class ModelLoadError(ModelError):
    """onnxruntime refused the model, or the smoke test failed."""


class SmokeFailure(ModelLoadError):
    """The candidate failed its smoke test; ``reason`` is machine-readable."""

    def __init__(self, message: str, *, reason: str, model_version: str | None = None) -> None:
        super().__init__(message, model_version=model_version)
        self.reason = reason


class RollbackRefused(ModelIntegrityError):
    """A validly signed manifest older than the newest this edge accepted for its channel (fault C04)."""

    reason = "rollback_refused"

    def __init__(self, message: str, *, model_version: str, newest_version: str) -> None:
        super().__init__(message, model_version=model_version)
        self.newest_version = newest_version


class FutureManifestRefused(ModelIntegrityError):
    """A manifest whose ``created_at`` lies further ahead of this host's clock than the skew allowance.

    Accepted, it would become the channel's high-water mark and lock out every later bundle (fault C04).
    """

    reason = "from_the_future"


class NonFiniteScoresError(ModelError):
    """The model produced non-finite interest vectors for a user (raised only with ``strict=True``)."""
class RuleError(EdgerecError, ValueError):
    """A merchandising rule set is malformed or contradicts itself; the message names the rule."""


class NotReadyError(EdgerecError):
    """No bundle is loaded yet (raised only with ``strict=True``)."""


class ClosedError(EdgerecError):
    """The recommender was used after ``close()`` (raised only with ``strict=True``)."""


class ProfileUnavailableError(EdgerecError):
    """A shared profile store (SQLite file, Redis) could not be read or written in time.

    Stores translate their driver's errors (``sqlite3.Error``, ``redis.RedisError``) into this type, so the
    recommender degrades with reason ``profile_unavailable`` instead of failing the request.
    """


class HubError(EdgerecError):
    """Talking to the hub failed."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class HubTransportError(HubError):
    """Connect, read, write, timeout or TLS failure."""


class HubStatusError(HubError):
    """The hub answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str | None = None,
        retry_after_s: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.retry_after_s = retry_after_s
        self.retryable = retryable


class HubAuthError(HubStatusError):
    """401 or 403: the token is missing, revoked or lacks the permission."""


class HubProtocolError(HubError):
    """The hub's answer could not be decoded or is incompatible."""


class DownloadError(HubProtocolError):
    """A bundle file download broke a rule; ``reason`` is one of ``size_mismatch``, ``too_large``,
    ``content_encoding``, ``deadline``, ``too_slow``, ``bad_range``."""

    def __init__(self, message: str, *, reason: str, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.reason = reason


class PublishError(EdgerecError):
    """The hub refuses an uploaded bundle; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class StorageBusyError(EdgerecError):
    """The hub's database is busy or unreachable for now; the hub answers ``503`` with ``Retry-After``.

    The CLI prints it and exits 2 (e.g. ``edgerec hub serve --db`` with the database down).
    """
