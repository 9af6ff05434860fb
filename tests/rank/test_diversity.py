"""MMR diversity: the knob trades relevance for coverage, zero keeps the relevance order, the cap holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec_sdk.rank.diversity import blended_similarity, diversity_vectors, intra_list_similarity, mmr_order


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16))
    vectors = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(40, 16))
    relevance = np.concatenate([np.linspace(1.0, 0.9, 10), np.linspace(0.8, 0.7, 10),
                                np.linspace(0.6, 0.5, 10), np.linspace(0.4, 0.3, 10)])
    return vectors.astype(np.float32), relevance


def test_zero_diversity_is_the_relevance_order() -> None:
    vectors, relevance = _clusters()
    assert mmr_order(vectors, relevance, 10, diversity=0.0).tolist() == list(range(10))


def test_diversity_covers_more_clusters_and_lowers_similarity() -> None:
    vectors, relevance = _clusters()
    plain = mmr_order(vectors, relevance, 8, diversity=0.0)
    mixed = mmr_order(vectors, relevance, 8, diversity=0.5)
    assert mixed[0] == 0
    assert len({int(i) // 10 for i in mixed}) == 4 > len({int(i) // 10 for i in plain})
    assert intra_list_similarity(vectors[mixed]) < 0.5 * intra_list_similarity(vectors[plain])


def test_category_cap_yields_when_nothing_else_is_left() -> None:
    vectors, relevance = _clusters()
    cats = [i // 10 for i in range(40)]
    capped = mmr_order(vectors, relevance, 8, diversity=0.0, categories=cats, max_per_category=2)
    counts = np.bincount([cats[i] for i in capped])
    assert counts.max() == 2 and len(capped) == 8
    short = mmr_order(vectors[:10], relevance[:10], 5, diversity=0.0, categories=cats[:10], max_per_category=2)
    assert len(short) == 5


def test_non_finite_relevance_goes_last_and_k_larger_than_n() -> None:
    vectors, relevance = _clusters()
    relevance = relevance.copy()
    relevance[0] = np.nan
    order = mmr_order(vectors[:5], relevance[:5], 10, diversity=0.3)
    assert len(order) <= 5 and 0 not in order[:4].tolist()


def test_diversity_vectors_encode_the_mean_of_item_and_category_cosines() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(12, 8)).astype(np.float32)
    codes = np.full((12, 4), -1, dtype=np.int64)
    for i in range(12):
        picked = rng.choice(6, size=int(rng.integers(0, 4)), replace=False)
        codes[i, : len(picked)] = picked
    rows = diversity_vectors(vectors, codes)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sets = [set(c for c in row if c >= 0) for row in codes.tolist()]
    ochiai = np.array([[len(a & b) / np.sqrt(len(a) * len(b)) if a and b else 0.0 for b in sets] for a in sets])
    np.testing.assert_allclose(rows @ rows.T, 0.5 * unit @ unit.T + 0.5 * ochiai, atol=1e-5)
    np.testing.assert_allclose(blended_similarity(vectors, codes), rows @ rows.T, atol=1e-6)


def test_mmr_on_precomputed_unit_rows_matches_mmr_on_raw_vectors() -> None:
    vectors, relevance = _clusters()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for knob in (0.2, 0.5, 0.9):
        assert mmr_order(unit, relevance, 8, diversity=knob, unit=True).tolist() == \
            mmr_order(3.0 * vectors, relevance, 8, diversity=knob).tolist()


def test_diversity_tables_give_the_same_rows_as_computing_them_per_request(tmp_path: Path) -> None:
    from edgerec_sdk.bundle import load_bundle
    from edgerec_sdk.rank.diversity import DiversityTables
    from edgerec_sdk.rank.features import RankFeatures
    from edgerec_sdk.recommender import demo_bundle_path
    from edgerec_sdk.testing import make_bundle

    # the demo's items have several categories each; the synthetic float32 catalogue one
    for path in (demo_bundle_path(), make_bundle(tmp_path / "f32", n_items=300, dim=16, dtype="float32")):
        bundle = load_bundle(path)
        codes = RankFeatures(bundle).cat_codes
        assert codes is not None
        rows = np.random.default_rng(1).choice(300, size=40, replace=False).astype(np.int64)
        expected = diversity_vectors(bundle.vectors.rows_f32(rows), codes[rows])
        tables = DiversityTables.build(bundle.vectors, codes)
        np.testing.assert_allclose(tables.rows(rows), expected, atol=1e-6)
        # a catalogue without categories: the item-vector cosine alone
        np.testing.assert_allclose(DiversityTables.build(bundle.vectors, None).rows(rows),
                                   diversity_vectors(bundle.vectors.rows_f32(rows), None), atol=1e-6)
