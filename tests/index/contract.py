"""The contract every top-K backend meets ("Kernels share one contract").

Subclasses provide ``make_index(values_f32, dtype)``; ``dtype`` is "int8", "float16" or "float32".
Approximate backends (IVF) set ``approximate = True``: answers that depend on *which* rows were considered
are then checked against recall thresholds (``min_recall``) instead of exact sets; everything else (shapes,
order, masks, exclusions, ties, errors) is the same contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgerec_sdk.index import SearchResult, VectorIndex, brute_force_topk


def quantize(values_f32: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Store ``values_f32`` as the SDK would: int8 with per-row scales, or a float dtype."""
    if dtype == "int8":
        amax = np.abs(values_f32).max(axis=1)
        scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        return np.round(values_f32 / scales[:, None]).astype(np.int8), scales
    return values_f32.astype(dtype), None


class IndexContract:
    dtype = "float32"
    exact = True  # float32 storage: identical top-K sets to the float64 reference
    approximate = False  # approximate search: recall thresholds instead of exact answers
    min_recall = 0.99  # recall@10 against the float64 reference, for non-exact backends

    def make_index(self, values_f32: np.ndarray, dtype: str) -> VectorIndex:
        raise NotImplementedError

    # helpers -------------------------------------------------------------------------------------------
    def build(self, values_f32: np.ndarray) -> tuple[VectorIndex, np.ndarray, np.ndarray | None]:
        return self.make_index(values_f32, self.dtype), *quantize(values_f32, self.dtype)

    @staticmethod
    def check_shape(res: SearchResult, b: int, width: int) -> None:
        assert res.rows.shape == (b, width) and res.rows.dtype == np.int64
        assert res.scores.shape == (b, width) and res.scores.dtype == np.float32
        assert res.counts.shape == (b,) and res.counts.dtype == np.int64
        for i in range(b):
            c = res.counts[i]
            assert (res.rows[i, c:] == -1).all() and np.isneginf(res.scores[i, c:]).all()
            assert np.isfinite(res.scores[i, :c]).all()
            assert (np.diff(res.scores[i, :c]) <= 0).all()

    # tests ---------------------------------------------------------------------------------------------
    def test_protocol_and_attrs(self) -> None:
        idx = self.make_index(np.eye(5, dtype=np.float32), self.dtype)
        assert isinstance(idx, VectorIndex)
        assert (idx.n_items, idx.dim) == (5, 5) and isinstance(idx.name, str)

    def test_known_answers(self) -> None:
        n = 20
        v = np.eye(n, dtype=np.float32) * 2 + 0.01
        idx = self.make_index(v, self.dtype)
        res = idx.search(np.eye(n, dtype=np.float32), 3)
        self.check_shape(res, n, 3)
        assert res.rows[:, 0].tolist() == list(range(n))

    @pytest.mark.parametrize("n,d", [(1, 3), (11, 97), (77, 256), (11, 3), (77, 97)])
    @pytest.mark.parametrize("k", [1, 5, 100])
    def test_odd_sizes(self, n: int, d: int, k: int) -> None:
        rng = np.random.default_rng(n * 1000 + d)
        vf = rng.standard_normal((n, d)).astype(np.float32)
        idx, v, s = self.build(vf)
        q = rng.standard_normal((3, d)).astype(np.float32)
        res = idx.search(q, k)
        width = min(k, n)
        self.check_shape(res, 3, width)
        assert res.counts.tolist() == [width] * 3
        ref = brute_force_topk(v, s, q, k)
        if self.exact:
            assert [set(r) for r in res.rows] == [set(r) for r in ref.rows]
        else:
            assert res.rows[:, 0].tolist() == ref.rows[:, 0].tolist() or n > 1

    def test_k_larger_than_n_does_not_allocate_k(self) -> None:
        idx = self.make_index(np.eye(4, dtype=np.float32), self.dtype)
        res = idx.search(np.ones((2, 4), np.float32), 10**12)
        self.check_shape(res, 2, 4)
        assert res.counts.tolist() == [4, 4]

    def test_exclude_and_allow(self) -> None:
        rng = np.random.default_rng(1)
        vf = rng.standard_normal((300, 16)).astype(np.float32)
        idx, v, s = self.build(vf)
        q = rng.standard_normal((4, 16)).astype(np.float32)
        top = brute_force_topk(v, s, q, 5).rows
        exclude = [top[0], np.array([], np.int64), np.array([-1, 10**9, top[2, 0]]), top[3, :2]]
        allow = rng.random(300) > 0.4
        res = idx.search(q, 10, exclude=exclude, allow=allow)
        ref = brute_force_topk(v, s, q, 10, exclude=exclude, allow=allow)
        self.check_shape(res, 4, 10)
        assert res.counts.tolist() == [10] * 4  # masks applied inside: still k rows
        for i in range(4):
            got = res.rows[i, : res.counts[i]]
            assert allow[got].all()
            assert not np.isin(got, exclude[i]).any()
        if self.approximate:
            assert self.recall(res, ref) >= self.min_recall
        else:
            assert res.rows[:, 0].tolist() == ref.rows[:, 0].tolist()

    def test_allow_leaves_fewer_than_k(self) -> None:
        vf = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
        idx = self.make_index(vf, self.dtype)
        allow = np.zeros(50, bool)
        allow[[3, 7, 40]] = True
        res = idx.search(vf[:2], 10, exclude=[np.array([7]), np.array([], np.int64)], allow=allow)
        self.check_shape(res, 2, 10)
        assert res.counts.tolist() == [2, 3]
        assert set(res.rows[0, :2]) == {3, 40} and set(res.rows[1, :3]) == {3, 7, 40}
        none = idx.search(vf[:1], 3, allow=np.zeros(50, bool))
        assert none.counts.tolist() == [0] and (none.rows == -1).all()

    def test_nonfinite_queries_return_nothing(self) -> None:
        vf = np.random.default_rng(3).standard_normal((40, 8)).astype(np.float32)
        idx = self.make_index(vf, self.dtype)
        q = vf[:3].copy()
        q[0, 2] = np.nan
        q[2, 0] = np.inf
        res = idx.search(q, 5)
        self.check_shape(res, 3, 5)
        assert res.counts.tolist() == [0, 5, 0]
        assert res.rows[1, 0] == 1 or not self.exact

    def test_one_query_requests_answer_like_batches(self) -> None:
        """A one-query request (the web request, which a backend may serve by a shorter route) gets what
        the same query gets inside a batch: masks, exclusions, a k past the catalog and bad values too."""
        rng = np.random.default_rng(6)
        vf = rng.standard_normal((400, 16)).astype(np.float32)
        idx = self.make_index(vf, self.dtype)
        q = rng.standard_normal((5, 16)).astype(np.float32)
        q[1, 3] = np.nan
        q[2, 0] = -np.inf
        allow = rng.random(400) < 0.6
        # duplicates and out-of-range rows too (ignored by contract)
        excl = [np.concatenate([rng.integers(0, 400, 15), [-1, 10**9, 7, 7]]) for _ in range(5)]
        for masks in ({}, {"allow": allow}, {"exclude": excl}, {"allow": allow, "exclude": excl}):
            for k in (1, 10, 500):
                batch = idx.search(q, k, **masks)
                for i in range(5):
                    own = dict(masks, exclude=[excl[i]]) if "exclude" in masks else masks
                    one = idx.search(q[i : i + 1], k, **own)
                    self.check_shape(one, 1, min(k, 400))
                    assert one.counts[0] == batch.counts[i]
                    np.testing.assert_array_equal(one.rows[0], batch.rows[i])
                    np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-5, atol=1e-5)

    def test_ties_break_by_lower_row(self) -> None:
        # Integer-valued rows: every score is exact in float32, duplicates tie bitwise.
        base = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], np.float32)
        v = np.concatenate([base, base, base])  # rows i, i+4, i+8 identical
        idx = self.make_index(v, self.dtype)
        res = idx.search(np.array([[1, 1, 0, 0]], np.float32), 6)
        assert res.rows[0].tolist() == [2, 6, 10, 0, 1, 4]

    def test_batch_equals_loop(self) -> None:
        rng = np.random.default_rng(4)
        vf = rng.standard_normal((500, 32)).astype(np.float32)
        idx = self.make_index(vf, self.dtype)
        q = rng.standard_normal((7, 32)).astype(np.float32)
        excl = [rng.integers(0, 500, 20) for _ in range(7)]
        batch = idx.search(q, 12, exclude=excl)
        for i in range(7):
            one = idx.search(q[i : i + 1], 12, exclude=[excl[i]])
            np.testing.assert_array_equal(one.rows[0], batch.rows[i])
            np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-5, atol=1e-5)

    def test_parity_with_brute_force(self) -> None:
        rng = np.random.default_rng(5)
        n, d = 5000, 64
        vf = rng.standard_normal((n, d)).astype(np.float32)
        idx, v, s = self.build(vf)
        q = rng.standard_normal((50, d)).astype(np.float32)
        res = idx.search(q, 10)
        ref = brute_force_topk(v, s, q, 10)
        recall = self.recall(res, ref)
        if self.exact:
            gaps = np.diff(-np.sort(-(vf.astype(np.float64) @ q.T.astype(np.float64)), axis=0)[9:11], axis=0)
            assert (np.abs(gaps) > 1e-4).all()  # no near-ties at the boundary: sets must match
            assert recall == 1.0
            np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-4, atol=1e-4)
        else:
            assert recall >= self.min_recall
            np.testing.assert_allclose(res.scores, self.rescored(v, s, q, res.rows), rtol=1e-4, atol=1e-4)
            if self.dtype == "float16" and not self.approximate:  # float16 storage vs the float32 original
                orig = brute_force_topk(vf, None, q, 10)
                r2 = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.rows, orig.rows, strict=True)])
                assert r2 >= 0.99

    def test_memmap_read_only(self, tmp_path: Any) -> None:
        rng = np.random.default_rng(6)
        vf = rng.standard_normal((300, 16)).astype(np.float32)
        v, s = quantize(vf, self.dtype)
        path = tmp_path / "items.npy"
        np.save(path, v)
        mm = np.load(path, mmap_mode="r")
        assert not mm.flags.writeable
        idx = self.make_index_from_stored(mm, s)
        q = rng.standard_normal((2, 16)).astype(np.float32)
        res = idx.search(q, 5, exclude=[np.array([0]), np.array([1])], allow=np.ones(300, bool))
        ref = brute_force_topk(v, s, q, 5, exclude=[np.array([0]), np.array([1])])
        if self.approximate:
            assert self.recall(res, ref) >= self.min_recall
        else:
            assert res.rows[:, 0].tolist() == ref.rows[:, 0].tolist()

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        raise NotImplementedError

    @staticmethod
    def recall(res: SearchResult, ref: SearchResult) -> float:
        k = ref.rows.shape[1]
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(res.rows, ref.rows, strict=True)]))

    @staticmethod
    def rescored(v: np.ndarray, s: np.ndarray | None, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The contract scores of ``rows`` (returned scores must be these, approximate search or not)."""
        vf = v.astype(np.float64) * (s.astype(np.float64)[:, None] if s is not None else 1.0)
        return np.einsum("bkd,bd->bk", vf[rows], q.astype(np.float64)).astype(np.float32)

    @pytest.mark.parametrize("k", [0, -3])
    def test_bad_k(self, k: int) -> None:
        idx = self.make_index(np.eye(3, dtype=np.float32), self.dtype)
        with pytest.raises(ValueError):
            idx.search(np.eye(3, dtype=np.float32), k)

    def test_bool_or_float_k(self) -> None:
        idx = self.make_index(np.eye(3, dtype=np.float32), self.dtype)
        with pytest.raises(TypeError):
            idx.search(np.eye(3, dtype=np.float32), True)
        with pytest.raises(TypeError):
            idx.search(np.eye(3, dtype=np.float32), 2.0)  # type: ignore[arg-type]

    @pytest.mark.parametrize("shape", [(3,), (1, 4), (2, 2), (1, 1, 3)])
    def test_bad_query_shape(self, shape: tuple[int, ...]) -> None:
        idx = self.make_index(np.eye(3, dtype=np.float32), self.dtype)
        with pytest.raises(ValueError):
            idx.search(np.zeros(shape, np.float32), 1)

    def test_bad_masks(self) -> None:
        idx = self.make_index(np.eye(3, dtype=np.float32), self.dtype)
        q = np.eye(3, dtype=np.float32)
        with pytest.raises(ValueError):
            idx.search(q, 1, allow=np.ones(4, bool))
        with pytest.raises(ValueError):
            idx.search(q, 1, allow=np.ones(3, np.int64))  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            idx.search(q, 1, exclude=[np.array([0])])
