"""Signed channel artifacts end to end: the real hub app (in process), the real client and follower."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edgerec_sdk.bundle.delta import make_delta
from edgerec_sdk.bundle.verify import sign_bytes
from edgerec_sdk.errors import CatalogueError, HubAuthError, HubStatusError
from edgerec_sdk.hub import HubApp
from edgerec_sdk.sync import Artifact, ArtifactFollower, HubClient
from sync.helpers import ADMIN, EDGE, KEY, new_hub


def client(app: HubApp, token: str) -> HubClient:
    return HubClient("http://hub", token=token, transport=httpx.WSGITransport(app=app))


def delta(item: str) -> bytes:
    return make_delta([{"id": item, "title": f"title of {item}"}]).to_bytes()


def follower(app: HubApp, applied: list[Artifact], tmp_path: Path | None = None, **kw: object) -> ArtifactFollower:
    def apply(art: Artifact) -> None:
        if b"poison" in art.body:
            raise CatalogueError("poisoned row", reason="bad_delta")
        applied.append(art)

    return ArtifactFollower(client(app, EDGE), channel="stable", kind="catalogue", signing_key=KEY, apply=apply,
                            state_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_signed_artifacts_arrive_in_order_and_bad_ones_are_refused_with_reasons(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    admin = client(app, ADMIN)
    good1, good2, tampered, unsigned = delta("a"), delta("b"), delta("c"), delta("d")
    admin.publish_artifact("stable", "catalogue", good1, signature=sign_bytes(good1, KEY))
    admin.publish_artifact("stable", "catalogue", tampered, signature=sign_bytes(good1, KEY))
    admin.publish_artifact("stable", "catalogue", unsigned, signature=None)
    admin.publish_artifact("stable", "catalogue", good2, signature=sign_bytes(good2, KEY))
    applied: list[Artifact] = []
    f = follower(app, applied, tmp_path / "edge")
    f.poll_once()
    assert [a.body for a in applied] == [good1, good2]
    assert [(r["seq"], r["reason"]) for r in f.status()["refusals"]] == [(2, "signature_invalid"), (3, "unsigned")]
    f.poll_once()  # nothing new: nothing applied twice
    assert len(applied) == 2 and f.applied_seq == 4
    # a restarted edge replays what it accepted, verified again, before reaching the hub
    replayed: list[Artifact] = []
    again = follower(app, replayed, tmp_path / "edge")
    assert again.load_saved() == 2 and [a.seq for a in replayed] == [1, 4]


def test_apply_refusal_is_recorded_and_later_artifacts_still_apply(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    admin = client(app, ADMIN)
    poison = make_delta([{"id": "poison", "title": "x"}]).to_bytes()
    ok = delta("fine")
    for body in (poison, ok):
        admin.publish_artifact("stable", "catalogue", body, signature=sign_bytes(body, KEY))
    applied: list[Artifact] = []
    f = follower(app, applied)
    f.poll_once()
    assert [a.body for a in applied] == [ok]
    assert f.status()["refusals"][0]["reason"] == "bad_delta"


def test_hub_refuses_malformed_oversized_and_non_admin_artifacts(tmp_path: Path) -> None:
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE], max_artifact_bytes=4096)
    admin, edge = client(app, ADMIN), client(app, EDGE)
    with pytest.raises(HubStatusError) as bad:
        admin.publish_artifact("stable", "catalogue", b'{"format": "edgerec-catalogue-delta/1", "upsert": [{}]}',
                               signature=None)
    assert bad.value.status == 400
    with pytest.raises(HubStatusError) as big:
        admin.publish_artifact("stable", "catalogue", b"x" * 5000, signature=None)
    assert big.value.status == 413
    with pytest.raises(HubStatusError) as kind:
        admin.publish_artifact("stable", "nonsense", delta("a"), signature=None)
    assert kind.value.status == 404
    with pytest.raises(HubAuthError):
        edge.publish_artifact("stable", "catalogue", delta("a"), signature=None)
    assert app.storage.list_artifacts("stable", "catalogue") == []


def test_follower_refuses_an_artifact_over_its_cap_unread(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    body = make_delta([{"id": f"i{n}", "title": "t" * 100} for n in range(50)]).to_bytes()
    client(app, ADMIN).publish_artifact("stable", "catalogue", body, signature=sign_bytes(body, KEY))
    applied: list[Artifact] = []
    f = follower(app, applied, max_bytes=1000)
    f.poll_once()
    assert applied == [] and f.status()["refusals"][0]["reason"] == "too_large"
