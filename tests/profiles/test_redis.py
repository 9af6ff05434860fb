from __future__ import annotations

import socket
import uuid

import pytest

from edgerec_sdk import MissingExtraError, Recommender, RecommenderConfig
from edgerec_sdk.profile import ProfileStore, ProfileUnavailableError, make_profile_store

from .conftest import RedisServer
from .contract import ProfileStoreContract, ev


class TestRedisProfileStore(ProfileStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.server = redis_server
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"  # each test its own key space on the shared server

    def make_store(self, max_events_per_user: int = 200) -> ProfileStore:
        from edgerec_sdk.profile.redis import RedisProfileStore

        return RedisProfileStore(self.server.url, max_events_per_user=max_events_per_user, key_prefix=self.prefix)


def test_spec_options_and_ttl(redis_server: RedisServer) -> None:
    import redis

    store = make_profile_store(f"{redis_server.url}?timeout_s=0.2&ttl_s=60&key_prefix=ttl:", max_events_per_user=5)
    store.append("u", ev(1))
    client = redis.Redis.from_url(redis_server.url)
    assert 0 < client.ttl("ttl:u") <= 60
    assert client.exists("ttl:u") == 1
    client.close()
    store.close()


def test_corrupt_entries_are_skipped(redis_server: RedisServer) -> None:
    import redis

    from edgerec_sdk.profile.redis import RedisProfileStore

    store = RedisProfileStore(redis_server.url, key_prefix="corrupt:")
    client = redis.Redis.from_url(redis_server.url)
    client.rpush("corrupt:u", b"not json", b'["i", "click"]')
    store.append("u", ev(1))
    assert store.get("u") == [ev(1)]
    client.close()
    store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


def test_d20_redis_down_raises_profile_unavailable() -> None:
    pytest.importorskip("redis")
    from edgerec_sdk.profile.redis import RedisProfileStore

    store = RedisProfileStore(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.05)
    with pytest.raises(ProfileUnavailableError):
        store.get("u")
    with pytest.raises(ProfileUnavailableError):
        store.append("u", ev(1))
    with pytest.raises(ProfileUnavailableError):
        store.forget("u")
    assert "password" not in repr(RedisProfileStore("redis://:password@127.0.0.1:1/0"))


def test_d20_recommender_with_redis_down_degrades_and_keeps_feedback() -> None:
    pytest.importorskip("redis")
    config = RecommenderConfig(profile_store=f"redis://127.0.0.1:{_closed_port()}/0?timeout_s=0.05")
    with Recommender.demo(config=config) as rec:
        result = rec.recommend("u", k=5)
        assert result.degraded and result.degraded_reason == "profile_unavailable"
        assert len(result) == 5 and all(r.source == "popular" for r in result)
        assert rec.feedback({"user": "u", "item": next(iter(rec.items)), "type": "click"}) is True
        given = rec.recommend("u", k=5, history=[next(iter(rec.items))])
        assert not given.degraded and given[0].source == "personalized"
        counters = rec.status().counters
        assert counters["degraded_profile_unavailable"] == 1
        assert counters["profile_write_failed"] == 1 and counters["feedback_accepted"] == 1


def test_recommender_personalises_through_redis(redis_server: RedisServer) -> None:
    prefix = f"rec{uuid.uuid4().hex[:8]}:"
    config = RecommenderConfig(profile_store=f"{redis_server.url}?key_prefix={prefix}")
    with Recommender.demo(config=config) as a, Recommender.demo(config=config) as b:
        item = b.recommend("shopper", k=1)[0].item_id
        assert b.recommend("shopper", k=3)[0].source == "popular"
        a.feedback({"user": "shopper", "item": item, "type": "click"})
        after = b.recommend("shopper", k=3)  # another "host" reads the click at once
        assert after[0].source == "personalized" and item not in after.item_ids


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edgerec_sdk.profile.redis import RedisProfileStore

    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` raise ImportError
    with pytest.raises(MissingExtraError, match=r"edgerec-sdk\[redis\]"):
        RedisProfileStore("redis://127.0.0.1:6379/0")
