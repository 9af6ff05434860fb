"""The sync tests use the public test double; kept as a module so existing imports stay short."""

from __future__ import annotations

from edgerec_sdk.testing import FakeClock

__all__ = ["FakeClock"]
