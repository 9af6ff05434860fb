"""``edgerec build`` end to end: read, split, train, export, quantize, write the bundle, evaluate, report.

Example:
    >>> result = build_bundle("Beauty.txt", "bundles/beauty", titles="item_keywords.tsv")  # doctest: +SKIP
    >>> result.metrics["test"]["served_int8"]["NDCG@10"]                                  # doctest: +SKIP
    0.061
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .data import InteractionData, leave_one_out, read_interactions
from .evaluate import PROTOCOL, SOURCE_ID_COLUMN, evaluate_bundle, evaluate_direct, file_sha256, holdout
from .metadata import ItemMetadata, item_metadata
from .samples import pad_left
from .train import TrainConfig, TrainResult, train, tune_allocator

logger = logging.getLogger(__name__)

__all__ = ["BuildResult", "build_bundle"]

#: the manifest's description of each ``TrainConfig.fit``
_SPLITS = {
    "single": "leave-one-out: trained on seq[:-1], except a held-out sample of users on seq[:-2] whose "
              "validation NDCG@10 chose the epoch",
    "refit": "leave-one-out: trained on seq[:-1] (epochs chosen on seq[:-2] by validation NDCG@10)",
    "search": "leave-one-out: trained on seq[:-2], the epoch chosen by validation NDCG@10",
}


@dataclass
class BuildResult:
    """Where the bundle went and what it measured."""

    bundle_dir: Path
    report_path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def _catalog_columns(data: InteractionData, meta: ItemMetadata) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {}
    if meta.titles:
        cols["title"] = list(meta.titles)
    if meta.attributes:
        cols["category"] = [list(a) if a else None for a in meta.attributes]
        cols["attributes"] = cols["category"]  # the filterable column of the same values
    if meta.external_ids != data.item_ids:
        cols[SOURCE_ID_COLUMN] = list(data.item_ids)
    return cols


def _version(data_path: Path, seed: int, model_bytes: bytes) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", data_path.stem).strip("-.").lower() or "model"
    digest = hashlib.sha256(model_bytes).hexdigest()[:8]
    return f"{stem[:40]}-sasrec-s{seed}-{digest}"


def build_bundle(
    data_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    titles: str | os.PathLike[str] | None = None,
    attributes: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    item_text: bool | None = None,
    evaluate: bool = True,
    baselines: bool = True,
    report_dir: str | os.PathLike[str] | Literal[False] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    trained: TrainResult | None = None,
) -> BuildResult:
    """Train a model on ``data_path`` and write a bundle v1 to ``out_dir``.

    Args:
        data_path: one-user-per-line sequences or a CSV/JSONL event log.
        out_dir: the bundle directory to write.
        titles: optional titles table (gives catalog titles, and external ids when it has an ``asin`` column).
        attributes: optional ``{"item": [attr, ...]}`` JSON (catalog ``category``).
        config: hyperparameters (the defaults are the ones used for every data set).
        item_text: feed titles/attributes into the item representations through a tokenizer trained here,
            and give the model its text tower and ``query`` input; ``None`` (default): whenever the data has
            titles or attributes.
        evaluate: run the leave-one-out test on the served path and store it in the manifest.
        baselines: evaluate popularity and ItemKNN next to the model.
        report_dir: where the HTML/PNG report goes (default: ``<out_dir>-report`` beside the bundle;
            ``False``: no report).
        progress: show tqdm progress bars.
        overwrite: replace an existing bundle directory.
        trained: an already trained result for this data and config (skips training; for resuming a
            build whose training finished).
    """
    from ..bundle import write_bundle
    from .export import export_model

    cfg = config or TrainConfig()
    tune_allocator()
    timings: dict[str, float] = {}
    t_all, c_all = time.perf_counter(), time.process_time()
    data_path = Path(data_path)
    data = read_interactions(data_path)
    meta = item_metadata(data, titles_path=titles, attributes_path=attributes)
    split = leave_one_out(data.sequences, weights=data.weights, negatives=data.negatives)
    logger.info("data: %d users, %d items, %d interactions, %d evaluated users",
                len(data.user_ids), data.n_items, data.n_interactions, len(split.test_users))

    tokens, vocab, tok_json = None, 0, None
    if item_text is None:
        item_text = bool(meta.titles or meta.attributes)
    if item_text and (meta.titles or meta.attributes):
        from .text import encode_items, train_tokenizer

        tok = train_tokenizer(meta.titles, meta.attributes)
        tokens, vocab, tok_json = encode_items(tok, meta.titles, meta.attributes), tok.get_vocab_size(), tok.to_str()

    t0 = time.perf_counter()
    if trained is None:
        result = train(split, data.n_items, cfg, item_tokens=tokens, vocab_size=vocab, progress=progress)
        timings["train_s"] = time.perf_counter() - t0
    else:
        result = trained
        timings["train_s"] = float(sum(v for k, v in trained.timings_s.items() if not k.endswith("cpu_s")))

    t0 = time.perf_counter()
    ts = holdout(data)
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(ts.histories), size=min(1024, len(ts.histories)), replace=False)
    sample = pad_left([ts.histories[i] for i in pick], cfg.max_len)
    exported = export_model(result.model, sample)
    timings["export_s"] = time.perf_counter() - t0

    metrics: dict[str, Any] = {"protocol": PROTOCOL, "export": exported.report}
    if evaluate:
        t0 = time.perf_counter()
        from ..bundle import quantize_rows_int8

        q, s = quantize_rows_int8(exported.vectors)
        deq = q.astype(np.float32) * s[:, None]
        metrics["test"] = {
            "float32": evaluate_direct(exported.float_bytes, exported.vectors, ts, max_len=cfg.max_len),
            "direct_int8": evaluate_direct(exported.int8_bytes, deq, ts, max_len=cfg.max_len),
        }
        timings["evaluate_direct_s"] = time.perf_counter() - t0

    popular = np.argsort(-np.bincount(np.concatenate(split.train_full), minlength=data.n_items), kind="stable")
    version = _version(data_path, cfg.seed, exported.int8_bytes)
    extra = {
        "builder": "edgerec_sdk.train",
        "model": "sasrec-full-softmax",
        "hyperparameters": result.config,
        "best_epoch": result.best_epoch,
        "item_text": bool(tokens is not None),
        "data": {"file": data_path.name, "sha256": file_sha256(data_path), "users": len(data.user_ids),
                 "items": data.n_items, "interactions": data.n_interactions,
                 # only logs with non-clicked impressions or explicit negatives have the key
                 **({} if data.negatives is None else {"negatives": data.negatives.n_negatives})},
        "split": _SPLITS[cfg.fit] + "; the last item of every user is never seen",
        "history": {k: [round(float(x), 5) for x in v] for k, v in result.history.items()},
        "timings_s": {k: round(v, 1) for k, v in {**result.timings_s, **timings}.items()},
    }
    out = write_bundle(
        out_dir,
        model_bytes=exported.int8_bytes,
        vectors=exported.vectors,
        catalog_ids=meta.external_ids,
        vector_dtype="int8",
        catalog_columns=_catalog_columns(data, meta),
        popular=popular.astype(np.int64),
        max_seq_len=cfg.max_len,
        model_version=version,
        metrics=metrics,
        extra=extra,
        tokenizer_json=tok_json,
        input_names=exported.input_names,
        output_names=exported.output_names,
        query_max_len=exported.query_max_len,
        overwrite=overwrite,
    )
    timings["build_s"] = time.perf_counter() - t_all
    if evaluate:
        t0 = time.perf_counter()
        metrics = evaluate_bundle(out, data_path, baselines=baselines)
        timings["evaluate_served_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    # CPU seconds of this process: on a shared machine wall time depends on the neighbours, CPU time
    # much less (with 2 threads, an idle machine gives wall ~= cpu / 2).
    timings["total_cpu_s"] = time.process_time() - c_all
    report_path = None
    if report_dir is not False:
        rdir = Path(report_dir) if report_dir else out.parent / f"{out.name}-report"
        from .report import write_report

        report_path = write_report(rdir, history=result.history, best_epoch=result.best_epoch,
                                   metrics={**metrics, "timings_s": {**result.timings_s, **timings}},
                                   title=f"edgerec build: {version}")
        # the float32 model the int8 one was made from, for comparing quantization schemes later
        (rdir / "interest.float32.onnx").write_bytes(exported.float_bytes)
    logger.info("build finished in %.0f s (train %.0f s)", timings["total_s"], timings["train_s"])
    return BuildResult(bundle_dir=out, report_path=report_path, metrics=metrics,
                       timings_s={**result.timings_s, **timings})
