"""Talking to the hub: model updates in, durable feedback out (docs/design.md).

:class:`EdgeSync` wires the parts for one process; :class:`NullSync` stands in when there is no hub; both
implement :class:`Sync`, the protocol the Recommender is typed against. The parts
(:class:`HubClient`, :class:`Outbox`, :class:`Uploader`, :class:`Updater`) are usable on their own, and
:mod:`edgerec_sdk.sync.protocol` holds the wire format shared with the hub.
"""

from __future__ import annotations

from .artifacts import Artifact, ArtifactFollower
from .base import Sync
from .client import HubClient, ManifestResponse
from .config import OutboxConfig, SyncConfig
from .edge import EdgeSync, NullSync
from .outbox import Outbox
from .pseudonym import Pseudonymizer, in_rollout, pseudonymize
from .updater import Updater
from .uploader import Uploader

__all__ = [
    "Artifact",
    "ArtifactFollower",
    "EdgeSync",
    "HubClient",
    "ManifestResponse",
    "NullSync",
    "Outbox",
    "OutboxConfig",
    "Pseudonymizer",
    "Sync",
    "SyncConfig",
    "Updater",
    "Uploader",
    "in_rollout",
    "pseudonymize",
]
