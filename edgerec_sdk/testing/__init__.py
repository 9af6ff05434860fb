"""Public test doubles: valid bundles of any size with a real ONNX interest model, and a scriptable
fault-injecting hub (:class:`FakeHub`, :class:`Fault`; in process as an ``httpx`` transport or on loopback).

Needs the ``onnx`` package (``pip install "edgerec-sdk[dev]"``), imported only when a model is built.

Example:
    >>> from edgerec_sdk.testing import make_bundle
    >>> from edgerec_sdk.bundle import load_bundle
    >>> bundle = load_bundle(make_bundle(tmp_path / "b", n_items=1000, dim=32))  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from .._impl.optional import require
from ..bundle import quantize_rows_int8, write_bundle
from .fakehub import FakeClock, FakeHub, Fault, Recorded

__all__ = ["FakeClock", "FakeHub", "Fault", "Recorded", "fork_probe", "make_bundle", "make_interest_model",
           "make_text_bundle", "make_tiny_bundle"]

__test__ = False  # keep pytest from collecting the make_* helpers

OPSET: Final = 17
_CATEGORIES: Final = ("Nail", "Hair", "Skin", "Makeup", "Fragrance", "Tools")
_N_BRANDS: Final = 25


def make_interest_model(
    embeddings: NDArray[np.float32],
    *,
    max_seq_len: int,
    weights: NDArray[np.float32] | None = None,
    recency_decay: float | None = None,
    token_table: NDArray[np.float32] | None = None,
    query_max_len: int = 0,
) -> bytes:
    """Build a mean-pooling interest model following the bundle's interest-model contract.

    The graph: ``E = [0; embeddings]`` (row 0 is padding), ``Gather(E, history)``, a mask of non-padding
    positions (times ``recency_decay ** j`` for the position ``j`` steps from the newest, last, column when a
    decay is given), the weighted sum divided by ``max(sum of weights, 1)``, then ``@ weights`` if given.
    Input ``history`` int64 ``[batch, max_seq_len]``; output ``interest`` float32 ``[batch, dim]``; opset 17.

    Args:
        embeddings: item vectors ``(n_items, dim)``; item row ``r`` is fed as ``r + 1``.
        max_seq_len: history length.
        weights: optional ``(dim, dim)`` output projection.
        recency_decay: optional decay in ``(0, 1]`` for recency-weighted pooling (left-padded histories).
        token_table: optional ``(vocab, dim)`` token embeddings (row 0 padding): adds the text tower, input
            ``query`` int64 ``[batch, query_max_len]`` and output ``query_vector`` (the mean embedding of the
            non-padding tokens).
        query_max_len: the ``query`` input length (with ``token_table``).

    Returns:
        The serialised ONNX model (no external data).
    """
    onnx = require("onnx", extra="dev")
    helper = onnx.helper
    tp = onnx.TensorProto
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or max_seq_len <= 0:
        raise ValueError("embeddings must be (n_items, dim) and max_seq_len positive")
    n, dim = emb.shape
    table = np.zeros((n + 1, dim), dtype=np.float32)
    table[1:] = emb
    # raw=True hands the bytes to protobuf as one blob: much faster than a float list for big tables.
    inits = [
        helper.make_tensor("E", tp.FLOAT, [n + 1, dim], table.tobytes(), raw=True),
        helper.make_tensor("zero", tp.INT64, [], [0]),
        helper.make_tensor("one", tp.FLOAT, [], [1.0]),
        helper.make_tensor("axis1", tp.INT64, [1], [1]),
        helper.make_tensor("axis2", tp.INT64, [1], [2]),
    ]
    del table
    nodes = [
        helper.make_node("Gather", ["E", "history"], ["emb"], axis=0),
        helper.make_node("Greater", ["history", "zero"], ["nonpad"]),
        helper.make_node("Cast", ["nonpad"], ["mask"], to=tp.FLOAT),
    ]
    mask = "mask"
    if recency_decay is not None:
        if not 0.0 < recency_decay <= 1.0:
            raise ValueError("recency_decay must lie in (0, 1]")
        decay = np.float32(recency_decay) ** np.arange(max_seq_len - 1, -1, -1, dtype=np.float32)
        inits.append(helper.make_tensor("decay", tp.FLOAT, [max_seq_len], decay.astype(np.float32).tolist()))
        nodes.append(helper.make_node("Mul", ["mask", "decay"], ["wmask"]))
        mask = "wmask"
    nodes += [
        helper.make_node("Unsqueeze", [mask, "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", [mask, "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["denom"]),
        helper.make_node("Div", ["total", "denom"], ["pooled"]),
    ]
    if weights is not None:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != (dim, dim):
            raise ValueError(f"weights must be ({dim}, {dim}), got {w.shape}")
        inits.append(helper.make_tensor("W", tp.FLOAT, [dim, dim], w.tobytes(), raw=True))
        nodes.append(helper.make_node("MatMul", ["pooled", "W"], ["interest"]))
    else:
        nodes.append(helper.make_node("Identity", ["pooled"], ["interest"]))
    inputs = [helper.make_tensor_value_info("history", tp.INT64, ["batch", max_seq_len])]
    outputs = [helper.make_tensor_value_info("interest", tp.FLOAT, ["batch", dim])]
    if token_table is not None:
        tt = np.asarray(token_table, dtype=np.float32)
        inits.append(helper.make_tensor("T", tp.FLOAT, list(tt.shape), tt.tobytes(), raw=True))
        nodes += [
            helper.make_node("Gather", ["T", "query"], ["q_emb"], axis=0),
            helper.make_node("Greater", ["query", "zero"], ["q_nonpad"]),
            helper.make_node("Cast", ["q_nonpad"], ["q_mask"], to=tp.FLOAT),
            helper.make_node("Unsqueeze", ["q_mask", "axis2"], ["q_mask3"]),
            helper.make_node("Mul", ["q_emb", "q_mask3"], ["q_masked"]),
            helper.make_node("ReduceSum", ["q_masked", "axis1"], ["q_total"], keepdims=0),
            helper.make_node("ReduceSum", ["q_mask", "axis1"], ["q_count"], keepdims=1),
            helper.make_node("Max", ["q_count", "one"], ["q_denom"]),
            helper.make_node("Div", ["q_total", "q_denom"], ["query_vector"]),
        ]
        inputs.append(helper.make_tensor_value_info("query", tp.INT64, ["batch", query_max_len]))
        outputs.append(helper.make_tensor_value_info("query_vector", tp.FLOAT, ["batch", dim]))
    graph = helper.make_graph(nodes, "edgerec_interest", inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgerec-testing"
    )
    # Keep the IR version onnxruntime builds of the last two years accept, whatever onnx wrote by default.
    model.ir_version = min(int(model.ir_version), 8)
    data: bytes = model.SerializeToString()
    return data


def make_bundle(
    path: str | os.PathLike[str],
    *,
    n_items: int,
    dim: int,
    seed: int = 0,
    dtype: str = "int8",
    max_seq_len: int = 50,
    model_version: str | None = None,
    signing_key: str | bytes | None = None,
) -> Path:
    """Write a valid bundle with seeded random vectors, a synthetic catalog and a real interest model.

    Item vectors are standard normal; the model pools the *stored* vectors (dequantised for int8, rounded
    for float16), so ``interest(history=[r + 1]) == bundle.vectors.rows_f32([r]) @ W`` with
    ``W = I + 0.1 * N(0, 1)``. Ids are ``item-000001``...; columns title, category, brand, price and
    in_stock (about 90% True); popularity is a seeded permutation. ``path`` may be an empty directory.

    Args:
        path: bundle directory to create.
        n_items: number of items (1 to a few million).
        dim: vector dimension.
        seed: seeds everything random; equal seeds give equal content and ``model_version``.
        dtype: ``"int8"``, ``"float16"`` or ``"float32"``.
        max_seq_len: history length.
        model_version: default derived from the content.
        signing_key: sign the manifest with this key.

    Returns:
        The bundle directory.
    """
    if n_items <= 0 or dim <= 0:
        raise ValueError("n_items and dim must be positive")
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n_items, dim), dtype=np.float32)
    weights = (
        np.eye(dim, dtype=np.float32) + 0.1 * rng.standard_normal((dim, dim), dtype=np.float32)
    ).astype(np.float32)
    model = make_interest_model(_stored(vectors, dtype), max_seq_len=max_seq_len, weights=weights)
    out = Path(path)
    return write_bundle(
        out,
        model_bytes=model,
        vectors=vectors,
        catalog_ids=[f"item-{i:06d}" for i in range(1, n_items + 1)],
        catalog_columns=_columns(rng, n_items),
        popular=rng.permutation(n_items).astype(np.int64),
        vector_dtype=dtype,
        max_seq_len=max_seq_len,
        model_version=model_version,
        signing_key=signing_key,
        extra={"generator": "edgerec_sdk.testing.make_bundle", "seed": seed},
        overwrite=out.is_dir() and not any(out.iterdir()),
    )


_COLOURS: Final = ("red", "blue", "green", "black", "white", "pink", "gold", "silver")
_NOUNS: Final = ("lipstick", "shampoo", "lotion", "polish", "brush", "perfume", "serum", "mascara", "razor",
                 "candle")


def make_text_bundle(
    path: str | os.PathLike[str],
    *,
    n_items: int = 200,
    dim: int = 32,
    seed: int = 0,
    max_seq_len: int = 10,
    query_max_len: int = 8,
    model_version: str | None = None,
    signing_key: bytes | None = None,
) -> Path:
    """A bundle whose model has a text tower, like ``edgerec build`` makes from data with titles.

    Titles are ``"<colour> <noun> <n>"``; a tokenizer is trained on them; every word gets a seeded random
    embedding and an item's vector is a small random id part plus the mean embedding of its title's tokens,
    so a query naming a title's words lands on that item's neighbours. The model pools item vectors for the
    interest (as :func:`make_interest_model`) and returns the token mean as ``query_vector``.
    """
    from .._impl.text import encode_texts
    from ..train.text import train_tokenizer

    rng = np.random.default_rng(seed)
    titles = [f"{_COLOURS[rng.integers(len(_COLOURS))]} {_NOUNS[rng.integers(len(_NOUNS))]} {i}"
              for i in range(1, n_items + 1)]
    tok = train_tokenizer(titles, vocab_size=400)
    tokens = encode_texts(tok, titles, max_tokens=query_max_len)
    table = rng.standard_normal((tok.get_vocab_size(), dim), dtype=np.float32)
    table[0] = 0.0
    mask = (tokens > 0)[:, :, None]
    text = (table[tokens] * mask).sum(1) / np.maximum(mask.sum(1), 1)
    vectors = (0.1 * rng.standard_normal((n_items, dim), dtype=np.float32) + text).astype(np.float32)
    model = make_interest_model(_stored(vectors, "int8"), max_seq_len=max_seq_len, token_table=table,
                                query_max_len=query_max_len)
    columns = _columns(rng, n_items)
    columns["title"] = titles
    out = Path(path)
    return write_bundle(
        out, model_bytes=model, vectors=vectors, catalog_ids=[f"item-{i:06d}" for i in range(1, n_items + 1)],
        catalog_columns=columns, popular=rng.permutation(n_items).astype(np.int64), vector_dtype="int8",
        max_seq_len=max_seq_len, model_version=model_version, signing_key=signing_key,
        tokenizer_json=tok.to_str(), input_names={"history": "history", "query": "query"},
        output_names={"interest": "interest", "text": "query_vector"}, query_max_len=query_max_len,
        extra={"generator": "edgerec_sdk.testing.make_text_bundle", "seed": seed},
        overwrite=out.is_dir() and not any(out.iterdir()),
    )


def make_tiny_bundle(path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """A 20-item, 8-dim bundle: the smallest useful one for unit tests (``kwargs`` go to :func:`make_bundle`)."""
    kwargs.setdefault("n_items", 20)
    kwargs.setdefault("dim", 8)
    kwargs.setdefault("max_seq_len", 10)
    return make_bundle(path, **kwargs)


def _stored(vectors: NDArray[np.float32], dtype: str) -> NDArray[np.float32]:
    """The float32 values the bundle will serve, so the model and the index agree exactly."""
    if dtype == "int8":
        q, scales = quantize_rows_int8(vectors)
        out = np.empty(q.shape, dtype=np.float32)
        np.multiply(q, scales[:, None], out=out, dtype=np.float32)
        return out
    if dtype == "float16":
        return vectors.astype(np.float16).astype(np.float32)
    return vectors


def _columns(rng: np.random.Generator, n: int) -> dict[str, list[Any]]:
    k = len(_CATEGORIES)
    # One list per (first, second) pair, shared by the rows that draw it: cheap for million-row catalogs.
    combos = [
        [_CATEGORIES[a]] if a == b else [_CATEGORIES[a], _CATEGORIES[b]] for a in range(k) for b in range(k)
    ]
    pairs = rng.integers(0, k, size=n) * k + rng.integers(0, k, size=n)
    brand_names = [f"brand-{b:02d}" for b in range(_N_BRANDS)]
    return {
        "title": [f"Item {i}" for i in range(1, n + 1)],
        "category": [combos[p] for p in pairs.tolist()],
        "brand": [brand_names[b] for b in rng.integers(0, _N_BRANDS, size=n).tolist()],
        "price": np.round(rng.uniform(1.0, 200.0, size=n), 2).tolist(),
        "in_stock": (rng.random(n) >= 0.1).tolist(),
    }


def fork_probe(checks: Callable[[], Sequence[object]], *, timeout_s: float = 60.0) -> str:
    """Run ``checks`` in a forked child and return its verdict, one ``"1"``/``"0"`` per check.

    The child reports through a pipe, then exits the way an uncaught ``sys.exit`` ends a process: atexit
    hooks (the SDK's feedback flush among them), interpreter finalisation and the C libraries' exit handlers
    all run, so a child that would hang at exit (fault D21) is caught here. A child that raises or dies gives
    a verdict shorter than the checks plus ``"!exit"``; one that has not answered within ``timeout_s`` (a
    deadlock inherited across the fork) is killed and gives ``"!timeout"``; one that has answered but not
    exited by then is killed and adds ``"!hang"``: every caller's equality assertion then fails instead of
    hanging.
    """
    for stream in (sys.stdout, sys.stderr):  # else the child writes the parent's buffered output again
        stream.flush()
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.write(w, "".join("1" if c else "0" for c in checks()).encode())
            code = 0
        except BaseException:  # a short verdict and a non-zero exit tell the parent
            traceback.print_exc()
        finally:
            _exit_as_sys_exit(code)  # ``w`` stays open until the process has ended: its EOF marks the exit
    os.close(w)
    verdict, exited = b"", False
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0 and select.select([r], [], [], left)[0]:
            chunk = os.read(r, 1024)
            if not chunk:
                exited = True
                break
            verdict += chunk
    finally:
        os.close(r)
    if not exited:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return verdict.decode() + "!hang" if verdict else "!timeout"
    status = os.waitpid(pid, 0)[1]
    return verdict.decode() if status == 0 else verdict.decode() + "!exit"


def _exit_as_sys_exit(code: int) -> None:
    """End this (forked) process exactly as an uncaught ``SystemExit(code)`` would, and never return.

    CPython handles one by calling ``Py_Exit``: atexit hooks, finalisation, then C ``exit()`` with its
    handlers. Raising ``SystemExit`` here instead would unwind into the caller's frames, and a test runner
    forked with us would catch it and carry on running tests in the child.
    """
    try:
        ctypes.pythonapi.Py_Exit(ctypes.c_int(code))
    finally:
        os._exit(code if code else 1)  # only if Py_Exit were unavailable: it never returns
