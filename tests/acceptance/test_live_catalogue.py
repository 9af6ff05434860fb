"""Acceptance: the live catalogue over a loopback hub. ``edgerec items upsert/delete`` publish signed deltas;
two edges apply each within two polls while readers whose histories hold the new item get personalised
answers with zero errors; a tampered or unsigned delta is refused with its reason and the catalogue before
it keeps serving; malformed input is refused before anything is sent."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgerec_sdk import Recommender
from edgerec_sdk.bundle.delta import make_delta
from edgerec_sdk.bundle.verify import sign_bytes
from edgerec_sdk.cli import main
from edgerec_sdk.sync import HubClient
from edgerec_sdk.testing import make_text_bundle

from .support import ADMIN, KEY, connect, publish_http, running_hub


def items_cli(*args: str, hub: str) -> int:
    return main(["items", *args, "--hub", hub, "--token", ADMIN, "--signing-key", KEY.decode()])


def visible(rec: Recommender, item: str) -> bool:
    return item in rec.recommend("shopper", k=5, query="green mascara").item_ids


def within_two_polls(edges: list[Recommender], check: object) -> None:
    for rec in edges:
        polls = 0
        while not check(rec):  # type: ignore[operator]
            assert polls < 2, "not applied within two polls"
            rec.poll_once()
            polls += 1


def test_live_catalogue_over_a_loopback_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "new.csv"
    feed.write_text("id,title,price,in_stock,attributes,colour\nNEW-1,green mascara deluxe,12.5,true,,green\n")
    errors: list[str] = []
    stop = threading.Event()
    with running_hub(tmp_path / "hub") as hub:
        publish_http(hub.url, make_text_bundle(tmp_path / "b", n_items=150, model_version="t1", signing_key=KEY))
        edges = [connect(hub.url, tmp_path / f"edge{i}", start=False) for i in range(2)]
        for rec in edges:
            rec.poll_once()
            assert rec.status().model_version == "t1" and not visible(rec, "NEW-1")

        def reader(rec: Recommender, t: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    out = rec.recommend(f"u{t}-{n % 3}", k=5, history=["item-000001", "NEW-1"][: 1 + n % 2],
                                        query="mascara" if n % 3 == 0 else None)
                except Exception as exc:  # any error fails the test
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                if out.degraded or len(out.items) != 5 or {r.source for r in out.items} != {"personalized"}:
                    errors.append(f"degraded={out.degraded_reason} sources={[r.source for r in out.items]}")

        readers = [threading.Thread(target=reader, args=(rec, t)) for t, rec in enumerate(edges * 2)]
        for th in readers:
            th.start()
        try:
            assert items_cli("upsert", str(feed), hub=hub.url) == 0
            assert '"sent":true' in capsys.readouterr().out
            within_two_polls(edges, lambda rec: visible(rec, "NEW-1"))
            assert all(rec.items["NEW-1"]["price"] == 12.5 for rec in edges)

            feed.write_text("id,in_stock\nNEW-1,false\n")
            assert items_cli("upsert", str(feed), hub=hub.url) == 0
            within_two_polls(edges, lambda rec: not visible(rec, "NEW-1"))

            feed.write_text("id,in_stock\nNEW-1,true\n")
            assert items_cli("upsert", str(feed), hub=hub.url) == 0
            within_two_polls(edges, lambda rec: visible(rec, "NEW-1"))

            # tampered (signed over other bytes) and unsigned deltas: refused with the reason, nothing changes
            admin = HubClient(hub.url, token=ADMIN)
            evil = make_delta(deletes=["NEW-1"]).to_bytes()
            admin.publish_artifact("stable", "catalogue", evil, signature=sign_bytes(b"something else", KEY))
            admin.publish_artifact("stable", "catalogue", evil, signature=None)
            admin.close()
            for rec in edges:
                rec.poll_once()
                refusals = rec.status().sync["artifacts"]["catalogue"]["refusals"]
                assert [r["reason"] for r in refusals] == ["signature_invalid", "unsigned"]
                assert visible(rec, "NEW-1")

            assert items_cli("delete", "NEW-1", hub=hub.url) == 0
            within_two_polls(edges, lambda rec: not visible(rec, "NEW-1") and "NEW-1" not in rec.items)
        finally:
            stop.set()
            for th in readers:
                th.join(10.0)
        assert errors == []
        # a restarted edge serves the same catalogue from disk before it reaches the hub
        again = connect(hub.url, tmp_path / "edge0", start=False)
        assert "NEW-1" not in again.items and again.items.live.applied == 4
        for rec in [*edges, again]:
            rec.close()


@pytest.mark.parametrize(("content", "extra", "reason"), [
    ("id,title\n,no id here\n", [], "has no id"),
    ("id,title\nA,one\nA,two\n", [], "appears twice"),
    ("id,weight\nA,3\n", ["--column-type", "weight=datetime"], "unknown type 'datetime'"),
    (None, [], "over the cap"),
])
def test_bad_input_is_refused_and_nothing_is_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  content: str | None, extra: list[str], reason: str) -> None:
    feed = tmp_path / "feed.csv"
    if content is None:
        with open(feed, "wb") as f:  # 100 MB on paper (sparse), over the 64 MiB default cap
            f.truncate(100 * 1024 * 1024)
    else:
        feed.write_text(content)
    with running_hub(tmp_path / "hub") as hub:
        assert items_cli("upsert", str(feed), *extra, hub=hub.url) == 2
        assert reason in capsys.readouterr().err
        assert hub.app.storage.list_artifacts("stable", "catalogue") == []
