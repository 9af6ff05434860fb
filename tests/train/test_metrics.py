"""Ranking metrics and baselines on known answers."""

from __future__ import annotations

import math

import numpy as np

from edgerec_sdk.train.baselines import ItemKNN, popularity_counts
from edgerec_sdk.train.metrics import metrics_from_ranks, rank_in_list, ranks_from_scores


def test_rank_excludes_history_and_counts_ties_pessimistically() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.9, 0.5, 0.5, 0.1]], dtype=np.float32)
    ranks = ranks_from_scores(scores, np.array([1, 3]), [np.array([0]), np.array([], dtype=np.int64)])
    assert ranks.tolist() == [1, 3]  # item 0 excluded, item 2 ties ahead; user 2 target last


def test_nan_target_ranks_last() -> None:
    scores = np.array([[np.nan, 0.1]], dtype=np.float32)
    assert ranks_from_scores(scores, np.array([0])).tolist() == [2]


def test_metrics_from_ranks_known_values() -> None:
    m = metrics_from_ranks(np.array([0, 1, 9, 50]), ks=(1, 10))
    assert m["HR@1"] == 0.25 and m["HR@10"] == 0.75
    expected = (1.0 + 1 / math.log2(3) + 1 / math.log2(11)) / 4
    assert abs(m["NDCG@10"] - expected) < 1e-12
    assert metrics_from_ranks(np.array([], dtype=np.int64))["HR@10"] == 0.0


def test_rank_in_list() -> None:
    assert rank_in_list(["a", "b"], "b") == 1
    assert rank_in_list(["a"], "z") > 1000


def test_popularity_counts() -> None:
    assert popularity_counts([np.array([0, 2]), np.array([2])], 3).tolist() == [1.0, 0.0, 2.0]


def test_itemknn_cosine_and_recency() -> None:
    seqs = [np.array([0, 1]), np.array([0, 1]), np.array([0, 2]), np.array([3, 2])]
    knn = ItemKNN.fit(seqs, n_items=4, decay=0.5)
    s = knn.scores([np.array([0]), np.array([1, 3])])
    assert abs(s[0, 1] - 2 / math.sqrt(3 * 2)) < 1e-6
    assert abs(s[0, 2] - 1 / math.sqrt(3 * 2)) < 1e-6
    assert s[0, 0] == 0.0
    # history [1, 3]: item 3 is newest (weight 1), item 1 has weight 0.5
    assert abs(s[1, 2] - 1 / math.sqrt(1 * 2)) < 1e-6
    assert abs(s[1, 0] - 0.5 * 2 / math.sqrt(2 * 3)) < 1e-6
