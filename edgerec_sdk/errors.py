"""The one exception tree of edgerec_sdk.

::

    EdgerecError
    ├── ConfigError (also ValueError)            bad settings; raised at construction, never later
    ├── EventError (also ValueError)             malformed or oversized feedback event
    ├── MissingExtraError (also ImportError)     optional dependency absent; message names the pip extra
    ├── ModelError                               a bundle cannot be used
    │   ├── ModelFormatError                     manifest schema, unknown format_version, ONNX external data
    │   │   └── ModelIntegrityError              size, sha256 or signature mismatch
    │   └── ModelLoadError                       onnxruntime refused the model, or the smoke test failed
    ├── NotReadyError                            no bundle yet (raised only in strict mode)
    ├── ClosedError                              used after close() (raised only in strict mode)
    └── HubError
        ├── HubTransportError                    connect, read, write, timeout, TLS
        ├── HubStatusError                       .status, .retry_after_s, .retryable
        │   └── HubAuthError                     401, 403
        └── HubProtocolError                     undecodable or incompatible payload

Third-party exceptions are translated into this tree at exactly two boundaries: ``_impl/model.py``
(onnxruntime) and ``sync/client.py`` (httpx). This module imports neither.
"""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "ConfigError",
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
    "NotReadyError",
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


class NotReadyError(EdgerecError):
    """No bundle is loaded yet (raised only with ``strict=True``)."""


class ClosedError(EdgerecError):
    """The recommender was used after ``close()`` (raised only with ``strict=True``)."""


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
