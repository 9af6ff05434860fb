"""Non-clicked impressions and explicit negatives of an event log as hard negatives in training."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgerec_sdk.errors import ConfigError  # noqa: E402
from edgerec_sdk.train.data import leave_one_out, read_events, read_sequences  # noqa: E402
from edgerec_sdk.train.samples import negative_index, training_samples  # noqa: E402
from edgerec_sdk.train.softmax import softmax_loss  # noqa: E402
from edgerec_sdk.train.train import TrainConfig, _batch_negatives, fit  # noqa: E402

HEADER = "user,item,type,timestamp,value,model_version,rec_id,position\n"


def _negatives(path: Path) -> dict[str, dict[str, int]]:
    """``{user: {item: since}}`` as read."""
    d = read_events(path)
    assert d.negatives is not None
    return {u: {d.item_ids[r]: int(s) for r, s in zip(n, since, strict=True)}
            for u, n, since in zip(d.user_ids, d.negatives.items, d.negatives.since, strict=True)}


def test_reader_collects_non_clicked_impressions_and_explicit_negatives(tmp_path: Path) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        HEADER
        + "u,a,impression,1,,v1,r1,0\nu,b,impression,1,,v1,r1,1\nu,x,impression,1,,v1,r1,2\n"
        "u,a,click,2,,v1,r1,0\n"        # shown, then clicked: not a negative
        "u,c,purchase,3,,,,\n"
        "u,x,impression,4,,v1,r2,0\n"   # x shown again, never engaged with
        "u,d,click,5,,,,\nu,d,dislike,6,,,,\n"  # clicked, then disliked: a negative from the dislike on
        "u,e,view,7,,,,\n"
        "u,f,impression,8,,v1,r3,0\nu,f,skip,9,,,,\n"  # a skip is no engagement
        "u,g,hide,10,,,,\nu,g,purchase,11,,,,\n"  # a purchase after a hide stands: not a negative
        "u,h,rating,12,1,,,\n"          # a 1-star rating, never engaged with
        "u,z,impression,13,,v1,r4,0\n"  # z: only ever shown, to anyone: no item row, left out
        "u,c,impression,14,,v1,r4,1\n"  # c was purchased before it was shown again: not a negative
        "w,b,click,1,,,,\nw,x,click,2,,,,\nw,f,click,3,,,,\nw,h,view,4,,,,\nw,d,click,5,,,,\n"
        "v,x,impression,1,,v1,r5,0\n"   # v has no positive event: no sequence, nothing to train
        "s,x,impression,1,,v1,r6,0\ns,b,click,2,,,,\ns,f,click,3,,,,\ns,x,click,4,,,,\n"  # x: shown, clicked later
    )
    d = read_events(p)
    assert "z" not in d.item_ids and "v" not in d.user_ids and d.negatives is not None
    seqs = {u: [d.item_ids[r] for r in s] for u, s in zip(d.user_ids, d.sequences, strict=True)}
    assert seqs["u"] == ["a", "c", "e", "g"] and seqs["s"] == ["b", "f", "x"]
    # since: the sequence steps before the first sign (impression or explicit negative)
    assert _negatives(p) == {"u": {"b": 0, "x": 0, "d": 2, "f": 3, "h": 4}, "w": {}, "s": {}}
    # s was shown x, then did other things, then clicked it (u's a and g were engaged with at the next step)
    step = dict(zip(d.user_ids, (s.tolist() for s in d.negatives.step_since), strict=True))
    assert step == {"u": [4] * 4, "w": [5] * 5, "s": [3, 3, 0]}
    # a part trains on a negative only once one of its items came after the negative's first sign, and on
    # a held-out item that had been shown and not yet engaged with
    split = leave_one_out(d.sequences, negatives=d.negatives)
    assert split.train_negatives is not None and split.train_full_negatives is not None

    def names(negs: list[np.ndarray], user: str) -> list[str]:
        return sorted(d.item_ids[r] for r in negs[d.user_ids.index(user)])

    assert names(split.train_negatives, "u") == ["b", "x"]  # train = [a, c]
    assert names(split.train_full_negatives, "u") == ["b", "d", "x"]  # train_full = [a, c, e]
    assert names(split.train_negatives, "s") == names(split.train_full_negatives, "s") == ["x"]
    assert names(split.train_full_negatives, "w") == []


def test_sequence_files_and_logs_without_negatives_have_none(tmp_path: Path) -> None:
    seq = tmp_path / "seq.txt"
    seq.write_text("1 1 2 3\n2 2 3\n")
    assert read_sequences(seq).negatives is None
    log = tmp_path / "log.csv"
    log.write_text(HEADER + "u,a,impression,1,,v1,r1,0\nu,a,click,2,,v1,r1,0\nu,b,purchase,3,,,,\n"
                   "w,b,impression,1,,v1,r2,0\nw,b,cart,2,,,,\nw,q,impression,3,,v1,r3,0\n")  # q: no row
    d = read_events(log)
    assert d.negatives is None
    assert leave_one_out(d.sequences, negatives=d.negatives).train_full_negatives is None


def test_batch_negatives_pair_each_target_with_its_users_list_but_never_its_own_target() -> None:
    seqs = [np.array([0, 1, 2]), np.array([3]), np.array([4, 5]), np.array([1, 2, 3, 4])]
    negs = [np.array([5, 6]), np.array([7]), np.zeros(0, dtype=np.int64), np.array([0, 2, 6])]
    for mode in ("prefixes", "sequences"):
        _, targets, _ = training_samples(seqs, 3, mode=mode)
        index = negative_index(seqs, negs, mode=mode)
        idx = np.array([3, 0, 2, 1]) if mode == "prefixes" else np.array([2, 0, 1])
        sel = targets[idx] > 0
        tgt = targets[idx][sel] - 1
        pos, cols = _batch_negatives(index, idx, sel, tgt) or (np.zeros(0), np.zeros(0))
        usable = [i for i, s in enumerate(seqs) if len(s) >= 2]  # user 1 gives no rows
        owner = np.repeat(usable, [len(seqs[i]) - 1 for i in usable]) if mode == "prefixes" else np.array(usable)
        every = [(p, c) for p, u in enumerate(owner[idx[np.nonzero(sel)[0]]]) for c in negs[u]]
        expect = [(p, c) for p, c in every if c != tgt[p]]
        assert list(zip(pos.tolist(), cols.tolist(), strict=True)) == expect
        assert len(expect) < len(every)  # user 3's negative 2 is the target of one of its rows: left out there


def test_boosted_loss_is_cross_entropy_with_the_offset_on_the_negatives_logits() -> None:
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    h = torch.randn(9, 5, generator=g, requires_grad=True)
    v = torch.randn(13, 5, generator=g, requires_grad=True)
    t = torch.randint(0, 13, (9,), generator=g)
    rows = torch.tensor([0, 0, 3, 5, 8, 8])
    cols = torch.tensor([1, 4, 2, 7, 0, 12])
    cols = torch.where(cols == t[rows], (cols + 1) % 13, cols)
    offset = math.log1p(2.0)
    bump = torch.zeros(9, 13)
    bump[rows, cols] = offset
    ref_loss = F.cross_entropy(h @ v.T + bump, t)
    ref_loss.backward()
    ref = (h.grad.clone(), v.grad.clone())
    h.grad = v.grad = None
    loss = softmax_loss(h, v, t, 4, None, (rows, cols), offset)  # chunks of 4 rows: pairs cut across them
    loss.backward()
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert torch.allclose(h.grad, ref[0], atol=1e-5) and torch.allclose(v.grad, ref[1], atol=1e-5)
    assert float(loss.detach()) > float(softmax_loss(h.detach(), v.detach(), t, 4))  # harder than without
    with pytest.raises(ConfigError):
        TrainConfig(negative_boost=-1.0)


def _mixed_log(path: Path, extra: str = "", *, users: int = 50, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = [HEADER.rstrip("\n")]
    for u in range(users):
        start = int(rng.integers(0, 20))
        for k in range(6):
            kind = ("view", "click", "cart", "purchase")[int(rng.integers(0, 4))]
            rows.append(f"u{u},i{(start + k) % 20},{kind},{10 * k},,,,")
    path.write_text("\n".join(rows) + "\n" + extra)


def _fit_state(path: Path, cfg: TrainConfig, *, feature: bool = True
               ) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Two epochs on ``seq[:-1]``; ``feature=False`` is the call as it was before negatives existed."""
    d = read_events(path)
    if not feature:
        split = leave_one_out(d.sequences, weights=d.weights)
        model, hist, _, _ = fit(split.train_full, d.n_items, cfg, epochs=2, progress=False,
                                weights=split.train_full_weights)
        return hist["loss"], model.state_dict()
    split = leave_one_out(d.sequences, weights=d.weights, negatives=d.negatives)
    model, hist, _, _ = fit(split.train_full, d.n_items, cfg, epochs=2, progress=False,
                            weights=split.train_full_weights, negatives=split.train_full_negatives)
    return hist["loss"], model.state_dict()


def _same(a: tuple[list[float], dict[str, torch.Tensor]], b: tuple[list[float], dict[str, torch.Tensor]]) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_no_negatives_train_bit_identically(tmp_path: Path) -> None:
    """The public data sets hold purchases only: the hard-negative path must change nothing there."""
    cfg = TrainConfig(dim=8, max_len=6, batch_size=32, threads=1)
    assert cfg.negative_boost > 0  # the default is on
    plain = tmp_path / "plain.csv"
    _mixed_log(plain)
    never = _fit_state(plain, dataclasses.replace(cfg, negative_boost=0.0), feature=False)
    assert _same(_fit_state(plain, cfg), never)
    # an item shown and clicked right away, and an item no one engaged with, give no negatives
    clicked = tmp_path / "clicked.csv"
    _mixed_log(clicked, "".join(line.replace(kind, "impression").replace(f",{ts},", f",{int(ts) - 1},")
                                for line in plain.read_text().splitlines(keepends=True)[1:]
                                for kind, ts in [line.split(",")[2:4]])
               + "u3,never-engaged,impression,5,,v1,r,0\n")
    assert read_events(clicked).negatives is None
    assert _same(_fit_state(clicked, cfg), never)
    # real negatives with the boost at 0: identical too; at the default the loss moves (the check can fail)
    shown = tmp_path / "shown.csv"
    _mixed_log(shown, "".join(f"u{u},i{(u + 7) % 20},impression,1,,v1,r{u},0\n" for u in range(50)))
    assert read_events(shown).negatives is not None
    assert _same(_fit_state(shown, dataclasses.replace(cfg, negative_boost=0.0)), never)
    assert _fit_state(shown, cfg)[0] != never[0]


def _shown_not_clicked_log(path: Path, *, impressions: bool, seed: int = 0) -> list[str]:
    """Two groups browse the same items ``a0..a9``; the clickers click ``x`` on the way, the targets are
    shown ``x`` at every step (beside the item they click next) and never click it. A third group browses
    ``b0..b9``. Returns the target users."""
    rng = np.random.default_rng(seed)
    rows = [HEADER.rstrip("\n")]
    targets = []
    for group, users in (("clicker", 20), ("target", 60), ("other", 40)):
        for u in range(users):
            user = f"{group}{u}"
            letter = "b" if group == "other" else "a"
            n, start = int(rng.integers(6, 9)), int(rng.integers(0, 10))
            seq = [f"{letter}{(start + k) % 10}" for k in range(n)]
            if group == "clicker":
                seq.insert(int(rng.integers(1, n - 2)), "x")
            for k, item in enumerate(seq):
                rows.append(f"{user},{item},click,{10 * k},,,,")
                if group == "target" and impressions and k < n - 1:
                    rows.append(f"{user},x,impression,{10 * k + 5},,v1,{user}-{k},0")
                    rows.append(f"{user},{seq[k + 1]},impression,{10 * k + 5},,v1,{user}-{k},1")
            if group == "target":
                targets.append(user)
    path.write_text("\n".join(rows) + "\n")
    return targets


def test_a_build_pushes_down_what_users_were_shown_and_never_clicked(tmp_path: Path) -> None:
    from edgerec_sdk import Recommender
    from edgerec_sdk.train.pipeline import build_bundle

    cfg = TrainConfig(dim=16, n_layers=1, max_len=10, batch_size=64, threads=1, max_epochs=20, patience=20,
                      dropout=0.1, lr=5e-3)
    gaps = {}
    for impressions in (False, True):
        log = tmp_path / f"events-{impressions}.csv"
        targets = _shown_not_clicked_log(log, impressions=impressions)
        res = build_bundle(log, tmp_path / f"bundle-{impressions}", config=cfg, evaluate=False,
                           baselines=False, report_dir=False, progress=False)
        data = json.loads((res.bundle_dir / "manifest.json").read_text())["extra"]["data"]
        assert data.get("negatives") == (60 if impressions else None)
        d = read_events(log)
        split = leave_one_out(d.sequences)
        hist = [[d.item_ids[r] for r in split.train_full[d.user_ids.index(u)]] for u in targets]
        with Recommender.from_bundle(res.bundle_dir) as rec:  # the served scores, every item ranked
            answers = rec.recommend_many(targets, k=d.n_items, histories=hist, diversity=0.0)
        # x's served score against the mean of the items the answer ranks (history excluded)
        gaps[impressions] = float(np.mean([a.scores[a.item_ids.index("x")] - np.mean(a.scores)
                                           for a in answers]))
    assert gaps[True] < gaps[False] - 0.1, gaps
