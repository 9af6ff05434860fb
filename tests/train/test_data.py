"""Readers for interaction data and item metadata, and the leave-one-out split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerec_sdk.errors import ConfigError
from edgerec_sdk.train.data import leave_one_out, read_events, read_interactions, read_sequences
from edgerec_sdk.train.metadata import item_metadata, read_attributes, read_titles
from edgerec_sdk.train.samples import pad_left


def test_sequences_numeric_ids_keep_numeric_row_order(tmp_path: Path) -> None:
    p = tmp_path / "seq.txt"
    p.write_text("1 3 1 2\n2 2 10\n\n3 1\n")
    d = read_sequences(p)
    assert d.item_ids == ["1", "2", "3", "10"]
    assert d.user_ids == ["1", "2", "3"]
    assert [s.tolist() for s in d.sequences] == [[2, 0, 1], [1, 3], [0]]
    assert d.n_interactions == 6


def test_pair_per_line_layout_reads_as_the_same_sequences(tmp_path: Path) -> None:
    grouped, pairs = tmp_path / "grouped.txt", tmp_path / "pairs.txt"
    grouped.write_text("1 3 1 2\n2 2 10\n3 1\n")
    pairs.write_text("1 3\n1 1\n1 2\n2 2\n2 10\n3 1\n")
    a, b = read_interactions(grouped), read_interactions(pairs)
    assert b.user_ids == a.user_ids == ["1", "2", "3"]
    assert b.item_ids == a.item_ids
    assert [s.tolist() for s in b.sequences] == [s.tolist() for s in a.sequences] == [[2, 0, 1], [1, 3], [0]]


def test_csv_events_sorted_by_time_and_collapsed(tmp_path: Path) -> None:
    p = tmp_path / "events.csv"
    p.write_text(
        "user,item,type,timestamp\n"
        "u1,B,view,20\nu1,A,view,10\nu1,B,purchase,21\nu1,C,skip,30\nu2,C,click,2024-01-01T00:00:00Z\n"
    )
    d = read_interactions(p)
    seqs = {u: [d.item_ids[r] for r in s] for u, s in zip(d.user_ids, d.sequences, strict=True)}
    assert seqs == {"u1": ["A", "B"], "u2": ["C"]}


def test_jsonl_events_with_ts_alias(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    rows = [{"user": "a", "item": "x", "type": "view", "ts": 5}, {"user": "a", "item": "y", "ts": 1}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    d = read_events(p)
    assert [d.item_ids[r] for r in d.sequences[0]] == ["y", "x"]


def test_event_log_without_item_column_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("user,thing\nu,1\n")
    with pytest.raises(ConfigError):
        read_events(p)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_interactions(tmp_path / "nope.txt")


def test_titles_with_asin_and_attributes(tmp_path: Path) -> None:
    seq = tmp_path / "s.txt"
    seq.write_text("1 1 2\n")
    kw = tmp_path / "kw.tsv"
    kw.write_text("item_id\tasin\tidgenrec_textual_id\n1\tB01\tnail polish red\n2\tB02\tgel coat\n")
    attrs = tmp_path / "a.json"
    attrs.write_text(json.dumps({"1": [3, 7], "2": [7]}))
    titles, ext = read_titles(kw)
    assert titles == {"1": "nail polish red", "2": "gel coat"} and ext == {"1": "B01", "2": "B02"}
    assert read_attributes(attrs) == {"1": ["attr-3", "attr-7"], "2": ["attr-7"]}
    meta = item_metadata(read_sequences(seq), titles_path=kw, attributes_path=attrs)
    assert meta.external_ids == ["B01", "B02"]
    assert meta.titles == ["nail polish red", "gel coat"]
    assert meta.attributes == [["attr-3", "attr-7"], ["attr-7"]]


def test_two_column_asin_table_gives_ids_only(tmp_path: Path) -> None:
    p = tmp_path / "asin.tsv"
    p.write_text("item_id\tasin\n1\tB01\n")
    assert read_titles(p) == ({}, {"1": "B01"})


def test_leave_one_out_never_trains_on_the_last_item() -> None:
    seqs = [np.array([0, 1, 2, 3, 4]), np.array([5, 6]), np.array([7, 8, 9])]
    s = leave_one_out(seqs)
    assert s.test_users.tolist() == [0, 2]
    assert s.test_targets.tolist() == [4, 9] and s.valid_targets.tolist() == [3, 8]
    assert s.train[0].tolist() == [0, 1, 2] and s.train_full[0].tolist() == [0, 1, 2, 3]
    assert s.train[1].tolist() == [] and s.train_full[1].tolist() == [5]
    for u, t in zip(s.test_users, s.test_targets, strict=True):
        assert t not in s.train_full[u]


def test_pad_left_truncates_and_offsets() -> None:
    out = pad_left([np.array([0, 1, 2, 3]), np.array([], dtype=np.int64)], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 0]]


def test_exported_events_drop_impressions_and_honour_explicit_negatives(tmp_path: Path) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        "user,item,type,timestamp,value,model_version,rec_id,position\n"
        "u,a,impression,1,,v1,r1,0\nu,b,impression,1,,v1,r1,1\n"
        "u,a,click,2,,v1,r1,0\nu,b,purchase,3,,v1,r1,1\nu,c,view,4,,,,\n"
        "u,a,dislike,5,,,,\n"          # the latest signal on a: it leaves the sequence
        "u,c,rating,6,1,,,\n"          # a 1-star rating is an explicit negative too
        "u,d,hide,7,,,,\nu,d,purchase,8,,,,\n"  # a purchase after a hide stands
        "w,a,click,1,,,,\nw,e,rating,2,5,,,\n"
    )
    d = read_events(p)
    seqs = {u: [d.item_ids[r] for r in s] for u, s in zip(d.user_ids, d.sequences, strict=True)}
    assert seqs == {"u": ["b", "d"], "w": ["a", "e"]}


def test_prefix_samples_one_target_at_the_newest_position() -> None:
    from edgerec_sdk.train.samples import sample_weights, training_samples

    seqs = [np.array([4, 5, 6, 7]), np.array([9]), np.array([1, 2])]
    inputs, targets, lengths = training_samples(seqs, 3, mode="prefixes")
    # rows fed as r + 1, left-padded, the newest 3 items; the lone-item user gives no row
    assert inputs.tolist() == [[0, 0, 5], [0, 5, 6], [5, 6, 7], [0, 0, 2]]
    assert targets.tolist() == [[6], [7], [8], [3]]
    assert lengths.tolist() == [1, 2, 3, 1]
    w = [np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([5.0], np.float32), np.array([6.0, 7.0], np.float32)]
    assert sample_weights(seqs, w, 3, mode="prefixes").tolist() == [[2.0], [3.0], [4.0], [7.0]]
    assert sample_weights(seqs, w, 3, mode="sequences").tolist() == [[2.0, 3.0, 4.0], [0.0, 0.0, 7.0]]


def test_sequence_samples_have_a_target_at_every_position() -> None:
    from edgerec_sdk.train.samples import training_samples

    inputs, targets, lengths = training_samples([np.array([4, 5, 6])], 4, mode="sequences")
    assert inputs.tolist() == [[0, 0, 5, 6]] and targets.tolist() == [[0, 0, 6, 7]]
    assert lengths.tolist() == [2]
    with pytest.raises(ConfigError):
        training_samples([np.array([1, 2])], 4, mode="windows")


def test_length_batches_cover_every_row_once_and_waste_no_padding() -> None:
    from edgerec_sdk.train.samples import length_batches, padding_share

    rng = np.random.default_rng(0)
    lengths = np.repeat(np.arange(1, 9), 64)  # 8 lengths, 64 rows each
    batches = length_batches(lengths, 32, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert padding_share(lengths, batches) == 0.0
    # batches of random rows (pools of one batch) run at their longest member: mostly padding here
    unsorted = length_batches(lengths, 32, rng, pool=1)
    assert sorted(np.concatenate(unsorted).tolist()) == list(range(len(lengths)))
    assert padding_share(lengths, unsorted) > 0.3
    # the batch order is shuffled, so an epoch does not run from short to long rows
    firsts = [int(lengths[b[0]]) for b in batches]
    assert firsts != sorted(firsts)


def test_validation_holdout_is_one_step_earlier_than_test(tmp_path: Path) -> None:
    from edgerec_sdk.train.evaluate import holdout

    p = tmp_path / "seq.txt"
    p.write_text("1 1 2 3 4\n2 5 6 7\n3 1 2\n")
    d = read_sequences(p)
    test, valid = holdout(d), holdout(d, part="valid")
    assert [h.tolist() for h in test.histories] == [[0, 1, 2], [4, 5]]
    assert test.targets.tolist() == [3, 6]
    assert [h.tolist() for h in valid.histories] == [[0, 1], [4]]
    assert valid.targets.tolist() == [2, 5]
    with pytest.raises(ValueError, match="part"):
        holdout(d, part="train")
