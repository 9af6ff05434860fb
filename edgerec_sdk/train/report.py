"""The build report: loss and validation NDCG@10 curves (PNG) and an HTML page with the metrics.

Example:
    >>> write_report("runs/beauty-report", history=result.history, metrics=metrics)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["metrics_table", "write_report"]

_COLS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "coverage@10")


def _plot(history: Mapping[str, Sequence[float]], best_epoch: int | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("fit_loss", "the fit (seq[:-1]; held-out users seq[:-2])"),
                       ("search_loss", "search fit (seq[:-2])"), ("refit_loss", "final fit (seq[:-1])")):
        ys = history.get(key) or []
        if ys:
            ax1.plot(range(1, len(ys) + 1), ys, marker=".", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("softmax cross-entropy")
    ax1.set_title("training loss")
    ax1.legend()
    ys = history.get("fit_valid_ndcg10") or history.get("search_valid_ndcg10") or []
    if ys:
        ax2.plot(range(1, len(ys) + 1), ys, marker=".", color="tab:green")
        if best_epoch:
            ax2.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
            ax2.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("NDCG@10")
    ax2.set_title("validation NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metrics_table(test: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Rows ``[name, HR@5, ...]`` for every evaluated path / baseline."""
    rows = [["model", *_COLS]]
    for name, m in test.items():
        if isinstance(m, Mapping):
            rows.append([name, *(f"{m[c]:.4f}" if c in m else "" for c in _COLS)])
    return rows


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    history: Mapping[str, Sequence[float]],
    metrics: Mapping[str, Any],
    best_epoch: int | None = None,
    title: str = "edgerec build report",
) -> Path:
    """Write ``curves.png``, ``report.html`` and ``metrics.json`` into ``out_dir``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "curves.png"
    _plot(history, best_epoch, png)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
    rows = metrics_table(metrics.get("test", {}))
    table = "\n".join(
        "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in r)
        + "</tr>"
        for i, r in enumerate(rows)
    )
    img = base64.b64encode(png.read_bytes()).decode("ascii")
    other = {k: v for k, v in metrics.items() if k != "test"}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}pre{{background:#f4f4f4;padding:1em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Test metrics (full ranking, history excluded)</h2><table>{table}</table>
<h2>Training curves</h2><img alt="loss and validation NDCG@10" src="data:image/png;base64,{img}">
<h2>Details</h2><pre>{html.escape(json.dumps(other, indent=2, sort_keys=True, default=str))}</pre>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    logger.info("report written to %s", path)
    return path
