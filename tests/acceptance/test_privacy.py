"""Acceptance 4: no raw user id in any request body (nor URL, nor header), in logs at any level, in
the local outbox or in the hub's database; the user field that leaves is exactly the keyed HMAC of design G5,
and only allow-listed fields leave (fault F03, F05, F06, F07)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import orjson
import pytest
from sync.helpers import EDGE, publish

from edgerec_sdk.errors import EventError
from edgerec_sdk.sync.protocol import ALLOWED_EVENT_FIELDS

from .support import UID_KEY, Recording, bundle, connect, new_hub, wsgi

RAW_IDS = ["alice.smith@example.com", "CUST-7781-RAW", "Ünïcødé Üser", 98765432123]


def _files(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*.sqlite3*")) if p.is_file())


def test_no_raw_user_id_leaves_or_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = new_hub(tmp_path / "hub")
    publish(app, bundle(tmp_path, "v1"))
    transport = Recording(wsgi(app))
    raw = [str(u) for u in RAW_IDS]
    with caplog.at_level(logging.DEBUG):
        rec = connect("http://127.0.0.1:1", tmp_path / "edge", transport=transport, start=False)
        rec.poll_once()
        for n, user in enumerate(RAW_IDS):
            for i in range(5):
                r = rec.recommend(user, k=3)
                rec.feedback({"user": user, "item": r.item_ids[0], "type": "click", "rec_id": r.rec_id,
                              "value": 1.0 + i, "event_id": f"ev-{n}-{i}"})
            rec.feedback({"user": user, "item": "not-in-catalog", "type": "view"})
        with pytest.raises(EventError) as refused:
            rec.feedback({"user": raw[0], "item": "x", "type": "no-such-type"})
        assert raw[0] not in str(refused.value)
        assert rec.flush(10.0)
        rec.forget(RAW_IDS[1])
        assert rec.flush(10.0)
        status_text = repr(rec.status()) + repr(rec)
        rec.close(2.0)

    blob = b"".join(transport.sent)
    for user in raw:
        assert user.encode() not in blob, user
        assert user not in caplog.text, user
        assert user not in status_text, user
    assert UID_KEY not in caplog.text and EDGE not in caplog.text and UID_KEY.encode() not in blob
    # what the hub and the local outbox keep on disk holds pseudonyms only
    disk = _files(tmp_path / "hub") + _files(tmp_path / "edge")
    for user in raw:
        assert user.encode() not in disk, user

    expected = {hmac.new(UID_KEY.encode(), u.encode(), hashlib.sha256).hexdigest()[:32] for u in raw}
    sent_users: set[str] = set()
    for body in transport.bodies:
        if not body.startswith(b"{"):
            continue
        for ev in orjson.loads(body).get("events", []):
            assert set(ev) <= set(ALLOWED_EVENT_FIELDS), sorted(set(ev) - set(ALLOWED_EVENT_FIELDS))
            sent_users.add(ev["user"])
    assert sent_users == expected
    # forget: the hub erased that pseudonym's events
    gone = hmac.new(UID_KEY.encode(), raw[1].encode(), hashlib.sha256).hexdigest()[:32]
    rows = app.storage._conn().execute("SELECT user, COUNT(*) FROM events GROUP BY user").fetchall()
    assert gone not in {u for u, _ in rows} and len(rows) == len(raw) - 1
    assert app.storage.status()["tombstones"] == 1
