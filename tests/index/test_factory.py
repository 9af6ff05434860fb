from __future__ import annotations

import logging

import numpy as np
import pytest

import edgerec_sdk.index as index_pkg
from edgerec_sdk.errors import ModelLoadError
from edgerec_sdk.index import (
    AUTO_ONNX_MIN_ROWS,
    NumpyExactIndex,
    OnnxTopKIndex,
    SearchResult,
    make_index,
    onnx_topk,
)


def test_exports() -> None:
    assert len(set(index_pkg.__all__)) == len(index_pkg.__all__)  # ruff (RUF022) keeps it sorted
    for name in index_pkg.__all__:
        assert hasattr(index_pkg, name)
    assert isinstance(index_pkg.HAS_CUDA, bool)


def test_make_index_backends() -> None:
    v = np.eye(4, dtype=np.float32)
    assert isinstance(make_index(v, backend="numpy"), NumpyExactIndex)
    assert isinstance(make_index(v, backend="onnx"), OnnxTopKIndex)
    assert isinstance(make_index(v), NumpyExactIndex)  # small: numpy
    with pytest.raises(ValueError):
        make_index(v, backend="faiss")  # type: ignore[arg-type]


def test_auto_picks_onnx_for_large_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgerec_sdk.index.factory.AUTO_ONNX_MIN_ROWS", 8)
    v = np.ones((10, 4), np.int8)
    assert isinstance(make_index(v, np.ones(10, np.float32)), OnnxTopKIndex)
    assert isinstance(make_index(v.astype(np.float32)), NumpyExactIndex)
    assert AUTO_ONNX_MIN_ROWS > 8


@pytest.mark.parametrize(
    "values,scales",
    [
        (np.ones((3, 2), np.int8), None),
        (np.ones((3, 2), np.int8), np.ones(2, np.float32)),
        (np.ones((3, 2), np.float32), np.ones(3, np.float32)),
        (np.ones((3, 2), np.float64), None),
        (np.ones(3, np.float32), None),
        (np.ones((0, 2), np.float32), None),
    ],
)
def test_bad_values(values: np.ndarray, scales: np.ndarray | None) -> None:
    with pytest.raises(ValueError):
        make_index(values, scales, backend="numpy")


def test_bad_construction_args() -> None:
    with pytest.raises(ValueError):
        NumpyExactIndex(np.eye(2, dtype=np.float32), block_rows=0)
    with pytest.raises(ValueError):
        OnnxTopKIndex(np.eye(2, dtype=np.float32), intra_op_threads=0)


def test_session_errors_become_model_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_topk, "_build_graph", lambda *a, **kw: b"not a model")
    with pytest.raises(ModelLoadError):
        OnnxTopKIndex(np.eye(2, dtype=np.float32))


def test_graph_is_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    for values, scales, int8 in (
        (np.eye(3, dtype=np.float32), None, False),
        (np.eye(3, dtype=np.int8), np.ones(3, np.float32), True),
    ):
        model = onnx.load_from_string(onnx_topk._build_graph(values, scales, int8=int8))
        onnx.checker.check_model(model)
        ops = [n.op_type for n in model.graph.node]
        assert ops[-1] == "TopK"


def test_overflow_scores_are_dropped_not_returned() -> None:
    big = np.array([[3e38, 3e38], [1.0, 0.0], [0.0, 1.0]], np.float32)
    q = np.array([[10.0, 10.0]], np.float32)
    for idx in (NumpyExactIndex(big), NumpyExactIndex(big, block_rows=1), OnnxTopKIndex(big)):
        res = idx.search(q, 3)
        assert isinstance(res, SearchResult)
        assert res.counts.tolist() == [2]
        assert res.rows[0, :2].tolist() == [1, 2]


def test_no_warnings_logged_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgerec_sdk.index"):
        OnnxTopKIndex(np.eye(3, dtype=np.float32), providers=["CPUExecutionProvider"])
    assert not caplog.records


def test_blas_thread_check(caplog: pytest.LogCaptureFixture) -> None:
    from edgerec_sdk._impl import log as _log
    from edgerec_sdk.index._blas import blas_threads, check_blas_threads

    assert blas_threads({"OPENBLAS_NUM_THREADS": "1"}) == 1
    assert blas_threads({"OMP_NUM_THREADS": "4"}) == 4
    assert blas_threads({}) is None
    assert not check_blas_threads({"OPENBLAS_NUM_THREADS": "1"}, cpu_count=8)
    assert not check_blas_threads({}, cpu_count=1)
    _log.reset_warnings()
    with caplog.at_level(logging.WARNING, logger="edgerec_sdk.index"):
        assert not check_blas_threads({"MKL_NUM_THREADS": "2"}, cpu_count=8, server=False)  # CLI: no warning
        assert check_blas_threads({"MKL_NUM_THREADS": "2"}, cpu_count=8, server=True)
        assert not check_blas_threads({"MKL_NUM_THREADS": "2"}, cpu_count=8, server=True)  # once per process
    assert len(caplog.records) == 1 and "OPENBLAS_NUM_THREADS=1" in caplog.records[0].getMessage()
