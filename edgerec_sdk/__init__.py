"""edgerec_sdk: real-time personalised recommendations inside your storefront's process.

Example:
    >>> from edgerec_sdk import Recommender
    >>> rec = Recommender.demo()
    >>> result = rec.recommend("user-42", k=5)
    >>> rec.close()
"""

from __future__ import annotations

import logging

from .config import FeedbackConfig, IndexConfig, ProfileConfig, RecommenderConfig
from .errors import (
    ClosedError,
    ConfigError,
    EdgerecError,
    EventError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTransportError,
    MissingExtraError,
    ModelError,
    ModelFormatError,
    ModelIntegrityError,
    ModelLoadError,
    NotReadyError,
    RuleError,
)
from .recommender import Recommender
from .types import FeedbackEvent, Recommendation, Recommendations, Status

__version__ = "0.1.0"

__all__ = [
    "ClosedError",
    "ConfigError",
    "EdgerecError",
    "EventError",
    "FeedbackConfig",
    "FeedbackEvent",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubStatusError",
    "HubTransportError",
    "IndexConfig",
    "MissingExtraError",
    "ModelError",
    "ModelFormatError",
    "ModelIntegrityError",
    "ModelLoadError",
    "NotReadyError",
    "ProfileConfig",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "RecommenderConfig",
    "RuleError",
    "Status",
    "__version__",
]

# Tracebacks and reprs say edgerec_sdk.Recommender, not edgerec_sdk.recommender.Recommender.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "edgerec_sdk"

logging.getLogger(__name__).addHandler(logging.NullHandler())
