"""Training the CTR ranker from logged impressions and clicks, and attaching it to a bundle.

Input: the hub's exported events (``edgerec hub export-events``; JSON lines or CSV with a header). An
``impression`` row names the answer (``rec_id``), the items shown and their slots; a ``click``, ``cart`` or
``purchase`` with the same ``rec_id`` (or, without one, by the same user on a shown item within
:data:`ATTRIBUTION_WINDOW_S`) labels that item 1, every other shown item 0. Each shown item becomes one row of
:data:`~edgerec_sdk.rank.features.FEATURES`, computed from the user's history *before* the impression, with
the bundle's own interest model and vectors: exactly what the edge computes when serving, except ``position``,
which the edge fixes at 0.

Model: L2-regularised logistic regression fitted by Newton's method on standardised features; its log-loss
objective makes the output a calibrated click probability (checked per decile on a held-out later slice of the
log). The ONNX graph standardises, applies int8 weights (``DequantizeLinear``) and a sigmoid.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from .._impl.model import InterestModel
from ..bundle import load_bundle
from ..bundle.manifest import MANIFEST_NAME, RANKER_NAME, FileEntry, Manifest, RankerInfo, check_model_version
from ..bundle.restamp import write_derived
from ..bundle.verify import check_signing_key
from ..errors import ConfigError
from ..rank.features import FEATURES, RankFeatures

__all__ = [
    "ATTRIBUTION_WINDOW_S",
    "Impression",
    "RankerFit",
    "attach_ranker",
    "fit_logistic",
    "impressions_from_events",
    "ranker_matrix",
    "ranker_onnx",
    "read_event_log",
    "train_ranker",
]

logger = logging.getLogger(__name__)

ATTRIBUTION_WINDOW_S: Final = 1800.0
_POSITIVE: Final = frozenset({"click", "cart", "purchase"})
_HISTORY: Final = frozenset({"view", "click", "cart", "purchase"})


@dataclass(slots=True)
class Impression:
    """One logged answer: who saw which items in which slots, and which of them they then acted on."""

    user: str
    ts: float
    rec_id: str
    items: list[str]
    positions: list[int]
    clicked: set[str] = field(default_factory=set)


def read_event_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Events from a JSON-lines or CSV export (a CSV ``items``/``positions`` cell holds a JSON list)."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        event: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
        for key in ("items", "positions"):
            if key in event:
                event[key] = json.loads(event[key])
        event["ts"] = _seconds(event.pop("timestamp", event.get("ts")))
        for key in ("position", "value"):
            if key in event:
                event[key] = float(event[key])
        rows.append(event)
    return rows


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def impressions_from_events(
    events: Iterable[Mapping[str, Any]],
) -> tuple[list[Impression], dict[str, list[tuple[float, str]]]]:
    """The impressions with their clicks attributed, and each user's history events ``(ts, item)``."""
    impressions: dict[str, Impression] = {}
    by_user: dict[str, list[Impression]] = defaultdict(list)
    history: dict[str, list[tuple[float, str]]] = defaultdict(list)
    actions: list[Mapping[str, Any]] = []
    for e in sorted(events, key=lambda e: float(e.get("ts", 0.0))):
        kind, user = e.get("type"), str(e.get("user"))
        if kind == "impression":
            # a live row lists the whole answer (items, positions); an exported one is one line per slot
            slots = e.get("items")
            if slots is not None:
                items = [str(i) for i in slots]
                positions = [int(p) for p in (e.get("positions") or range(len(items)))]
            else:
                items, positions = [str(e.get("item"))], [int(float(e.get("position") or 0))]
            rec_id = str(e.get("rec_id") or e.get("event_id") or f"imp-{len(impressions)}")
            logged = impressions.get(rec_id)
            if logged is None:
                logged = impressions[rec_id] = Impression(user, float(e["ts"]), rec_id, [], [])
                by_user[user].append(logged)
            for item, position in zip(items, positions, strict=False):
                if item not in logged.items:
                    logged.items.append(item)
                    logged.positions.append(position)
            continue
        if kind in _HISTORY or (kind == "rating" and float(e.get("value") or 0) > 2):
            history[user].append((float(e["ts"]), str(e.get("item"))))
        if kind in _POSITIVE:
            actions.append(e)
    for e in actions:
        item, ts = str(e.get("item")), float(e["ts"])
        imp: Impression | None = impressions.get(str(e.get("rec_id"))) if e.get("rec_id") else None
        if imp is None:  # no rec_id: the latest impression of this user showing the item, within the window
            shown = [i for i in by_user.get(str(e.get("user")), []) if item in i.items
                     and 0.0 <= ts - i.ts <= ATTRIBUTION_WINDOW_S]
            imp = shown[-1] if shown else None
        if imp is not None and item in imp.items:
            imp.clicked.add(item)
    return list(impressions.values()), history


def ranker_matrix(
    bundle_dir: str | os.PathLike[str], impressions: Sequence[Impression],
    history: Mapping[str, Sequence[tuple[float, str]]], *, signing_key: str | bytes | None = None, batch: int = 256,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64]]:
    """Feature rows, labels and impression times: one row per shown item the bundle knows."""
    bundle = load_bundle(bundle_dir, signing_key=signing_key)
    model = InterestModel.for_bundle(bundle)
    tables = RankFeatures(bundle)
    catalog = bundle.catalog
    all_vectors = bundle.vectors.rows_f32(np.arange(len(catalog), dtype=np.int64))
    xs, ys, ts = [], [], []
    for lo in range(0, len(impressions), batch):
        chunk = impressions[lo:lo + batch]
        hists = [catalog.rows([item for t, item in history.get(imp.user, ()) if t < imp.ts]) for imp in chunk]
        interest = model.embed(model.pad(hists)) if any(len(h) for h in hists) else None
        for j, imp in enumerate(chunk):
            rows = catalog.rows(imp.items)
            known = [k for k, item in enumerate(imp.items) if catalog.row(item) is not None]
            if not known or interest is None or not len(hists[j]):
                continue
            scores = all_vectors[rows] @ interest[j]
            full = all_vectors @ interest[j]
            full[hists[j]] = -np.inf
            positions = np.asarray([imp.positions[k] for k in known], dtype=np.int64)
            xs.append(tables.matrix(hists[j], rows, scores, top_score=float(np.max(full)), now=imp.ts,
                                    positions=positions))
            ys.append(np.asarray([imp.items[k] in imp.clicked for k in known], dtype=np.float32))
            ts.append(np.full(len(known), imp.ts))
    if not xs:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)


@dataclass(frozen=True, slots=True)
class RankerFit:
    """A fitted logistic regression on standardised features."""

    weights: NDArray[np.float64]
    bias: float
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]

    def predict(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        z = ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias
        out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return out


def fit_logistic(x: NDArray[np.floating], y: NDArray[np.floating], *, l2: float = 1.0, iters: int = 50) -> RankerFit:
    """Newton's method on the L2-penalised log-loss (the bias unpenalised); features standardised first."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)  # a constant feature (e.g. recency without dates) gets weight 0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    rate = np.clip(y.mean(), 1e-4, 1 - 1e-4)
    w[-1] = np.log(rate / (1 - rate))
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return RankerFit(weights=w[:-1], bias=float(w[-1]), mean=mean, scale=scale)


def ranker_onnx(fit: RankerFit) -> bytes:
    """The ONNX graph ``sigmoid(((x - mean) / scale) @ dequantize(w_int8) + bias)``, output ``[n, 1]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(fit.weights)
    w_scale = float(np.max(np.abs(fit.weights))) / 127.0 or 1.0
    w_q = np.clip(np.round(fit.weights / w_scale), -127, 127).astype(np.int8).reshape(n, 1)
    inits = [
        numpy_helper.from_array(fit.mean.astype(np.float32).reshape(1, n), "mean"),
        numpy_helper.from_array(fit.scale.astype(np.float32).reshape(1, n), "scale"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(np.asarray(w_scale, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.asarray(0, dtype=np.int8), "w_zero"),
        numpy_helper.from_array(np.asarray([fit.bias], dtype=np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["standard"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
        helper.make_node("MatMul", ["standard", "w"], ["logit0"]),
        helper.make_node("Add", ["logit0", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["ctr"]),
    ]
    graph = helper.make_graph(
        nodes, "edgerec_ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", n])],
        [helper.make_tensor_value_info("ctr", TensorProto.FLOAT, ["n", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgerec_sdk")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def auc(y: NDArray[np.floating], p: NDArray[np.floating]) -> float:
    """Area under the ROC curve (rank statistic; ties share their mean rank); NaN with one class only."""
    y = np.asarray(y)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    sorted_p = np.asarray(p)[order]
    ranks_sorted = np.arange(1, len(p) + 1, dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    for f, c in zip(first, counts, strict=True):
        if c > 1:
            ranks_sorted[f:f + c] = ranks_sorted[f:f + c].mean()
    ranks[order] = ranks_sorted
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def calibration(y: NDArray[np.floating], p: NDArray[np.floating], bins: int = 10) -> list[dict[str, float]]:
    """Expected (mean predicted) and observed click rate per decile of the prediction."""
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            out.append({"expected": float(np.mean(p[chunk])), "observed": float(np.mean(y[chunk])),
                        "n": len(chunk)})
    return out


def attach_ranker(
    bundle_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, ranker_bytes: bytes,
    features: Sequence[str], means: Sequence[float], report: Mapping[str, Any],
    signing_key: str | bytes | None = None, model_version: str | None = None,
) -> Path:
    """Write ``out_dir``: the bundle at ``bundle_dir`` plus the ranker, as a new signed model version."""
    root, out = Path(bundle_dir), Path(out_dir)
    if out.exists():
        raise ConfigError(f"{out} exists; the ranked bundle is written to a new directory")
    old = Manifest.from_bytes((root / MANIFEST_NAME).read_bytes(), source=str(root / MANIFEST_NAME))
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    version = check_model_version(model_version or f"{old.model_version[:100]}-ranked-{now:%Y%m%dT%H%M%SZ}")
    files = dict(old.files)
    files[RANKER_NAME] = FileEntry(sha256=hashlib.sha256(ranker_bytes).hexdigest(), size=len(ranker_bytes))
    extra = dict(old.extra)
    extra["ranker"] = dict(report)
    new = dataclasses.replace(
        old, model_version=version, parent_version=old.model_version,
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"), files=files, extra=extra,
        ranker=RankerInfo(file=RANKER_NAME, features=tuple(features), means=tuple(float(m) for m in means)),
    )
    raw = new.to_bytes()
    Manifest.from_bytes(raw, source="ranked manifest")  # only write what the loader accepts
    key = check_signing_key(signing_key) if signing_key is not None else None
    write_derived(root, old, raw, out, key=key, add={RANKER_NAME: ranker_bytes})
    return out


def train_ranker(
    bundle_dir: str | os.PathLike[str], events: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike[str], *, signing_key: str | bytes | None = None, holdout: float = 0.2,
    l2: float = 1.0, min_clicks: int = 20,
) -> dict[str, Any]:
    """Fit the ranker on the event log and write ``out_dir`` (the bundle with its ranker).

    The latest ``holdout`` share of the impressions (by time) is kept out of the first fit to report AUC and
    calibration honestly; the shipped model is then fitted on everything.

    Raises:
        ConfigError: the log has too few impressions or clicks to fit a ranker.
    """
    rows = read_event_log(events) if isinstance(events, (str, os.PathLike)) else list(events)
    impressions, history = impressions_from_events(rows)
    x, y, ts = ranker_matrix(bundle_dir, impressions, history, signing_key=signing_key)
    if len(y) == 0 or int(y.sum()) < min_clicks:
        raise ConfigError(f"the event log has {len(impressions)} impressions and {int(y.sum())} attributed "
                          f"clicks on known items; a ranker needs at least {min_clicks} clicks")
    cut = float(np.quantile(ts, 1.0 - holdout)) if 0 < holdout < 1 else float("inf")
    train, test = ts < cut, ts >= cut
    report: dict[str, Any] = {"impressions": len(impressions), "rows": len(y), "clicks": int(y.sum()),
                              "features": list(FEATURES), "l2": l2}
    if train.sum() and test.sum() and y[train].sum() and y[test].sum():
        held = fit_logistic(x[train], y[train], l2=l2)
        p = held.predict(x[test])
        report["holdout"] = {"rows": int(test.sum()), "auc": auc(y[test], p),
                             "log_loss": float(-np.mean(y[test] * np.log(p) + (1 - y[test]) * np.log(1 - p))),
                             "calibration": calibration(y[test], p)}
    fit = fit_logistic(x, y, l2=l2)
    report["weights"] = dict(zip(FEATURES, map(float, fit.weights), strict=True))
    attach_ranker(bundle_dir, out_dir, ranker_bytes=ranker_onnx(fit), features=FEATURES, means=fit.mean.tolist(),
                  report=report, signing_key=signing_key)
    logger.info("ranker trained on %d rows (%d clicks); bundle written to %s", len(y), int(y.sum()), out_dir)
    return report

