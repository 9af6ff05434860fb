"""Smoke: a real hub on 127.0.0.1 (port 0) in a thread, a real EdgeSync over TCP."""

from __future__ import annotations

import threading
from pathlib import Path

from sync.helpers import EDGE, KEY, bundle, new_hub, publish

from edgerec_sdk.bundle import Bundle
from edgerec_sdk.hub import serve_in_thread
from edgerec_sdk.sync import EdgeSync, SyncConfig


def test_loopback_update_and_feedback(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    publish(app, bundle(tmp_path, "v1"))
    seen = {"v1": threading.Event(), "v2": threading.Event()}

    def on_bundle(b: Bundle) -> None:
        seen[b.model_version].set()

    with serve_in_thread(app) as hub:
        cfg = SyncConfig(hub_url=hub.url, token=EDGE, user_id_key="k", signing_key=KEY.decode(),
                         state_dir=str(tmp_path / "edge"), poll_interval_s=0.05, upload_interval_s=0.02,
                         smoke_in_subprocess=False)
        sync = EdgeSync(cfg, on_bundle=on_bundle)
        sync.start()
        assert seen["v1"].wait(15.0)
        publish(app, bundle(tmp_path, "v2", seed=1))
        assert seen["v2"].wait(15.0)
        for i in range(300):
            sync.put({"user": f"user-{i % 7}", "item": f"item-{i}", "type": "view", "model_version": "v2"})
        assert sync.flush(timeout_s=15.0)
        assert app.storage.count_events() == 300
        assert sync.close(timeout_s=5.0)
        assert not sync.uploader.task.started and not sync.updater.task.started
