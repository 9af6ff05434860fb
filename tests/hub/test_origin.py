"""External origin: bundle files uploaded with ``edgerec publish --origin s3://...`` to a local S3-compatible
server (moto's, started here on loopback), fetched from there by edges and verified like any hub download."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from acceptance.support import ADMIN, bundle, connect

from edgerec_sdk.cli import main
from edgerec_sdk.hub import HubApp, serve_in_thread

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (extra [dev])")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (extra [origin])")
BUCKET = "edgerec-models"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway S3-compatible endpoint with one bucket; credentials only in this test's environment."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def publish_to_origin(hub_url: str, bundle_dir: Path, endpoint: str, *more: str) -> int:
    return main(["publish", str(bundle_dir), "--hub", hub_url, "--token", ADMIN, "--channel", "stable",
                 "--origin", f"s3://{BUCKET}/fleet", "--origin-endpoint", endpoint, "--origin-acl", "public-read",
                 *more])


def test_edges_fetch_from_the_origin_and_refuse_a_tampered_object(s3: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=["edge-token"])
    with serve_in_thread(app) as hub:
        v1 = bundle(tmp_path, "v1")
        assert publish_to_origin(hub.url, v1, s3) == 0
        assert sorted(p.name for p in (tmp_path / "hub" / "bundles" / "v1").iterdir()) == ["manifest.json",
                                                                                            "signature"]
        rec = connect(hub.url, tmp_path / "edge", start=False)
        rec.poll_once()
        assert rec.status().model_version == "v1"  # every file came from the origin, verified
        assert rec.recommend("u1", k=3).degraded is False
        v2 = bundle(tmp_path, "v2", seed=3)
        assert publish_to_origin(hub.url, v2, s3) == 0
        client = boto3.client("s3", endpoint_url=s3)
        key = "fleet/v2/items.int8.npy"
        body = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        body[-1] ^= 0xFF  # same size, other bytes: only the sha256 can tell
        client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body), ACL="public-read")
        rec.poll_once()
        status = rec.status()
        assert status.model_version == "v1"  # the tampered candidate never serves
        refusal = status.sync["refusals"][-1]
        assert refusal["version"] == "v2" and "sha256" in refusal["message"]
        assert status.sync["refusals_by_reason"] == {refusal["reason"]: 1}
        assert publish_to_origin(hub.url, bundle(tmp_path, "v3", seed=4), s3, "--rollout", "50") == 0
        rec.poll_once()  # a rollout candidate's files come from the origin too
        assert rec.status().sync["candidate_version"] == "v3" and rec.status().model_version == "v1"
        rec.close(5.0)
    app.close()
    capsys.readouterr()


def test_bad_origin_or_database_is_one_clear_error_at_start(s3: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    v1 = bundle(tmp_path, "v1")
    hub = ["--hub", "http://127.0.0.1:9", "--token", ADMIN]  # never reached: the origin is checked first
    assert main(["publish", str(v1), *hub, "--origin", "s3://no-such-bucket/x", "--origin-endpoint", s3]) == 2
    err = capsys.readouterr().err
    assert "bucket does not exist" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["publish", str(v1), *hub, "--origin", "https://not-s3/x"]) == 2
    assert "s3://bucket/prefix" in capsys.readouterr().err
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert main(["publish", str(v1), *hub, "--origin", f"s3://{BUCKET}/x", "--origin-endpoint", s3]) == 2
    err = capsys.readouterr().err
    assert "no AWS credentials" in err and "Traceback" not in err
    with socket.socket() as s:  # a database nobody listens on
        s.bind(("127.0.0.1", 0))
        db = f"postgresql://edgerec@127.0.0.1:{s.getsockname()[1]}/edgerec?connect_timeout=2"
    assert main(["hub", "serve", "--root", str(tmp_path / "root"), "--db", db, "--admin-token", ADMIN]) == 2
    err = capsys.readouterr().err
    assert "postgresql" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["hub", "serve", "--root", str(tmp_path / "root"), "--db", "postgresql://[bad", "--admin-token",
                 ADMIN]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
