"""Statistics of an A/B rollout (pure: counts in, numbers out; no I/O).

Each arm is a model version; its unit of analysis is one *answer shown* (an impression row, keyed by
``rec_id``): CTR is the share of shown answers that got at least one attributed click, conversion the share
that got a purchase. Proportions get Wilson 95 % intervals; the difference between arms a pooled two-proportion
z-test (two-sided) and an unpooled Wald interval; the sample-ratio-mismatch check a chi-square test of users per
arm against the rollout percentage; the minimum detectable effect is the absolute difference the current
sample would find with 80 % power at the 5 % level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

__all__ = [
    "ArmCounts",
    "Comparison",
    "Proportion",
    "compare",
    "min_detectable_effect",
    "report_dict",
    "sample_ratio_p",
    "two_proportion_z",
    "wilson",
]

_NORMAL = NormalDist()
Z95 = _NORMAL.inv_cdf(0.975)


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """What the hub counted for one arm."""

    version: str
    impressions: int
    """Answers shown (distinct ``rec_id`` of impression rows)."""
    clicked: int
    """Shown answers with at least one click carrying their ``rec_id``."""
    purchased: int
    """Shown answers with at least one purchase carrying their ``rec_id``."""
    clicks: int = 0
    """Click events attributed to the arm's answers (an answer may collect several)."""
    purchases: int = 0
    users: int = 0
    """Distinct (pseudonymous) users shown the arm's answers."""


@dataclass(frozen=True, slots=True)
class Proportion:
    rate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """Candidate minus base for one metric."""

    metric: str
    base: Proportion
    candidate: Proportion
    difference: float
    low: float
    high: float
    p_value: float
    mde: float
    """Absolute difference detectable with 80 % power at alpha 0.05 with the current impressions."""


def wilson(successes: int, n: int, z: float = Z95) -> Proportion:
    """The rate and its Wilson score interval (sound near 0 and 1, unlike the Wald interval)."""
    if n <= 0:
        return Proportion(0.0, 0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Proportion(p, max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_z(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """``(z, two-sided p)`` of the pooled two-proportion z-test of arm 2 against arm 1."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (s2 / n2 - s1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def min_detectable_effect(rate: float, n1: int, n2: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest absolute difference from ``rate`` a two-sided test finds with ``power`` at these sizes."""
    if n1 <= 0 or n2 <= 0:
        return math.inf
    rate = min(max(rate, 1e-9), 1 - 1e-9)
    z = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)
    return z * math.sqrt(rate * (1 - rate) * (1 / n1 + 1 / n2))


def sample_ratio_p(base_users: int, candidate_users: int, candidate_share: float) -> float:
    """p-value of a chi-square test (1 dof) that users split as ``candidate_share`` says; 1.0 when untestable."""
    n = base_users + candidate_users
    if n <= 0 or not 0.0 < candidate_share < 1.0:
        return 1.0
    expected = (n * (1 - candidate_share), n * candidate_share)
    chi2 = sum((o - e) ** 2 / e for o, e in zip((base_users, candidate_users), expected, strict=True))
    return math.erfc(math.sqrt(chi2 / 2.0))


def compare(metric: str, s1: int, n1: int, s2: int, n2: int) -> Comparison:
    """One metric of candidate (``s2/n2``) against base (``s1/n1``)."""
    base, cand = wilson(s1, n1), wilson(s2, n2)
    diff = cand.rate - base.rate
    se = math.sqrt(base.rate * (1 - base.rate) / max(n1, 1) + cand.rate * (1 - cand.rate) / max(n2, 1))
    _, p = two_proportion_z(s1, n1, s2, n2)
    mde = min_detectable_effect((s1 + s2) / max(n1 + n2, 1), n1, n2)
    return Comparison(metric, base, cand, diff, diff - Z95 * se, diff + Z95 * se, p, mde)


def report_dict(channel: str, base: ArmCounts, candidate: ArmCounts, rollout_percent: float, *,
                alpha: float = 0.01, srm_alpha: float = 0.001) -> dict[str, Any]:
    """The JSON report of a rollout: arms, per-metric comparisons, the verdict and the SRM check."""
    metrics = {
        "ctr": compare("ctr", base.clicked, base.impressions, candidate.clicked, candidate.impressions),
        "conversion": compare("conversion", base.purchased, base.impressions, candidate.purchased,
                              candidate.impressions),
    }
    srm_p = sample_ratio_p(base.users, candidate.users, rollout_percent / 100.0)

    def winner(c: Comparison) -> str | None:
        if c.p_value >= alpha:
            return None
        return candidate.version if c.difference > 0 else base.version

    return {
        "channel": channel,
        "rollout_percent": rollout_percent,
        "test": "pooled two-proportion z-test, two-sided; Wilson 95% intervals; Wald interval of the difference",
        "alpha": alpha,
        "arms": {"base": asdict(base), "candidate": asdict(candidate)},
        "metrics": {name: {**asdict(c), "better": winner(c)} for name, c in metrics.items()},
        "sample_ratio": {
            "expected_candidate_share": rollout_percent / 100.0,
            "observed_candidate_share": candidate.users / max(base.users + candidate.users, 1),
            "p_value": srm_p,
            "mismatch": srm_p < srm_alpha,
        },
    }
