"""A tiny end-to-end build: train, export (parity), quantize, write the bundle, serve and evaluate it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgerec_sdk.train.model import SASRec  # noqa: E402
from edgerec_sdk.train.softmax import FullSoftmaxCE, softmax_loss  # noqa: E402
from edgerec_sdk.train.train import TrainConfig  # noqa: E402


def _synthetic(path: Path, *, users: int = 300, items: int = 40, seed: int = 0) -> None:
    """Users walk through items in steps of 1 (mostly), so the next item is predictable from the last."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(users):
        start, length = rng.integers(0, items), rng.integers(5, 12)
        seq = [(start + i) % items + 1 for i in range(length)]
        lines.append(" ".join(str(x) for x in [u + 1, *seq]))
    path.write_text("\n".join(lines) + "\n")


def test_softmax_loss_gradients_match_cross_entropy() -> None:
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, generator=g, requires_grad=True)
    w = torch.randn(11, 5, generator=g, requires_grad=True)
    t = torch.randint(0, 11, (7,), generator=g)
    F.cross_entropy(h @ w.T, t, reduction="sum").backward()
    ref = (h.grad.clone(), w.grad.clone())
    h.grad = None
    w.grad = None
    loss = FullSoftmaxCE.apply(h, w, t)
    loss.backward()
    assert torch.allclose(loss, F.cross_entropy(h @ w.T, t, reduction="sum"), atol=1e-5)
    assert torch.allclose(h.grad, ref[0], atol=1e-5) and torch.allclose(w.grad, ref[1], atol=1e-5)


def test_weighted_softmax_loss_is_the_weighted_mean_and_ones_change_nothing() -> None:
    from torch.nn import functional as F


    g = torch.Generator().manual_seed(1)
    h = torch.randn(9, 5, generator=g, requires_grad=True)
    v = torch.randn(13, 5, generator=g, requires_grad=True)
    t = torch.randint(0, 13, (9,), generator=g)
    wt = torch.tensor([0.5, 1, 2, 3, 1, 1, 0.5, 3, 2])
    ref_loss = (F.cross_entropy(h @ v.T, t, reduction="none") * wt).sum() / wt.sum()
    ref_loss.backward()
    ref = (h.grad.clone(), v.grad.clone())
    h.grad = None
    v.grad = None
    loss = softmax_loss(h, v, t, 4, wt)  # chunks of 4 rows
    loss.backward()
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert torch.allclose(h.grad, ref[0], atol=1e-5) and torch.allclose(v.grad, ref[1], atol=1e-5)
    plain = softmax_loss(h.detach(), v.detach(), t, 4)
    assert torch.allclose(softmax_loss(h.detach(), v.detach(), t, 4, torch.ones(9)), plain, atol=1e-6)


def test_an_event_log_mixing_types_trains_weighted(tmp_path: Path) -> None:
    from edgerec_sdk.train.data import leave_one_out, read_events
    from edgerec_sdk.train.train import fit

    rng = np.random.default_rng(0)
    rows = ["user,item,type,timestamp"]
    for u in range(60):
        start = int(rng.integers(0, 30))
        for i in range(6):
            kind = ("view", "click", "cart", "purchase")[int(rng.integers(0, 4))]
            rows.append(f"u{u},i{(start + i) % 30},{kind},{i}")
    log = tmp_path / "events.csv"
    log.write_text("\n".join(rows) + "\n")
    data = read_events(log)
    assert data.weights is not None and {0.5, 3.0} <= set(np.concatenate(data.weights).tolist())
    split = leave_one_out(data.sequences, weights=data.weights)
    assert split.train_weights is not None
    assert [len(w) for w in split.train_weights] == [len(s) for s in split.train]
    cfg = TrainConfig(max_epochs=2, dim=8, max_len=6, batch_size=32, threads=1)
    _, hist, _, _ = fit(split.train_full, data.n_items, cfg, epochs=2, progress=False,
                        weights=split.train_full_weights)
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    purchases = tmp_path / "purchases.csv"
    purchases.write_text("user,item,type,timestamp\n" + "".join(f"u,i{i},purchase,{i}\n" for i in range(4)))
    assert read_events(purchases).weights is None  # one type only: the unweighted path, as before


def test_tiny_build_writes_a_servable_bundle(tmp_path: Path) -> None:
    from edgerec_sdk import Recommender
    from edgerec_sdk.train.pipeline import build_bundle

    data = tmp_path / "seq.txt"
    _synthetic(data)
    titles = tmp_path / "kw.tsv"
    titles.write_text("item_id\tasin\ttitle\n" + "".join(f"{i}\tA{i:04d}\titem number {i}\n" for i in range(1, 41)))
    cfg = TrainConfig(max_epochs=2, patience=1, dim=16, max_len=10, batch_size=64, threads=1)
    res = build_bundle(data, tmp_path / "bundle", titles=titles, config=cfg, progress=False,
                       report_dir=tmp_path / "report")
    manifest = json.loads((res.bundle_dir / "manifest.json").read_text())
    assert manifest["n_items"] == 40 and manifest["dim"] == 16 and manifest["vector_dtype"] == "int8"
    test = manifest["metrics"]["test"]
    for path in ("served_int8", "direct_int8", "float32", "popularity", "itemknn"):
        assert 0.0 <= test[path]["HR@10"] <= 1.0 and test[path]["users"] == 300
    assert manifest["metrics"]["export"]["parity_max_abs"] < 1e-4
    # the served path and the direct int8 path score the same model
    assert abs(test["served_int8"]["HR@10"] - test["direct_int8"]["HR@10"]) < 0.02
    assert (res.report_path is not None) and res.report_path.exists()
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0
    # the report keeps the float32 model the int8 one came from; a small model keeps its tables float32
    float_model = (tmp_path / "report" / "interest.float32.onnx").read_bytes()
    assert manifest["metrics"]["export"]["int8_ops"] == ["MatMul", "Gemm"]
    assert len(float_model) == manifest["metrics"]["export"]["float_model_bytes"]
    # the first block's q/k/v products stay float (FLOAT_NODES); the rest are int8
    import onnx

    from edgerec_sdk.train.export import FLOAT_NODES

    def ops(model: bytes) -> dict[str, str]:
        return {n.name: n.op_type for n in onnx.load_from_string(model).graph.node}

    int8_ops = ops((res.bundle_dir / "interest.onnx").read_bytes())
    assert set(FLOAT_NODES) <= set(ops(float_model)) and all(int8_ops.get(n) == "MatMul" for n in FLOAT_NODES)
    assert ops(float_model)["/blocks.1/attn/q/MatMul"] == "MatMul" and int8_ops.get("/blocks.1/attn/q/MatMul") != "MatMul"
    with Recommender.from_bundle(res.bundle_dir) as rec:
        out = rec.recommend("u", k=5, history=["A0001", "A0002"])
        assert len(out.item_ids) == 5 and "A0002" not in out.item_ids
        assert rec.items["A0003"]["title"] == "item number 3"


def test_cli_registers_build_and_evaluate() -> None:
    import argparse

    from edgerec_sdk.train.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["build", "--data", "d.txt", "--out", "b", "--epochs", "3"])
    assert args.command == "build" and args.epochs == 3 and args.device == "cpu" and args.samples is None
    args = parser.parse_args(["build", "--data", "d.txt", "--out", "b", "--device", "auto", "--samples",
                              "sequences", "--dropout", "0.3", "--batch-size", "128", "--length-pool", "50",
                              "--no-refit", "--negative-boost", "2.5"])
    assert (args.device, args.samples, args.dropout, args.batch_size, args.length_pool, args.fit,
            args.negative_boost) == ("auto", "sequences", 0.3, 128, 50, "search", 2.5)
    assert parser.parse_args(["build", "--data", "d.txt", "--out", "b", "--fit", "refit"]).fit == "refit"
    assert parser.parse_args(["build", "--data", "d.txt", "--out", "b", "--query-rows", "0"]).query_rows == 0
    from edgerec_sdk.train.cli import _CONFIG_FLAGS

    assert _CONFIG_FLAGS["negative_boost"] == "negative_boost"
    args = parser.parse_args(["evaluate", "b", "--data", "d.txt", "--out-json", "m.json"])
    assert args.bundle == "b" and args.out_json == "m.json"


def test_item_text_build_ships_a_tokenizer(tmp_path: Path) -> None:
    from edgerec_sdk.train.pipeline import build_bundle

    data = tmp_path / "seq.txt"
    _synthetic(data, users=120, items=30)
    titles = tmp_path / "kw.tsv"
    titles.write_text("item_id\ttitle\n" + "".join(f"{i}\tred nail polish shade {i % 7}\n" for i in range(1, 31)))
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({str(i): [i % 5 + 1] for i in range(1, 31)}))
    cfg = TrainConfig(max_epochs=1, dim=8, max_len=8, batch_size=64, threads=1)
    res = build_bundle(data, tmp_path / "b", titles=titles, attributes=attrs, config=cfg, item_text=True,
                       progress=False, baselines=False, report_dir=tmp_path / "r")
    manifest = json.loads((res.bundle_dir / "manifest.json").read_text())
    assert "tokenizer.json" in manifest["files"] and manifest["extra"]["item_text"] is True
    catalog = json.loads((res.bundle_dir / "catalog.json").read_text())
    assert catalog["ids"][:2] == ["1", "2"] and catalog["columns"]["category"][0] == ["attr-2"]
    assert manifest["metrics"]["export"]["parity_max_abs"] < 1e-4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_device_auto_is_the_cpu_and_cuda_is_refused_without_a_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgerec_sdk.cli import main
    from edgerec_sdk.errors import ConfigError
    from edgerec_sdk.train.train import resolve_device

    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError):
        TrainConfig(device="tpu")
    data = tmp_path / "seq.txt"
    _synthetic(data, users=20)
    assert main(["build", "--data", str(data), "--out", str(tmp_path / "b"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("samples", ["prefixes", "sequences"])
def test_both_sample_modes_learn_the_synthetic_walk(samples: str) -> None:
    from edgerec_sdk.train.data import leave_one_out
    from edgerec_sdk.train.train import evaluate_torch, fit

    seqs = [np.array([(s + i) % 30 for i in range(8)]) for s in range(30) for _ in range(6)]
    split = leave_one_out(seqs)
    cfg = TrainConfig(dim=16, max_len=8, batch_size=32, threads=1, dropout=0.1, lr=5e-3, samples=samples,
                      device="auto")
    hist = [split.train[u] for u in split.valid_users]

    def validate(model: SASRec) -> float:
        return evaluate_torch(model, hist, split.valid_targets)["NDCG@10"]

    _, history, best_epoch, _ = fit(split.train, 30, cfg, epochs=6, validate=validate, progress=False)
    assert max(history["valid_ndcg10"]) > 0.5  # chance is about 0.1
    assert 1 <= best_epoch <= 6


def test_query_intent_evaluation_on_a_text_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgerec_sdk.cli import main
    from edgerec_sdk.train.pipeline import build_bundle

    data = tmp_path / "seq.txt"
    _synthetic(data, users=200, items=40)
    colours = ["red", "blue", "green", "black", "white", "pink", "gold", "silver"]
    nouns = ["lipstick", "shampoo", "lotion", "polish", "brush"]
    titles = tmp_path / "kw.tsv"
    titles.write_text("item_id\ttitle\n" + "".join(
        f"{i}\t{colours[i % 8]} {nouns[i // 8 % 5]} of the day\n" for i in range(1, 41)))
    cfg = TrainConfig(max_epochs=3, patience=1, dim=16, max_len=10, batch_size=64, threads=1)
    res = build_bundle(data, tmp_path / "b", titles=titles, config=cfg, progress=False, baselines=False,
                       report_dir=False)
    manifest = json.loads((res.bundle_dir / "manifest.json").read_text())
    assert manifest["model"]["inputs"]["query"] == "query" and manifest["model"]["outputs"]["text"]
    out_json = tmp_path / "qi.json"
    assert main(["evaluate", str(res.bundle_dir), "--data", str(data), "--query-intent", "--users", "60",
                 "--out-json", str(out_json)]) == 0
    assert "cold-item slice" in capsys.readouterr().out
    qi = json.loads(out_json.read_text())
    assert qi["users"] == 60 and qi["text_tower"] is True
    # "of" and "the" are stop words: every query names the target's colour and noun
    assert qi["cold"]["HR@10_query"] > qi["cold"]["HR@10"]
    assert qi["latency"]["warm_query"]["calls"] == 60 and qi["cold_items"]["targets"] >= 0
    assert qi["split"] == "test"
    valid_json = tmp_path / "qi-valid.json"
    assert main(["evaluate", str(res.bundle_dir), "--data", str(data), "--query-intent", "--users", "60",
                 "--split", "valid", "--out-json", str(valid_json)]) == 0
    qv = json.loads(valid_json.read_text())
    assert qv["split"] == "valid" and qv["users"] == 60 and qv["cold"]["HR@10_query"] > qv["cold"]["HR@10"]


def test_newest_only_encoding_matches_the_full_encoding() -> None:
    model = SASRec(20, dim=8, n_layers=2, max_len=6).eval()
    hist = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7], [1, 2, 3, 4, 5, 6]])
    table = model.item_table()
    full = model.encode(hist, table)
    newest = model.encode(hist, table, newest_only=True)
    assert newest.shape == (3, 1, 8)
    assert torch.allclose(newest, full[:, -1:], atol=1e-6)


def test_text_table_is_the_text_towers_mean_forward_and_backward() -> None:
    # training computes every item's text part as one sparse product; it must be text_vector, row by row,
    # with the same gradient (the exported query path and edge-added items use text_vector itself)
    torch.manual_seed(3)
    n, vocab = 200, 90
    tokens = torch.randint(0, vocab, (n + 1, 10))
    tokens[0] = 0
    tokens[4] = 0  # an item without text
    tokens[6, :4] = 7  # a token repeated within one item counts as often as it appears
    model = SASRec(n, item_tokens=tokens, vocab_size=vocab)
    weights = torch.randn(n + 1, model.dim)
    (model.item_table() * weights).sum().backward()
    assert model.token_emb is not None and model.token_emb.weight.grad is not None
    sparse_grad = model.token_emb.weight.grad.clone()
    model.zero_grad()
    dense = model.item_emb.weight + model.text_vector(tokens)
    dense = dense * (torch.arange(n + 1) > 0).unsqueeze(1)
    (dense * weights).sum().backward()
    assert torch.allclose(model.item_table(), dense, atol=1e-6)
    assert torch.allclose(sparse_grad, model.token_emb.weight.grad, atol=1e-6)
    assert model.item_table()[4].equal(model.item_emb.weight[4])


def test_large_models_quantize_their_tables_too() -> None:
    from edgerec_sdk.train.export import FLOAT_TABLES_MAX_BYTES, quantized_ops

    assert quantized_ops(b"x" * 100) == ["MatMul", "Gemm"]
    assert quantized_ops(b"x" * FLOAT_TABLES_MAX_BYTES) == ["MatMul", "Gemm"]
    assert quantized_ops(b"x" * (FLOAT_TABLES_MAX_BYTES + 1)) == ["MatMul", "Gemm", "Gather"]


@pytest.mark.parametrize("mode", ["single", "refit", "search"])
def test_each_fit_mode_trains_on_what_it_says_and_never_on_a_test_item(
        mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgerec_sdk.train.train as train_module
    from edgerec_sdk.train.data import leave_one_out

    seqs = [np.array([(s + i) % 30 for i in range(6 + s % 4)]) for s in range(30) for _ in range(100)]
    split = leave_one_out(seqs)
    calls: list[dict[str, object]] = []
    real_fit = train_module.fit

    def spy(seqs_: list[np.ndarray], *args: object, **kwargs: object) -> object:
        validate = kwargs.get("validate")
        calls.append({"seqs": [s.copy() for s in seqs_], "desc": kwargs.get("desc"), "validates": validate is not None})
        return real_fit(seqs_, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "fit", spy)
    cfg = TrainConfig(dim=8, max_len=8, batch_size=64, threads=1, max_epochs=2, fit=mode, holdout_min=100)
    result = train_module.train(split, 30, cfg, progress=False)
    assert [c["desc"] for c in calls] == {"single": ["fit"], "refit": ["search", "refit"], "search": ["search"]}[mode]
    assert calls[0]["validates"]
    held = {int(u) for u in train_module.holdout_users(split.valid_users, cfg)} if mode == "single" else \
        {int(u) for u in split.valid_users}
    # 10 % of 3,000 users with a validation item, at least 100 of them
    assert len(held) == (300 if mode == "single" else 3000) == result.config["validation_users"]
    for u, (first, full) in enumerate(zip(calls[0]["seqs"], split.train_full, strict=True)):  # type: ignore[call-overload]
        assert len(first) == len(full) - (1 if u in held else 0)  # held-out users stop before their validation item
        assert np.array_equal(first, full[: len(first)])  # never past seq[:-1]: the test item stays unseen
    if mode == "refit":
        assert all(np.array_equal(a, b) for a, b in zip(calls[1]["seqs"], split.train_full, strict=True))  # type: ignore[call-overload]


def test_holdout_users_are_seeded_and_bounded() -> None:
    from edgerec_sdk.train.train import holdout_users

    users = np.arange(5000, dtype=np.int64) * 3
    a = holdout_users(users, TrainConfig(seed=1))
    assert len(a) == 1000 and np.all(np.diff(a) > 0) and set(a.tolist()) <= set(users.tolist())
    assert np.array_equal(a, holdout_users(users, TrainConfig(seed=1)))
    assert not np.array_equal(a, holdout_users(users, TrainConfig(seed=2)))
    assert len(holdout_users(users, TrainConfig(holdout_share=0.5))) == 2500
    assert len(holdout_users(users[:700], TrainConfig())) == 350  # a small store: half, not all of them
    assert len(holdout_users(users[:3], TrainConfig())) == 1


def test_weight_average_tracks_an_ema_of_the_steps_and_is_what_validation_and_export_see(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import edgerec_sdk.train.train as train_module
    from edgerec_sdk.train.averaging import WeightAverage
    from edgerec_sdk.train.data import leave_one_out
    from edgerec_sdk.train.train import evaluate_torch, fit

    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    avg = WeightAverage(layer, horizon=4.0)
    expected = [p.detach().clone() for p in layer.parameters()]
    for step in range(1, 8):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
        avg.update()
        decay = min(0.75, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, layer.parameters(), strict=True)]
    for s, e in zip(avg.shadow, expected, strict=True):
        assert torch.allclose(s, e, atol=1e-6)
    raw = [p.detach().clone() for p in layer.parameters()]
    avg.swap()
    assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(layer.parameters(), expected, strict=True))
    assert all(torch.equal(s, r) for s, r in zip(avg.shadow, raw, strict=True))
    avg.swap()
    assert all(torch.equal(p, r) for p, r in zip(layer.parameters(), raw, strict=True))

    # in a fit: validation scores the averaged weights, and the returned model holds them
    seqs = [np.array([(s + i) % 30 for i in range(8)]) for s in range(30) for _ in range(6)]
    split = leave_one_out(seqs)
    hist = [split.train[u] for u in split.valid_users]
    seen: list[list[torch.Tensor]] = []
    made: list[WeightAverage] = []

    def validate(model: SASRec) -> float:
        # the optimiser's raw weights sit in the average's shadow while validation runs
        assert not all(torch.equal(p, s) for p, s in zip(model.parameters(), made[0].shadow, strict=True))
        seen.append([p.detach().clone() for p in model.parameters()])
        return evaluate_torch(model, hist, split.valid_targets)["NDCG@10"]

    class Spy(WeightAverage):
        def __init__(self, model: torch.nn.Module, horizon: float) -> None:
            super().__init__(model, horizon)
            made.append(self)

    cfg = TrainConfig(dim=16, max_len=8, batch_size=32, threads=1, dropout=0.1, lr=5e-3, average_epochs=1.0,
                      patience=50)
    monkeypatch.setattr(train_module, "WeightAverage", Spy)
    model, history, best_epoch, _ = fit(split.train, 30, cfg, epochs=3, validate=validate, progress=False)
    steps = made[0].steps
    assert len(made) == 1 and steps % 3 == 0 and made[0].limit == pytest.approx(1 - 3 / steps)  # an epoch of steps
    assert max(history["valid_ndcg10"]) > 0.3
    # the model returned is the averaged state validation chose
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), seen[best_epoch - 1], strict=True))
