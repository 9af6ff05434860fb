"""ONNX export of the interest encoder, parity check, dynamic int8 quantization, item vectors.

The exported graph takes ``history`` int64 ``[batch, max_len]`` (left-padded, row r fed as r + 1, 0 = pad)
and returns ``interest`` float32 ``[batch, dim]``; the item table is a constant inside the graph, so the
model needs nothing but the history. A model with a text tower also takes ``query`` int64
``[batch, QUERY_TOKENS]`` token ids and returns their text vector as ``query_vector`` ``[batch, dim]``
(the same function that gives an item its text part, so an edge can embed an item added after the build).
Quantization is onnxruntime's dynamic int8 (weights int8, activations quantized on the fly), applied to the
MatMul/Gemm weights, and to the embedding-table Gathers only in models above :data:`FLOAT_TABLES_MAX_BYTES`.

Example:
    >>> exported = export_model(model, sample_histories)   # doctest: +SKIP
    >>> exported.report["parity_max_abs"]                  # doctest: +SKIP
    2.8e-06
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from ..errors import ModelLoadError
from .model import ExportWrapper, SASRec
from .text import QUERY_TOKENS

logger = logging.getLogger(__name__)

__all__ = [
    "FLOAT_NODES", "FLOAT_TABLES_MAX_BYTES", "ExportedModel", "export_model", "int8_vector_error", "onnx_session", "quantize",
    "quantized_ops", "run_onnx", "run_text",
]

OPSET = 17
INPUT_NAME = "history"
OUTPUT_NAME = "interest"
QUERY_NAME = "query"
TEXT_NAME = "query_vector"


@dataclass
class ExportedModel:
    """ONNX models (float32 and int8) plus the float item vectors and the measured errors."""

    float_bytes: bytes
    int8_bytes: bytes
    vectors: NDArray[np.float32]
    report: dict[str, Any] = field(default_factory=dict)
    query_max_len: int = 0  #: the ``query`` input's length; 0 when the model has no text tower

    @property
    def input_names(self) -> dict[str, str]:
        """Manifest ``model.inputs``."""
        return {"history": INPUT_NAME, **({"query": QUERY_NAME} if self.query_max_len else {})}

    @property
    def output_names(self) -> dict[str, str]:
        """Manifest ``model.outputs``."""
        return {"interest": OUTPUT_NAME, **({"text": TEXT_NAME} if self.query_max_len else {})}


def onnx_session(model_bytes: bytes, *, threads: int = 1) -> Any:
    """An onnxruntime CPU session over serialized model bytes (single-threaded, no spinning by default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime refused the exported model: {exc}") from exc


def _feeds(session: Any, history: NDArray[np.int64], query: NDArray[np.int64] | None) -> dict[str, Any]:
    feeds: dict[str, Any] = {INPUT_NAME: history}
    q_input = next((i for i in session.get_inputs() if i.name == QUERY_NAME), None)
    if q_input is not None:
        feeds[QUERY_NAME] = query if query is not None else np.zeros((len(history), q_input.shape[1]), np.int64)
    return feeds


def run_onnx(session: Any, history: NDArray[np.int64], *, batch: int = 4096,
             query: NDArray[np.int64] | None = None) -> NDArray[np.float32]:
    """Interest vectors for a padded history matrix, in batches (an empty query when the model takes one)."""
    outs = [
        session.run([OUTPUT_NAME], _feeds(session, history[i : i + batch],
                                          None if query is None else query[i : i + batch]))[0]
        for i in range(0, len(history), batch)
    ]
    if not outs:
        return np.zeros((0, session.get_outputs()[0].shape[1] or 0), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def run_text(session: Any, tokens: NDArray[np.int64], *, max_len: int, batch: int = 4096) -> NDArray[np.float32]:
    """Text-tower vectors of token rows (``[n, query_len]``) through the model's ``query_vector`` output."""
    outs = [
        session.run([TEXT_NAME], _feeds(session, np.zeros((len(tokens[i : i + batch]), max_len), np.int64),
                                        tokens[i : i + batch]))[0]
        for i in range(0, len(tokens), batch)
    ]
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def _to_onnx(wrapper: ExportWrapper, max_len: int, query_len: int) -> bytes:
    args: tuple[torch.Tensor, ...] = (torch.ones(2, max_len, dtype=torch.long),)
    inputs, outputs = [INPUT_NAME], [OUTPUT_NAME]
    if query_len:
        args += (torch.ones(2, query_len, dtype=torch.long),)
        inputs.append(QUERY_NAME)
        outputs.append(TEXT_NAME)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about tracing; neither applies to
        # this fixed-shape graph, and the parity check below verifies the result.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            # torch types ``f`` as a path, but the TorchScript exporter (dynamo=False) also writes to a BytesIO
            buf,  # type: ignore[arg-type]
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buf.getvalue()


FLOAT_TABLES_MAX_BYTES: Final = 32 * 1024 * 1024
"""Models up to this size (float32, almost all of it the item and token embedding tables) keep their tables in
float32 and quantize the matrix products only. onnxruntime quantizes a Gather table with one scale for the
whole table, and that was the bulk of the int8 model's loss (a Beauty text model, validation NDCG@10 against
float32: -0.19 % with the tables quantized, +0.03 % without; ``benchmarks/bench_quantization.py --train-epochs
10``). A larger catalogue pays the loss for a model a quarter of the size."""


def quantized_ops(float_bytes: bytes) -> list[str]:
    """The op types :func:`quantize` makes int8 for a float model of this size."""
    return ["MatMul", "Gemm"] if len(float_bytes) <= FLOAT_TABLES_MAX_BYTES else ["MatMul", "Gemm", "Gather"]


FLOAT_NODES: Final = ("/blocks.0/attn/q/MatMul", "/blocks.0/attn/k/MatMul", "/blocks.0/attn/v/MatMul")
"""Matrix products kept in float32: the first block's query, key and value projections. They read the raw
embeddings scaled by sqrt(dim), whose outliers make the per-tensor activation scale of dynamic quantization coarse
(every later block reads layer-normed activations). On a Video Games model the int8 encoder's NDCG@10 went from
-0.38 % to +0.01 % of the float encoder's with them in float, for 34 KB more (Beauty and Toys: within +-0.15 %
either way). The names are the exported torch module paths; tests check that an exported model has them."""


def quantize(float_bytes: bytes, ops: Sequence[str] | None = None, *, per_channel: bool = False,
             keep_float: Sequence[str] = FLOAT_NODES) -> bytes:
    """onnxruntime's dynamic int8 quantization of ``ops`` (default: :func:`quantized_ops`), ``keep_float`` nodes
    left in float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="edgerec-quant-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_bytes)
        root = logging.getLogger()
        quiet = _DropMessage("pre-processing before quantization")
        root.addFilter(quiet)
        try:
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(ops if ops is not None else quantized_ops(float_bytes)),
                per_channel=per_channel,
                nodes_to_exclude=list(keep_float),
            )
        finally:
            root.removeFilter(quiet)
        return dst.read_bytes()


class _DropMessage(logging.Filter):
    """Drops onnxruntime's advice to run its pre-processing script (it logs it on the root logger)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def int8_vector_error(vectors: NDArray[np.float32]) -> dict[str, float]:
    """Error of per-row symmetric int8 quantization (the scheme the bundle writer uses)."""
    peak = np.abs(vectors).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    deq = np.clip(np.rint(vectors / scale), -127, 127) * scale
    err = np.abs(deq - vectors)
    rel = np.linalg.norm(deq - vectors, axis=1) / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    return {"vectors_max_abs": float(err.max()), "vectors_mean_rel_l2": float(rel.mean())}


def export_model(
    model: SASRec, sample: NDArray[np.int64], *, parity_tol: float = 1e-4, query_len: int = QUERY_TOKENS
) -> ExportedModel:
    """Export ``model`` to float ONNX, check parity with torch, quantize to int8 and measure both.

    Args:
        model: the trained encoder.
        sample: padded histories ``[n, max_len]`` (as model input, r + 1) to measure parity on.
        parity_tol: the largest acceptable max-abs difference between torch and float ONNX.

    Raises:
        ModelLoadError: onnxruntime cannot load the export, or parity is worse than ``parity_tol``.
    """
    model.eval()
    wrapper = ExportWrapper(model).eval()
    query_len = query_len if model.token_emb is not None else 0
    float_bytes = _to_onnx(wrapper, model.max_len, query_len)
    with torch.no_grad():
        ref = model.encode(torch.from_numpy(sample), wrapper.table)[:, -1, :].numpy()
        vectors = model.item_vectors().numpy().astype(np.float32)
    f_sess = onnx_session(float_bytes)
    f_out = run_onnx(f_sess, sample)
    parity = float(np.abs(f_out - ref).max()) if len(sample) else 0.0
    if query_len:
        # The text tower must reproduce each item's text part: an edge relies on it for items added later.
        toks = _pad_to(model.item_tokens[1:].numpy(), query_len)
        with torch.no_grad():
            text_ref = model.text_vector(torch.from_numpy(toks)).numpy()
        parity = max(parity, float(np.abs(run_text(f_sess, toks, max_len=model.max_len) - text_ref).max()))
    if not np.isfinite(parity) or parity > parity_tol:
        raise ModelLoadError(f"ONNX export differs from torch by {parity:.3g} (tolerance {parity_tol:g})")
    ops = quantized_ops(float_bytes)
    int8_bytes = quantize(float_bytes, ops)
    q_out = run_onnx(onnx_session(int8_bytes), sample)
    q_err = np.abs(q_out - ref)
    cos = (q_out * ref).sum(1) / np.maximum(np.linalg.norm(q_out, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    report: dict[str, Any] = {
        "opset": OPSET,
        "parity_samples": len(sample),
        "parity_max_abs": parity,
        "int8_encoder_max_abs": float(q_err.max()) if len(sample) else 0.0,
        "int8_encoder_mean_abs": float(q_err.mean()) if len(sample) else 0.0,
        "int8_encoder_min_cosine": float(cos.min()) if len(sample) else 1.0,
        "float_model_bytes": len(float_bytes),
        "int8_model_bytes": len(int8_bytes),
        "int8_ops": ops,
        **int8_vector_error(vectors),
    }
    logger.info(
        "export: parity %.2g, int8 encoder max err %.3g (cos >= %.4f), model %d -> %d bytes",
        parity, report["int8_encoder_max_abs"], report["int8_encoder_min_cosine"],
        len(float_bytes), len(int8_bytes),
    )
    return ExportedModel(float_bytes=float_bytes, int8_bytes=int8_bytes, vectors=vectors, report=report,
                         query_max_len=query_len)


def _pad_to(tokens: NDArray[np.int64], width: int) -> NDArray[np.int64]:
    out = np.zeros((len(tokens), width), dtype=np.int64)
    w = min(width, tokens.shape[1])
    out[:, :w] = tokens[:, :w]
    return out
