"""Property-based checks (hypothesis, bounded examples) over recommend, feedback, manifests and Retry-After."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerec_sdk import EventError
from edgerec_sdk.bundle.manifest import Manifest, check_file_name
from edgerec_sdk.errors import ModelError
from edgerec_sdk.sync import protocol
from edgerec_sdk.testing import FakeHub

from .conftest import balanced, connect, outbox

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ITEMS = [f"item-{i:06d}" for i in range(1, 21)]
ids = st.one_of(st.sampled_from(ITEMS), st.text(max_size=40))
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=8))


def test_recommend_arguments_property(hub: FakeHub, tmp_path: Path) -> None:
    rec = connect(hub, tmp_path / "state")
    rec.poll_once()

    @FAST
    @given(user=st.one_of(st.text(max_size=300), st.integers(), anything), k=st.one_of(st.integers(-3, 3000), anything),
           history=st.one_of(st.none(), st.lists(ids, max_size=30)), exclude=st.lists(ids, max_size=10))
    def check(user: Any, k: Any, history: Any, exclude: list[str]) -> None:
        try:
            r = rec.recommend(user, k=k, history=history, exclude=exclude)
        except (TypeError, ValueError):
            return
        got = [i.item_id for i in r]
        assert not r.degraded and len(got) <= min(k, len(ITEMS)) and len(set(got)) == len(got)
        assert not set(got) & set(exclude)

    check()
    rec.close(0.5)


def test_feedback_arguments_property_keeps_accounts(hub: FakeHub, tmp_path: Path) -> None:
    rec = connect(hub, tmp_path / "state")
    ok = [0]

    @FAST
    @given(event=st.dictionaries(
        st.sampled_from(["user", "item", "type", "ts", "value", "rec_id", "event_id", "query", "extra"]),
        st.one_of(anything, st.sampled_from(["click", "view", "purchase", "u1", *ITEMS]), st.floats(0, 2e9)),
        max_size=8))
    def check(event: dict[str, Any]) -> None:
        try:
            accepted = rec.feedback(event)
        except (EventError, TypeError, ValueError):
            return
        ok[0] += bool(accepted)

    check()
    o = outbox(rec)
    assert balanced(o) and o["accepted"] + o["duplicates"] == ok[0]
    assert rec.flush(10.0) and len(hub.events) == outbox(rec)["delivered"]
    rec.close(0.5)


def _valid_manifest(bundles: dict[str, Path]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((bundles["v1"] / "manifest.json").read_bytes())
    return doc


def test_manifest_parsing_property(bundles: dict[str, Path]) -> None:
    base = _valid_manifest(bundles)
    json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                         st.text(max_size=20)),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3), max_leaves=8)

    @settings(max_examples=120, deadline=None)
    @given(raw=st.one_of(st.binary(max_size=200), st.builds(lambda k, v: (k, v), st.sampled_from(sorted(base)),
                                                            json_values)))
    def check(raw: Any) -> None:
        if isinstance(raw, tuple):
            doc = dict(base)
            doc[raw[0]] = raw[1]
            raw = json.dumps(doc).encode()
        try:
            m = Manifest.from_bytes(raw, source="prop")
        except ModelError:
            return  # the only way to fail
        for name in m.files:
            assert check_file_name(name) == name and "/" not in name and not name.startswith(".")

    check()


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=300))
def test_file_names_never_become_paths_property(name: str) -> None:
    try:
        check_file_name(name)
    except ModelError:
        return
    root = Path("/staging")
    assert (root / name).resolve().parent == root and "\x00" not in name


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.none(), st.text(max_size=40), st.integers().map(str), st.floats().map(str)))
def test_retry_after_parsing_property(value: str | None) -> None:
    got = protocol.parse_retry_after(value, now_s=1_700_000_000.0, max_s=300.0)
    assert got is None or 0.0 <= got <= 300.0
