"""Experiments: the report of a channel's rollout (base version against candidate) and the abort guard.

The numbers come from :mod:`edgerec_sdk.hub.stats`; the counts from the hub's events (impression rows and
the clicks and purchases that carry their ``rec_id``). See docs/hub.md, "Experiments".
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from .stats import ArmCounts, report_dict
from .storage import SQLStorage

__all__ = ["ExperimentGuard", "GuardRunner", "arm", "experiment_report", "guard_verdict"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class ExperimentGuard:
    """Abort a rollout when its candidate is worse than the base version at ``confidence``.

    Checking a running test again and again inflates false alarms; a strict confidence and a minimum sample
    per arm keep them rare (the acceptance test measures the rate on identical arms).
    """

    confidence: float = 0.99
    """Abort when the two-sided p-value is below ``1 - confidence`` and the candidate is the worse arm."""
    metric: Literal["ctr", "conversion"] = "ctr"
    min_impressions: int = 1000
    """Answers shown per arm before the guard judges at all."""

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("guard confidence must be within (0.5, 1)")
        if self.metric not in ("ctr", "conversion"):
            raise ValueError("guard metric must be 'ctr' or 'conversion'")
        if isinstance(self.min_impressions, bool) or self.min_impressions < 1:
            raise ValueError("min_impressions must be a positive integer")


def arm(version: str, counts: tuple[int, int, int, int, int, int]) -> ArmCounts:
    shown, users, clicked, purchased, clicks, purchases = counts
    return ArmCounts(version=version, impressions=shown, clicked=clicked, purchased=purchased, clicks=clicks,
                     purchases=purchases, users=users)


def experiment_report(
    storage: SQLStorage, channel: str, *, alpha: float = 0.01, base: str | None = None,
    candidate: str | None = None, rollout_percent: float | None = None,
) -> dict[str, Any] | None:
    """The channel's rollout report, or ``None`` when the channel has no candidate in rollout.

    ``base``, ``candidate`` and ``rollout_percent`` replace the channel's own (a finished or aborted test).
    """
    rec = storage.get_channel(channel)
    base = base or (rec.version if rec else None)
    candidate = candidate or (rec.candidate if rec else None)
    if rollout_percent is None:
        rollout_percent = rec.rollout_percent if rec is not None and rec.candidate == candidate else 50.0
    if base is None or candidate is None or base == candidate:
        return None
    counts = storage.arm_counts([base, candidate])
    return report_dict(channel, arm(base, counts[base]), arm(candidate, counts[candidate]), rollout_percent,
                       alpha=alpha)


def guard_verdict(report: dict[str, Any], guard: ExperimentGuard) -> bool:
    """Whether the report shows the candidate worse at the guard's confidence, with enough data."""
    arms = report["arms"]
    if min(arms["base"]["impressions"], arms["candidate"]["impressions"]) < guard.min_impressions:
        return False
    metric = report["metrics"][guard.metric]
    return bool(metric["difference"] < 0 and metric["p_value"] < 1.0 - guard.confidence)


class GuardRunner:
    """Runs the guard over every channel in rollout, at most once per ``interval_s`` (called after event batches)."""

    def __init__(self, guard: ExperimentGuard, *, interval_s: float = 10.0) -> None:
        self.guard = guard
        self.interval_s = interval_s
        self._next = 0.0
        self._lock = threading.Lock()
        self.aborted: list[tuple[str, str]] = []
        """``(channel, candidate)`` of every rollout this runner aborted."""

    def maybe_run(self, storage: SQLStorage) -> None:
        now = time.monotonic()
        if now < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            self._next = now + self.interval_s
            for name, ch in storage.status()["channels"].items():
                if ch.get("candidate"):
                    self.check(storage, name)
        finally:
            self._lock.release()

    def check(self, storage: SQLStorage, channel: str) -> bool:
        """Abort the channel's rollout (the base version serves everyone again) if the guard says so."""
        rec = storage.get_channel(channel)
        report = None if rec is None or rec.candidate is None else experiment_report(storage, channel)
        if report is None or not guard_verdict(report, self.guard):
            return False
        base, candidate = report["arms"]["base"]["version"], report["arms"]["candidate"]["version"]
        storage.set_channel(channel, base, 100.0)
        self.aborted.append((channel, candidate))
        m = report["metrics"][self.guard.metric]
        logger.warning("hub: guard aborted the rollout of %s on %s: %s %.4f vs %.4f (p=%.2g)", candidate, channel,
                       self.guard.metric, m["candidate"]["rate"], m["base"]["rate"], m["p_value"])
        return True
