"""Faults F: secrets never in logs, messages or repr; TLS verified; raw user ids never on the wire."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from edgerec_sdk.errors import HubError
from edgerec_sdk.sync.client import HubClient
from edgerec_sdk.testing import FakeHub, Fault

from .conftest import RAW_USERS, SECRETS, TOKEN, balanced, click, connect, edge, leaked, outbox


def test_f03_tokens_never_logged(hub: FakeHub, tmp_path: Path, bundles: dict[str, Path], debug_log: object) -> None:
    """A representative slice at DEBUG (every tests/faults test also runs under the same grep)."""
    rec = connect(hub, tmp_path / "state")
    texts: list[str] = [repr(rec), repr(rec._sync), repr(rec._sync.config), repr(rec._sync.client)]
    hub.inject("manifest", Fault.http(401), Fault.http(500), Fault.html())
    for _ in range(4):
        rec.poll_once()
    hub.publish(bundles["v2"])
    hub.inject("file", Fault.reset(50))
    rec.poll_once()
    rec.poll_once()
    for i, user in enumerate(RAW_USERS * 5):
        rec.feedback(click(user, i, rec_id="r", value=1.0))
    hub.inject("events", Fault.http(403), Fault.http(503, retry_after="1"), Fault.http(413))
    rec.forget(RAW_USERS[1])
    for _ in range(8):  # through 403, 503 and 413 without waiting out their backoff
        rec._sync.uploader.upload_once(force=True)
    assert outbox(rec)["pending"] == 0 and len(hub.events) == 5 + 1  # alice's clicks and bob's tombstone
    client = HubClient("http://127.0.0.1:9", token=TOKEN, transport=hub)
    hub.token = "rotated"
    with pytest.raises(HubError) as info:
        client.get_manifest("stable")
    texts += [str(info.value), repr(info.value), repr(rec.status()), str(rec.status())]
    assert not leaked("\n".join(texts))
    wire = [r for r in hub.requests]
    for r in wire:  # F05: no raw id in any body, path or header; the token only in Authorization
        blob = r.body.decode("latin-1") + r.path + str({k: v for k, v in r.headers.items() if k != "authorization"})
        assert not leaked(blob)
    assert balanced(outbox(rec))
    rec.close(0.5)


def test_f01_tls_verified_by_default_custom_ca_supported(hub: FakeHub, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=False, timeout=60)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    assert HubClient("https://hub", token="t")._verify is True
    with hub.serve(tls=(str(cert), str(key))) as url:
        sync = edge(None, tmp_path / "a", url=url)
        sync.poll_once()  # self-signed: refused, nothing applied
        s = sync.status()
        assert s["updater_poll_errors"] == 1 and s["model_version"] is None and hub.count("manifest") == 0
        sync.close(0)
        trusted = edge(None, tmp_path / "b", url=url, ca_bundle=str(cert))
        trusted.poll_once()
        assert trusted.status()["model_version"] == "v1"
        trusted.close(0)


def test_f04_hub_strings_escaped_in_logs_and_capped_in_status(hub: FakeHub, tmp_path: Path, clock: object,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    sync = edge(hub, tmp_path / "state", clock)  # type: ignore[arg-type]
    sync.poll_once()
    forged = "v2\n2024-01-01 ERROR forged line \x1b[31m" + "x" * 5000
    hub.inject("manifest", Fault.rewrite_manifest(lambda d: d.update(model_version=forged)))
    with caplog.at_level(logging.DEBUG):
        sync.poll_once()
    err = sync.status()["last_update_error"]
    assert err["reason"] == "format" and len(err["message"]) <= 200
    for r in caplog.records:
        assert "\x1b" not in r.getMessage() and "\nforged" not in r.getMessage()
    assert sync.status()["model_version"] == "v1"
    sync.close(0)


def test_secret_list_is_meaningful() -> None:
    assert len(SECRETS) == 5 and all(len(s) > 8 for s in SECRETS)
