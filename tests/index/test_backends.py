from __future__ import annotations

import numpy as np
import pytest

from edgerec_sdk.index import (
    NumpyExactIndex,
    OnnxTopKIndex,
    VectorIndex,
    _topk_graph,
    brute_force_topk,
    cuda_usable,
)

from .contract import IndexContract, quantize


class _Numpy(IndexContract):
    block_rows = 65536

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        return NumpyExactIndex(values, scales, block_rows=self.block_rows)

    def make_index(self, values_f32: np.ndarray, dtype: str) -> VectorIndex:
        return self.make_index_from_stored(*quantize(values_f32, dtype))


class _Onnx(IndexContract):
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        return OnnxTopKIndex(values, scales, providers=list(self.providers))

    def make_index(self, values_f32: np.ndarray, dtype: str) -> VectorIndex:
        return self.make_index_from_stored(*quantize(values_f32, dtype))


class TestNumpyFloat32(_Numpy):
    dtype = "float32"


class TestNumpyFloat32SmallBlocks(_Numpy):
    """Blocks smaller than the matrix: the running threshold and cross-block ties are exercised."""

    dtype = "float32"
    block_rows = 7


class TestNumpyInt8(_Numpy):
    dtype = "int8"
    exact = False


class TestNumpyInt8SmallBlocks(_Numpy):
    dtype = "int8"
    exact = False
    block_rows = 33


class TestNumpyFloat16(_Numpy):
    dtype = "float16"
    exact = False


class TestOnnxFloat32(_Onnx):
    dtype = "float32"


class TestOnnxInt8(_Onnx):
    dtype = "int8"
    exact = False


class TestOnnxFloat16(_Onnx):
    dtype = "float16"
    exact = False


class TestOnnxInt8Blocked(_Onnx):
    """The two-stage (block maxima) int8 graph that catalogs from BLOCKED_MIN_ROWS rows get, on small matrices."""

    dtype = "int8"
    exact = False

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        saved = _topk_graph.BLOCKED_MIN_ROWS
        _topk_graph.BLOCKED_MIN_ROWS = 1
        try:
            idx = OnnxTopKIndex(values, scales, providers=list(self.providers))
        finally:
            _topk_graph.BLOCKED_MIN_ROWS = saved
        assert idx._blocked == (values.dtype == np.int8)
        return idx


class _OnnxBound(_Onnx):
    """The I/O-binding path CUDA uses (item matrix in a bound OrtValue), run on the CPU provider."""

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        idx = OnnxTopKIndex(values, scales, providers=list(self.providers), bind_items=True)
        assert idx.bound and not idx.quantized_query
        return idx


class TestOnnxBoundFloat32(_OnnxBound):
    dtype = "float32"


class TestOnnxBoundInt8(_OnnxBound):
    dtype = "int8"
    exact = False


_NO_GPU = "no usable CUDA GPU (needs onnxruntime-gpu and an NVIDIA GPU)"


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_usable(), reason=_NO_GPU)
class TestOnnxCuda(_Onnx):
    dtype = "float32"
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_usable(), reason=_NO_GPU)
class TestOnnxCudaInt8(_Onnx):
    dtype = "int8"
    exact = False
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")


class TestOnnxInt8FromScores(_Onnx):
    """The path for sparse masks and short queries: all scores, masks as -inf, block-maximum selection."""

    dtype = "int8"
    exact = False

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        idx = OnnxTopKIndex(values, scales, providers=list(self.providers))
        idx.scores_path = True
        return idx


class TestOnnxFloat32FromScores(TestOnnxInt8FromScores):
    dtype = "float32"
    exact = True


class TestOnnxInt8BlockedFromScores(TestOnnxInt8Blocked):
    """All scores from the blocked graph's int32 output, its columns put back in row order."""

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        idx = super().make_index_from_stored(values, scales)
        assert isinstance(idx, OnnxTopKIndex)
        idx.scores_path = True
        return idx


def test_blocked_graph_answers_exactly_when_its_bound_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Far fewer blocks gathered than the check needs: it refuses most answers (those queries are ranked from
    all scores instead) and accepts some, and every answer equals the brute-force one."""
    from edgerec_sdk.index import onnx_topk

    monkeypatch.setattr(onnx_topk, "_SPARE_BLOCKS", -25)  # gather fetch - 24 blocks, not fetch + 5
    monkeypatch.setattr(_topk_graph, "BLOCKED_MIN_ROWS", 1)
    rng = np.random.default_rng(4)
    n = 100 * 256 + 17  # a partial last block: padding copies
    v8 = rng.integers(-127, 128, (n, 16), dtype=np.int8)
    s8 = rng.uniform(0.5, 2.0, n).astype(np.float32)
    idx = OnnxTopKIndex(v8, s8)
    assert idx._blocked
    q = rng.standard_normal((30, 16)).astype(np.float32)
    for k, step in ((1, n), (5, n), (5, 1999)):  # the last: ~13 exclusions a query, more blocks gathered
        excl = [np.arange(j, n, step) for j in range(30)]
        got = idx.search(q, k, exclude=excl)
        ref = brute_force_topk(v8, s8, q, k, exclude=excl)
        np.testing.assert_array_equal(got.rows, ref.rows)
    assert 0 < idx._rechecks < 90


def test_blocked_graph_overflow_is_redone_like_the_numpy_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose scale makes their score overflow float32: the blocked graph's bounds and candidates turn
    inf, the query is redone exactly in numpy, and the answer is the numpy kernel's (overflowing rows
    dropped), for one query and for a batch."""
    monkeypatch.setattr(_topk_graph, "BLOCKED_MIN_ROWS", 1)
    rng = np.random.default_rng(6)
    n = 100 * 256 + 3
    v8 = rng.integers(-127, 128, (n, 16), dtype=np.int8)
    s8 = rng.uniform(0.5, 2.0, n).astype(np.float32)
    big = [5, 700, 20_000]
    v8[big], s8[big] = 127, 1e36  # finite rows (1.27e38), scores past float32 for positive queries
    idx = OnnxTopKIndex(v8, s8)
    assert idx._blocked
    q = (np.abs(rng.standard_normal((4, 16))) + 0.1).astype(np.float32)
    ref = NumpyExactIndex(v8, s8).search(q, 10)
    np.testing.assert_array_equal(idx.search(q, 10).rows, ref.rows)
    assert not np.isin(ref.rows, big).any()
    for j in range(4):
        np.testing.assert_array_equal(idx.search(q[j : j + 1], 10).rows[0], ref.rows[j])


def test_two_stage_select_matches_a_full_sort() -> None:
    from edgerec_sdk.index.onnx_topk import _select

    rng = np.random.default_rng(0)
    s = rng.integers(-50, 50, (3, 5000)).astype(np.float32)  # many ties
    s[1, 4990:] = -np.inf
    for fetch in (1, 10, 300, 5000, 6000):
        vals, idx = _select(s, fetch)
        for j in range(3):
            order = np.lexsort((np.arange(5000), -s[j]))[: min(fetch, 5000)]
            np.testing.assert_array_equal(idx[j], order)
            np.testing.assert_array_equal(vals[j], s[j, order])
    bad = s.copy()
    bad[2, 7] = np.nan
    assert np.isnan(_select(bad, 5)[0][2]).any()


def test_sparse_and_unlucky_masks_still_fill_k() -> None:
    """A mask whose allowed rows all score low: TopK's extra candidates miss them, the rescue finds them."""
    rng = np.random.default_rng(9)
    vf = rng.standard_normal((3000, 16)).astype(np.float32)
    q = rng.standard_normal((2, 16)).astype(np.float32)
    order = np.argsort(-(vf @ q[0]))
    allow = np.zeros(3000, bool)
    allow[order[-400:]] = True  # the 400 worst rows for query 0 (dense enough to try TopK first)
    for dtype in ("float32", "int8"):
        v, s = quantize(vf, dtype)
        idx = OnnxTopKIndex(v, s)
        res = idx.search(q, 10, allow=allow, exclude=[order[-5:], np.array([], np.int64)])
        ref = NumpyExactIndex(v, s).search(q, 10, allow=allow, exclude=[order[-5:], np.array([], np.int64)])
        assert res.counts.tolist() == [10, 10]
        np.testing.assert_array_equal(res.rows, ref.rows)


@pytest.mark.parametrize("n", [1, 255, 256, 257, 300, 1000])
def test_int8_block_graph_never_returns_padding_rows_even_when_every_score_is_negative(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocked int8 graph pads the catalog to whole blocks with zero-score rows; they must not displace
    real rows."""
    monkeypatch.setattr(_topk_graph, "BLOCKED_MIN_ROWS", 1)
    rng = np.random.default_rng(n)
    q = rng.standard_normal((2, 16)).astype(np.float32)
    base = -np.abs(rng.standard_normal((n, 16))).astype(np.float32)
    v = base * np.sign(q[0])[None, :]  # every row scores negative for the first query
    v8, s8 = quantize(v, "int8")
    idx = OnnxTopKIndex(v8, s8)
    assert idx.quantized_query and idx._blocked
    ref = brute_force_topk(v8, s8, q, 10)
    got = idx.search(q, 10)
    assert (got.scores[0][: got.counts[0]] < 0).all()
    assert got.rows.tolist() == ref.rows.tolist()
    assert (got.counts == min(10, n)).all()
    excl = [np.arange(0, n, 2), np.array([], np.int64)]
    ref = brute_force_topk(v8, s8, q, 10, exclude=excl)
    assert idx.search(q, 10, exclude=excl).rows.tolist() == ref.rows.tolist()
