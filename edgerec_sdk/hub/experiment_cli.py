"""``edgerec experiment report``: a rollout's numbers from ``GET /v1/experiments/<channel>``, as a table, JSON
or a plot (``--plot FILE``, matplotlib from the ``build`` extra)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from .._impl.optional import require
from ..sync import protocol


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .cli import _hub_args

    experiment = subparsers.add_parser("experiment", help="A/B numbers of a channel's rollout")
    sub = experiment.add_subparsers(dest="experiment_command", required=True)
    report = sub.add_parser("report", help="impressions, CTR and conversion per arm with 95%% intervals, "
                            "the difference with its p-value, the sample-ratio check and the detectable effect")
    report.add_argument("--channel", default="stable")
    _hub_args(report)
    report.add_argument("--base", default=None, help="base version of a test that ended (default: the channel's)")
    report.add_argument("--candidate", default=None, help="candidate version of a test that ended")
    report.add_argument("--rollout", type=float, default=None, help="the candidate's percent, for a test that ended")
    report.add_argument("--json", action="store_true", help="the hub's JSON instead of the table")
    report.add_argument("--plot", default=None, metavar="FILE", help="also draw the rates and intervals (PNG/SVG)")
    report.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .cli import _client

    query = {k: v for k, v in (("base", args.base), ("candidate", args.candidate), ("rollout", args.rollout))
             if v is not None}
    path = f"/v1/experiments/{protocol._segment(args.channel)}" + (f"?{urlencode(query)}" if query else "")
    client = _client(args)
    try:
        report = client.request_json("GET", path)
    finally:
        client.close()
    sys.stdout.write(orjson.dumps(report).decode() + "\n" if args.json else format_report(report))
    if args.plot:
        plot_report(report, args.plot)
        sys.stderr.write(f"edgerec: plot written to {args.plot}\n")
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a fixed-width table."""
    base, cand = report["arms"]["base"], report["arms"]["candidate"]
    lines = [f"experiment on channel {report['channel']!r}: candidate {cand['version']} at "
             f"{report['rollout_percent']:g}% against base {base['version']}", ""]
    lines.append(f"{'arm':<10} {'version':<28} {'users':>8} {'shown':>9} {'clicks':>8} {'purchases':>9}")
    for name, a in (("base", base), ("candidate", cand)):
        lines.append(f"{name:<10} {a['version'][:28]:<28} {a['users']:>8} {a['impressions']:>9} {a['clicks']:>8} "
                     f"{a['purchases']:>9}")
    lines.append("")
    lines.append(f"{'metric':<11} {'base (95% CI)':<26} {'candidate (95% CI)':<26} {'difference (95% CI)':<28}"
                 f" {'p':>8} {'MDE':>7}  better")
    for name, m in report["metrics"].items():
        b, c = m["base"], m["candidate"]
        lines.append(
            f"{name:<11} {_pct(b['rate']):>7} [{_pct(b['low'])}, {_pct(b['high'])}]".ljust(39)
            + f"{_pct(c['rate']):>7} [{_pct(c['low'])}, {_pct(c['high'])}]".ljust(27)
            + f"{100 * m['difference']:+.2f} pt [{100 * m['low']:+.2f}, {100 * m['high']:+.2f}]".ljust(29)
            + f"{m['p_value']:>8.2g} {100 * m['mde']:>5.2f}pt  {m['better'] or '-'}"
        )
    srm = report["sample_ratio"]
    lines.append("")
    lines.append(f"sample ratio: {_pct(srm['observed_candidate_share'])} of users on the candidate, "
                 f"{_pct(srm['expected_candidate_share'])} expected (p={srm['p_value']:.2g})"
                 + ("  MISMATCH: the split is broken; do not trust the comparison" if srm["mismatch"] else ""))
    lines.append(f"test: {report['test']}; alpha {report['alpha']}")
    return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], path: str) -> None:
    """Rates with their 95% intervals, one panel per metric, base and candidate side by side."""
    require("matplotlib", extra="build")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, (name, m) in zip(axes, metrics.items(), strict=True):
        arms = [("base", m["base"]), ("candidate", m["candidate"])]
        for x, (label, p) in enumerate(arms):
            ax.errorbar([x], [100 * p["rate"]], yerr=[[100 * (p["rate"] - p["low"])], [100 * (p["high"] - p["rate"])]],
                        fmt="o", capsize=6, label=report["arms"][label]["version"])
        ax.set_xticks([0, 1], ["base", "candidate"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"{name}: p={m['p_value']:.2g}")
        ax.legend(fontsize=7)
    fig.suptitle(f"channel {report['channel']}: 95% intervals")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
