"""Acceptance 1: a real hub on a loopback port; v1 serves, v2 is published, the edge swaps within two
poll intervals while 8 threads call ``recommend`` throughout, with zero errors and every answer labelled with
the version that produced it (and holding exactly what that version answers)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .support import HISTORIES, bundle, connect, expected_answers, publish_http, running_hub, wait_for

POLL_S = 1.0
THREADS = 8


def test_publish_v2_swaps_within_two_polls_under_load(tmp_path: Path) -> None:
    v1, v2 = bundle(tmp_path, "v1", seed=1), bundle(tmp_path, "v2", seed=2)
    expected = {"v1": expected_answers(v1), "v2": expected_answers(v2)}
    assert expected["v1"] != expected["v2"]  # the versions are told apart by their answers too
    stop = threading.Event()
    first_v2 = threading.Event()
    errors: list[str] = []
    seen: list[dict[str, int]] = [{} for _ in range(THREADS)]

    with running_hub(tmp_path / "hub") as hub:
        publish_http(hub.url, v1)
        rec = connect(hub.url, tmp_path / "edge", poll_interval_s=POLL_S)
        assert wait_for(lambda: rec.status().model_version == "v1", 15.0)

        def reader(t: int) -> None:
            n = 0
            while not stop.is_set():
                hist = HISTORIES[(t + n) % len(HISTORIES)]
                n += 1
                try:
                    r = rec.recommend(f"user-{t}-{n % 5}", k=5, history=list(hist))
                except Exception as exc:  # any error at all fails the test
                    errors.append(f"thread {t}: {type(exc).__name__}: {exc}")
                    return
                version = r.model_version or "none"
                if r.degraded or version not in expected:
                    errors.append(f"thread {t}: degraded={r.degraded_reason} version={version}")
                elif r.item_ids != expected[version][hist]:
                    errors.append(f"thread {t}: items of {version} differ from what {version} answers")
                elif version == "v1" and seen[t].get("v2"):
                    errors.append(f"thread {t}: v1 after v2")
                seen[t][version] = seen[t].get(version, 0) + 1
                if version == "v2":
                    first_v2.set()
                stop.wait(0.001)  # pace the readers a little: two cores are shared with the updater

        threads = [threading.Thread(target=reader, args=(t,), name=f"reader-{t}") for t in range(THREADS)]
        for th in threads:
            th.start()
        try:
            assert wait_for(lambda: all(s.get("v1", 0) >= 5 for s in seen), 15.0), errors
            publish_http(hub.url, v2)
            published_at = time.monotonic()
            assert first_v2.wait(2 * POLL_S), f"v2 not served within {2 * POLL_S} s of publishing"
            swap_s = time.monotonic() - published_at
            assert wait_for(lambda: all(s.get("v2", 0) >= 20 for s in seen), 15.0), errors
        finally:
            stop.set()
            for th in threads:
                th.join(10.0)
        assert not errors, errors[:5]
        assert all(s["v1"] >= 5 and s["v2"] >= 20 for s in seen)
        status = rec.status()
        assert status.model_version == "v2" and status.bundle_origin == "hub"
        assert status.sync["updater_updates"] == 2 and status.sync["last_update_error"] is None
        assert status.counters.get("degraded", 0) == 0
        assert swap_s < 2 * POLL_S
        rec.close(2.0)
