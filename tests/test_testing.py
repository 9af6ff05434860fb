from __future__ import annotations

import atexit
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.testing import fork_probe, make_bundle, make_interest_model, make_tiny_bundle


def _session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _reference(
    table: np.ndarray, history: np.ndarray, weights: np.ndarray | None, decay: float | None = None
) -> np.ndarray:
    """numpy reimplementation of the interest model: (weighted) mean of non-padding rows, then @ W."""
    full = np.vstack([np.zeros((1, table.shape[1]), np.float32), table])
    seq_len = history.shape[1]
    pos_w = np.ones(seq_len) if decay is None else decay ** np.arange(seq_len - 1, -1, -1)
    mask = (history > 0) * pos_w
    pooled = (full[history] * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
    out: np.ndarray = pooled @ weights if weights is not None else pooled
    return out


def _histories(rng: np.random.Generator, n_items: int, batch: int, seq_len: int) -> np.ndarray:
    h = rng.integers(1, n_items + 1, size=(batch, seq_len))
    for i, length in enumerate(rng.integers(0, seq_len + 1, size=batch)):
        h[i, : seq_len - length] = 0  # left padding
    h[0] = 0  # an empty history
    return h.astype(np.int64)


@pytest.mark.parametrize("dtype", ["int8", "float16", "float32"])
def test_make_bundle_model_matches_numpy(tmp_path: Path, dtype: str) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b", n_items=50, dim=16, dtype=dtype, max_seq_len=12, seed=7))
    model = onnx.load_from_string(bundle.model_bytes)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    weights = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W"))
    history = _histories(np.random.default_rng(0), 50, 9, 12)
    got = _session(bundle.model_bytes).run(["interest"], {"history": history})[0]
    assert got.shape == (9, 16) and got.dtype == np.float32
    expected = _reference(bundle.vectors.dense_f32(), history, weights)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[0], 0.0)
    # the model pools exactly the vectors the bundle serves
    one = np.zeros((1, 12), np.int64)
    one[0, -1] = 5
    np.testing.assert_allclose(
        _session(bundle.model_bytes).run(None, {"history": one})[0][0],
        bundle.vectors.rows_f32(np.array([4]))[0] @ weights,
        rtol=1e-5,
        atol=1e-6,
    )
    ids = bundle.catalog.ids
    assert ids[0] == "item-000001" and ids[-1] == "item-000050"
    assert sorted(bundle.popular.tolist()) == list(range(50))
    assert set(bundle.catalog.column_names) == {"title", "category", "brand", "price", "in_stock"}
    assert sum(v for v in bundle.catalog.columns["in_stock"]) > 30


def test_make_interest_model_recency_decay() -> None:
    rng = np.random.default_rng(3)
    table = rng.standard_normal((20, 6)).astype(np.float32)
    history = _histories(rng, 20, 7, 8)
    model = make_interest_model(table, max_seq_len=8, recency_decay=0.8)
    got = _session(model).run(None, {"history": history})[0]
    np.testing.assert_allclose(got, _reference(table, history, None, decay=0.8), rtol=1e-5, atol=1e-6)


def test_make_interest_model_refuses_bad_arguments() -> None:
    table = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError):
        make_interest_model(table, max_seq_len=0)
    with pytest.raises(ValueError):
        make_interest_model(table, max_seq_len=2, weights=np.ones((3, 3), np.float32))
    with pytest.raises(ValueError):
        make_interest_model(table, max_seq_len=2, recency_decay=1.5)


def test_make_bundle_is_fast_and_deterministic(tmp_path: Path) -> None:
    start = time.perf_counter()
    path = make_bundle(tmp_path / "b", n_items=1000, dim=32)
    assert time.perf_counter() - start < 1.0
    again = make_bundle(tmp_path / "c", n_items=1000, dim=32)
    assert load_bundle(path).model_version == load_bundle(again).model_version


def test_make_bundle_into_empty_existing_dir_and_tiny(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert load_bundle(make_bundle(tmp_path / "empty", n_items=3, dim=2)).manifest.n_items == 3
    tiny = load_bundle(make_tiny_bundle(tmp_path / "tiny", signing_key=b"k"), signing_key=b"k")
    assert (tiny.manifest.n_items, tiny.manifest.dim) == (20, 8)


def test_fork_probe_reports_checks_failures_and_a_hung_child() -> None:
    assert fork_probe(lambda: [True, 0, "x"]) == "101"
    assert fork_probe(lambda: [1 / 0]).endswith("!exit")
    assert fork_probe(lambda: [threading.Event().wait()], timeout_s=0.5) == "!timeout"  # never set: killed


def test_d21_fork_probe_child_exits_like_sys_exit_and_a_hang_at_exit_fails(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    # atexit hooks and a non-zero status, as after an uncaught sys.exit: the child's own hook runs.
    assert fork_probe(lambda: [atexit.register(marker.touch) is not None]) == "1"
    assert marker.exists()
    # A child that answers and then blocks at exit (what onnxruntime's destructors did) is a failure.
    assert fork_probe(lambda: [atexit.register(threading.Event().wait) is not None], timeout_s=1.0) == "1!hang"
