"""Attacks on the updater that once got through (docs/reliability.md, section H), through the FakeHub."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from edgerec_sdk.sync import protocol
from edgerec_sdk.testing import FakeClock, FakeHub, Fault

from .conftest import SIGNING, connect, edge, stamp


def staged(state: Path) -> list[str]:
    return [p.name for p in (state / "staging").rglob("*") if p.is_file()]


def test_interrupted_downloads_leave_no_staging_files(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                      bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    # the first file arrives whole, the second fails: before, the first stayed in staging until a restart
    for failure in (Fault.http(503), Fault.http(404), Fault.http(500)):
        hub.inject("file", Fault(), failure)
        sync.poll_once()
        assert sync.status()["model_version"] == "v1"
        assert staged(state) == []
    # a reset mid-file keeps that one partial file for the Range resume (fault A05) ...
    hub.inject("file", Fault.reset(after_bytes=10))
    sync.poll_once()
    assert len(staged(state)) == 1
    # ... until the hub moves on to another version: the abandoned partial goes then, not at the next restart
    hub.publish(bundles["v3"])
    sync.poll_once()
    assert sync.status()["model_version"] == "v3"
    assert staged(state) == []
    sync.close(0)


class _HeaderAttack(httpx.BaseTransport):
    """Adds unsigned headers to every manifest answer of the wrapped hub."""

    def __init__(self, inner: httpx.BaseTransport, headers: dict[str, str]) -> None:
        self.inner, self.headers = inner, headers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.url.path.endswith("/manifest") and resp.status_code == 200:
            resp.headers.update(self.headers)
        return resp


@pytest.mark.parametrize("headers", [
    {protocol.CANDIDATE_HEADER: "../../x", protocol.ROLLOUT_HEADER: "50"},
    {protocol.CANDIDATE_HEADER: "v2", protocol.ROLLOUT_HEADER: "nan"},
    {protocol.CANDIDATE_HEADER: "v2", protocol.ROLLOUT_HEADER: "1e400"},
    {protocol.CANDIDATE_HEADER: "v2"},
])
def test_unsigned_hub_header_cannot_break_poll_once(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                    headers: dict[str, str]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    assert sync.status()["model_version"] == "v1"
    sync.updater.on_candidate = lambda bundle, percent: None  # follow rollouts, as a Recommender does
    sync.updater.client._transport = _HeaderAttack(hub, headers)
    sync.updater.client.postfork()  # rebuild the httpx client around the attacking transport
    sync.updater._etag = None
    assert sync.poll_once() > 0  # before: ValueError("not a valid path segment") out of poll_once
    s = sync.status()
    assert s["model_version"] == "v1" and s["candidate_version"] is None
    assert s["last_update_error"]["reason"] == "hub_protocol"
    assert "X-Edgerec-Rollout-" in s["last_update_error"]["message"]
    assert not (tmp_path / "x").exists() and not (state.parent / "x").exists()
    sync.close(0)


def test_no_exception_escapes_poll_once(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                        bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug anywhere below the updater")

    monkeypatch.setattr(sync.updater, "_apply", broken)
    hub.publish(bundles["v2"])
    assert sync.poll_once() > 0
    assert sync.status()["last_update_error"]["reason"] == "internal_error"
    sync.close(0)


def test_manifest_from_the_future_cannot_lock_out_later_bundles(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                                bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    future = stamp(shutil.copytree(bundles["v2"], tmp_path / "v2-2099"), "2099-01-01T00:00:00Z")
    hub.publish(future)
    sync.poll_once()
    s = sync.status()
    assert s["model_version"] == "v1" and s["last_update_error"]["reason"] == "from_the_future"
    hub.publish(bundles["v3"])  # a later, honest bundle: before, refused as older than the 2099 stamp
    sync.poll_once()
    assert sync.status()["model_version"] == "v3"
    sync.close(0)


def test_high_water_mark_from_the_future_is_ignored(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                    bundles: dict[str, Path]) -> None:
    # what an older SDK left after accepting a 2099 manifest: the mark alone must not lock the edge out
    state = tmp_path / "state"
    (state / "high_water").mkdir(parents=True)
    (state / "high_water" / "stable.json").write_bytes(orjson.dumps(
        {"channel": "stable", "created_at": "2099-01-01T00:00:00Z", "model_version": "v9"}))
    sync = edge(hub, state, clock)
    sync.poll_once()
    assert sync.status()["model_version"] == "v1"
    hub.publish(bundles["v2"])
    sync.poll_once()
    assert sync.status()["model_version"] == "v2"
    mark = orjson.loads((state / "high_water" / "stable.json").read_bytes())
    assert mark["model_version"] == "v2"  # the mark is repaired by the next accepted bundle
    sync.close(0)


# --- untrusted models: shapes, deadlines, memory, tables ---------------------------------------------------


def _with_side_branch(model_bytes: bytes, kind: str) -> bytes:
    """The interest model plus a branch whose result is multiplied by 0 and added to the output.

    ``wedge``: a Loop of 10**12 iterations when the batch has exactly one row (passes a batch-3 smoke test);
    ``hog``: a 600 MB tensor per row of the batch.
    """
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    for node in g.node:
        node.output[:] = ["interest_core" if o == "interest" else o for o in node.output]
    inits = [helper.make_tensor("k_zero_f", T.FLOAT, [], [0.0]), helper.make_tensor("k_idx0", T.INT64, [], [0]),
             helper.make_tensor("k_one_i", T.INT64, [], [1]), helper.make_tensor("k_axes0", T.INT64, [1], [0])]
    nodes = [helper.make_node("Shape", ["history"], ["k_shape"]),
             helper.make_node("Gather", ["k_shape", "k_idx0"], ["k_batch"], axis=0)]
    if kind == "wedge":
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Add", ["x_in", "b_one"], ["x_out"])],
            "spin",
            [helper.make_tensor_value_info("i", T.INT64, []), helper.make_tensor_value_info("c_in", T.BOOL, []),
             helper.make_tensor_value_info("x_in", T.FLOAT, [])],
            [helper.make_tensor_value_info("c_out", T.BOOL, []), helper.make_tensor_value_info("x_out", T.FLOAT, [])],
            [helper.make_tensor("b_one", T.FLOAT, [], [1.0])])
        inits += [helper.make_tensor("k_big", T.INT64, [], [10**12]), helper.make_tensor("k_true", T.BOOL, [], [True])]
        nodes += [helper.make_node("Equal", ["k_batch", "k_one_i"], ["k_is1"]),
                  helper.make_node("Cast", ["k_is1"], ["k_is1i"], to=T.INT64),
                  helper.make_node("Mul", ["k_is1i", "k_big"], ["k_trips"]),
                  helper.make_node("Loop", ["k_trips", "k_true", "k_zero_f"], ["k_spun"], body=body),
                  helper.make_node("Mul", ["k_spun", "k_zero_f"], ["k_side"])]
    else:
        inits += [helper.make_tensor("k_n", T.INT64, [], [150_000_000])]
        nodes += [helper.make_node("Mul", ["k_batch", "k_n"], ["k_count"]),
                  helper.make_node("Unsqueeze", ["k_count", "k_axes0"], ["k_dims"]),
                  helper.make_node("ConstantOfShape", ["k_dims"], ["k_big"],
                                   value=helper.make_tensor("v", T.FLOAT, [1], [1.0])),
                  helper.make_node("ReduceSum", ["k_big"], ["k_total"], keepdims=0),
                  helper.make_node("Mul", ["k_total", "k_zero_f"], ["k_side"])]
    nodes.append(helper.make_node("Add", ["interest_core", "k_side"], ["interest"]))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return model.SerializeToString()


def _bad_model_bundle(src: Path, dest: Path, kind: str) -> Path:
    from sync.helpers import replace_file

    out = Path(shutil.copytree(src, dest))
    return replace_file(out, "interest.onnx", _with_side_branch((out / "interest.onnx").read_bytes(), kind),
                        key=SIGNING)


def test_model_that_wedges_batch_one_is_caught_by_the_smoke_test(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                                  bundles: dict[str, Path]) -> None:
    rec = connect(hub, tmp_path / "state", smoke_in_subprocess=True, smoke_timeout_s=20.0)
    rec.poll_once()
    hub.publish(_bad_model_bundle(bundles["v2"], tmp_path / "wedge", "wedge"))
    worker = threading.Thread(target=rec.poll_once, daemon=True)
    worker.start()
    worker.join(60.0)  # before: the batch-3 smoke test passed and the batch-1 warm-up spun forever
    assert not worker.is_alive()
    s = rec.status().sync
    assert s["model_version"] == "v1" and s["last_update_error"]["reason"] == "smoke_timeout"
    assert rec.recommend("someone", k=3).model_version == "v1"
    rec.close()


def test_wedged_warm_up_is_bounded_and_never_holds_the_update_lock(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                                   bundles: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edgerec_sdk import RecommenderConfig

    rec = connect(hub, tmp_path / "state", config=RecommenderConfig(warmup_timeout_s=2.0))
    rec.poll_once()
    # a model the smoke test cannot catch (it wedges only in the serving process): skip the smoke test
    monkeypatch.setattr("edgerec_sdk.sync.updater.check_bundle", lambda bundle: None)
    hub.publish(_bad_model_bundle(bundles["v2"], tmp_path / "wedge", "wedge"))
    worker = threading.Thread(target=rec.poll_once, daemon=True)
    worker.start()
    waiting = threading.Event()
    while (rec.status().sync["update_in_progress"] or {}).get("stage") != "swap" and worker.is_alive():
        waiting.wait(0.02)
    started = time.monotonic()
    assert rec.poll_once() > 0  # before: blocked on the updater's lock for as long as the warm-up spun
    assert time.monotonic() - started < 1.0
    assert rec.status().sync["update_in_progress"]["stage"] == "swap"
    worker.join(30.0)
    assert not worker.is_alive()
    s = rec.status().sync
    assert s["model_version"] == "v1" and s["last_update_error"]["reason"] == "warmup_timeout"
    assert s["update_in_progress"] is None
    assert rec.recommend("someone", k=3).model_version == "v1"
    rec.close()


def test_smoke_child_memory_budget_refuses_a_hungry_model(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                          bundles: dict[str, Path]) -> None:
    sync = edge(hub, tmp_path / "state", clock, smoke_in_subprocess=True, smoke_timeout_s=60.0,
                smoke_max_memory_mb=400)
    sync.poll_once()
    hub.publish(_bad_model_bundle(bundles["v2"], tmp_path / "hog", "hog"))  # 600 MB per row
    sync.poll_once()  # before: the child had no limit, the model passed and was swapped in
    s = sync.status()
    assert s["model_version"] == "v1" and s["last_update_error"]["reason"] == "smoke_memory"
    assert "memory budget of 400 MiB" in s["last_update_error"]["message"]
    sync.close(0)


def test_bundle_with_more_items_than_the_model_table_is_refused_at_load(tmp_path: Path) -> None:
    from sync.helpers import replace_file

    from edgerec_sdk import Recommender
    from edgerec_sdk.bundle import load_bundle
    from edgerec_sdk.errors import ModelError
    from edgerec_sdk.sync.smoke import check_bundle
    from edgerec_sdk.testing import make_interest_model, make_tiny_bundle

    b = make_tiny_bundle(tmp_path / "b", model_version="v1")  # 20 items
    small = make_interest_model(np.ones((12, 8), dtype=np.float32), max_seq_len=10)  # a table of 12 items
    replace_file(b, "interest.onnx", small, key=None)
    with pytest.raises(ModelError, match="item table does not cover the catalogue") as exc:
        Recommender.from_bundle(b)  # before: loaded, then model_error for anyone who saw items 13-20
    assert getattr(exc.value, "reason", None) == "contract"
    with pytest.raises(ModelError, match="row 19 of 20"):
        check_bundle(load_bundle(b))
