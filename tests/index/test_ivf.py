"""The approximate IVF index: the shared contract (with recall thresholds), recall, expansion, layout checks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edgerec_sdk.bundle import quantize_rows_int8
from edgerec_sdk.index import (
    IvfIndex,
    IvfLayout,
    NumpyExactIndex,
    OnnxTopKIndex,
    VectorIndex,
    brute_force_topk,
    build_ivf,
    default_nlist,
    make_index,
)

from .contract import IndexContract, quantize


def clustered(n: int, d: int, *, centers: int, seed: int, spread: float = 0.6) -> np.ndarray:
    """Vectors drawn around ``centers`` Gaussian centres: the shape learned item embeddings have."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32)
    return (c[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


class _Ivf(IndexContract):
    approximate = True
    exact = False
    min_recall = 0.85  # i.i.d. Gaussian rows and queries: the hardest case for any partition
    probe_fraction = 0.75  # the contract runs on i.i.d. Gaussian data; recall on clustered data is below

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        if values.dtype == np.int8:
            assert scales is not None
            v8, s8, exact = values, scales, None
        else:
            v8, s8 = quantize_rows_int8(np.asarray(values, dtype=np.float32))
            exact = values
        nlist = default_nlist(values.shape[0])
        layout = build_ivf(v8, s8, nlist=nlist, nprobe=max(1, round(nlist * self.probe_fraction)))
        return IvfIndex(layout, exact_values=exact)

    def make_index(self, values_f32: np.ndarray, dtype: str) -> VectorIndex:
        return self.make_index_from_stored(*quantize(values_f32, dtype))


class TestIvfInt8(_Ivf):
    dtype = "int8"


class TestIvfFloat32Rescored(_Ivf):
    """Float bundles: int8 lists, the best candidates rescored from the stored float32 rows."""

    dtype = "float32"


# ------------------------------------------------------------------------------------------ recall


@pytest.fixture(scope="module")
def catalog() -> tuple[np.ndarray, np.ndarray, IvfLayout, np.ndarray]:
    x = clustered(20_000, 32, centers=100, seed=7)
    v, s = quantize_rows_int8(x)
    layout = build_ivf(v, s, seed=1)
    q = clustered(100, 32, centers=100, seed=7)  # same centres (same seed), fresh draws of the noise
    q = q + 0.3 * np.random.default_rng(8).standard_normal(q.shape).astype(np.float32)
    return v, s, layout, q


def test_tuned_nprobe_reaches_recall_on_clustered_data(catalog: tuple) -> None:
    v, s, layout, q = catalog
    assert 1 <= layout.nprobe < layout.nlist // 2  # tuning found a real cut, not "scan everything"
    truth = NumpyExactIndex(v, s).search(q, 10)
    got = IvfIndex(layout).search(q, 10)
    assert IndexContract.recall(got, truth) >= 0.95
    np.testing.assert_allclose(got.scores, IndexContract.rescored(v, s, q, got.rows), rtol=1e-4, atol=1e-4)


def test_probing_every_list_is_exact(catalog: tuple) -> None:
    v, s, layout, q = catalog
    got = IvfIndex(layout, nprobe=layout.nlist).search(q, 10)
    truth = NumpyExactIndex(v, s).search(q, 10)
    np.testing.assert_array_equal(got.rows, truth.rows)


def test_restrictive_allow_still_fills_k(catalog: tuple) -> None:
    """A filter that leaves few rows far from the query: more lists are probed until k rows are found."""
    v, s, layout, q = catalog
    allow = np.zeros(v.shape[0], bool)
    allow[np.random.default_rng(3).choice(v.shape[0], 40, replace=False)] = True
    res = IvfIndex(layout, nprobe=1).search(q[:5], 10, allow=allow)
    assert res.counts.tolist() == [10] * 5
    assert allow[res.rows].all()
    ref = brute_force_topk(v, s, q[:5], 10, allow=allow)
    assert IndexContract.recall(res, ref) >= 0.9


def test_exclusions_applied_inside(catalog: tuple) -> None:
    _v, _s, layout, q = catalog
    idx = IvfIndex(layout)
    first = idx.search(q[:4], 20)
    excl = [first.rows[i, :15] for i in range(4)]
    res = idx.search(q[:4], 10, exclude=excl)
    assert res.counts.tolist() == [10] * 4
    for i in range(4):
        assert not np.isin(res.rows[i], excl[i]).any()
        np.testing.assert_array_equal(res.rows[i, :5], first.rows[i, 15:20])


class _CountingIvf(IvfIndex):
    """Counts the queries the general probing loop answered (the one-round fast path answers the rest)."""

    general = 0

    def _one(self, *args: Any, **kwargs: Any) -> None:
        self.general += 1
        super()._one(*args, **kwargs)


class _GeneralOnlyIvf(IvfIndex):
    def _fast(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize("case", ["plain", "exclude", "allow", "exclude+allow", "k100"])
def test_fast_path_gives_the_general_answer(catalog: tuple, case: str) -> None:
    """The one-round path must return what the general loop returns, row for row."""
    _v, _s, layout, q = catalog
    rng = np.random.default_rng(11)
    n = layout.n_items
    k = 100 if case == "k100" else 10
    excl = [rng.choice(n, 30, replace=False) for _ in range(len(q))] if "exclude" in case else None
    if excl is not None:  # exclude some of each query's true best rows too, so exclusion really bites
        best = IvfIndex(layout).search(q, 5).rows
        excl = [np.concatenate([e, best[i]]) for i, e in enumerate(excl)]
    allow = rng.random(n) < 0.7 if "allow" in case else None
    fast = _CountingIvf(layout)
    got = fast.search(q, k, exclude=excl, allow=allow)
    want = _GeneralOnlyIvf(layout).search(q, k, exclude=excl, allow=allow)
    assert fast.general < len(q) // 10  # the fast path answered nearly all of them
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    np.testing.assert_array_equal(got.counts, want.counts)
    fast.general = 0
    for i in range(len(q)):  # one-query requests take their own route to the same path
        one = fast.search(q[i : i + 1], k, exclude=None if excl is None else [excl[i]], allow=allow)
        np.testing.assert_array_equal(one.rows[0], want.rows[i])
        np.testing.assert_allclose(one.scores[0], want.scores[i], rtol=1e-6)
    assert fast.general < len(q) // 10


def test_fast_path_hands_ties_and_short_lists_to_the_general_loop() -> None:
    """A tie across the k boundary, or too few eligible rows, must reach the general loop, which breaks
    ties by the lower row and probes further."""
    base = clustered(40, 16, centers=4, seed=3)
    v, s = quantize_rows_int8(np.tile(base, (50, 1)))  # every row has 49 bitwise-equal copies
    layout = build_ivf(v, s, nlist=8, nprobe=2, seed=1)
    q = base[:6] + 0.1
    idx = _CountingIvf(layout)
    got = idx.search(q, 10)
    assert idx.general == len(q)  # every top-10 ends inside a run of 50 tied copies
    for i in range(len(q)):
        r, sc = got.rows[i], got.scores[i]
        assert all(sc[j] > sc[j + 1] or r[j] < r[j + 1] for j in range(9))
    few = np.zeros(layout.n_items, bool)
    few[:5] = True  # 5 eligible rows: no probe of two lists can find 10
    idx.general = 0
    res = idx.search(q[:2], 10, allow=few)
    assert idx.general == 2 and res.counts.tolist() == [5, 5]
    idx.general = 0
    one = idx.search(q[:1], 10, allow=few)  # and so must a one-query request's
    assert idx.general == 1 and one.counts.tolist() == [5] and one.rows[0].tolist() == res.rows[0].tolist()


def test_threads_share_one_index(catalog: tuple) -> None:
    _, _, layout, q = catalog
    idx = IvfIndex(layout)
    want = idx.search(q, 10).rows
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: idx.search(q[i : i + 1], 10).rows[0], range(len(q))))
    np.testing.assert_array_equal(np.stack(got), want)


def test_build_is_deterministic(catalog: tuple) -> None:
    v, s, layout, _ = catalog
    again = build_ivf(v, s, seed=1)
    np.testing.assert_array_equal(again.order, layout.order)
    np.testing.assert_array_equal(again.offsets, layout.offsets)
    assert again.nprobe == layout.nprobe
    np.testing.assert_array_equal(layout.values, v[layout.order])


# ------------------------------------------------------------------------------------------ errors


def test_layout_check_refuses_bad_layouts(catalog: tuple) -> None:
    _, _, layout, _ = catalog
    bad_order = layout.order.copy()
    bad_order[0] = bad_order[1]
    bad_offsets = layout.offsets.copy()
    bad_offsets[-1] -= 1
    nan_c = layout.centroids.copy()
    nan_c[0, 0] = np.nan
    for broken in (
        replace(layout, order=bad_order),
        replace(layout, offsets=bad_offsets),
        replace(layout, centroids=nan_c),
        replace(layout, nprobe=0),
        replace(layout, scales=-layout.scales),
        replace(layout, order=layout.order.astype(np.int64)),
    ):
        with pytest.raises(ValueError):
            IvfIndex(broken)


def test_bad_build_arguments() -> None:
    v = np.ones((10, 4), np.int8)
    s = np.ones(10, np.float32)
    with pytest.raises(ValueError):
        build_ivf(v.astype(np.float32), s)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_ivf(v, s, nlist=11)
    with pytest.raises(ValueError):
        build_ivf(v, s, nprobe=0)
    with pytest.raises(ValueError):
        IvfIndex(build_ivf(v, s, nlist=2), nprobe=0)


def test_default_nlist() -> None:
    assert default_nlist(1) == 1
    assert default_nlist(1_000_000) == 2000
    assert all(default_nlist(n) * 32 <= max(n, 32) for n in (5, 100, 10_000, 123_457))


# ------------------------------------------------------------------------------------------ factory


def test_make_index_picks_ivf_above_threshold(catalog: tuple) -> None:
    v, s, layout, _ = catalog
    assert isinstance(make_index(v, s, ivf=layout, ann_min_items=1000), IvfIndex)
    small = make_index(v, s, ivf=layout, ann_min_items=10**6)
    assert isinstance(small, NumpyExactIndex | OnnxTopKIndex)
    assert isinstance(make_index(v, s, ivf=layout, backend="numpy"), NumpyExactIndex)
    forced = make_index(v, s, ivf=layout, backend="ivf", ann_min_items=10**6, nprobe=3)
    assert isinstance(forced, IvfIndex) and forced.nprobe == 3
    with pytest.raises(ValueError):
        make_index(v, s, backend="ivf")
    with pytest.raises(ValueError):
        make_index(v[:100], s[:100], ivf=layout)
