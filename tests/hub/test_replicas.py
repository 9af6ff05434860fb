"""Stateless hub replicas: two hubs on one real PostgreSQL, each with its own root directory (nothing shared but
the database), behind which edges update and deliver feedback."""

from __future__ import annotations

from pathlib import Path

from acceptance.support import ADMIN, EDGE, bundle, connect, publish_http

from edgerec_sdk.hub import HubApp, serve_in_thread


def replica(root: Path, pg_url: str) -> HubApp:
    return HubApp(root, admin_tokens=[ADMIN], edge_tokens=[EDGE], db=pg_url)


def test_publish_through_a_edge_on_b_swaps_within_two_polls(pg_url: str, tmp_path: Path) -> None:
    with serve_in_thread(replica(tmp_path / "root-a", pg_url)) as a, \
            serve_in_thread(replica(tmp_path / "root-b", pg_url)) as b:
        publish_http(a.url, bundle(tmp_path, "v1"))
        rec = connect(b.url, tmp_path / "edge", start=False)
        rec.poll_once()
        assert rec.status().model_version == "v1"
        publish_http(a.url, bundle(tmp_path, "v2", seed=1))
        polls = 0
        while rec.status().model_version != "v2" and polls < 2:
            rec.poll_once()
            polls += 1
        assert rec.status().model_version == "v2" and rec.status().sync["bundle_origin"] == "hub"
        assert not (tmp_path / "root-b" / "bundles" / "v2").exists()  # served out of PostgreSQL
        assert not any((tmp_path / "root-a" / "bundles").iterdir())
        rec.close(5.0)
        a.app.close()
        b.app.close()
