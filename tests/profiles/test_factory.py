from __future__ import annotations

from pathlib import Path

import pytest

from edgerec_sdk import ConfigError, Recommender, RecommenderConfig
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.profile import (
    MemoryProfileStore,
    ProfileEvent,
    ProfileUnavailableError,
    SqliteProfileStore,
    make_profile_store,
    parse_profile_spec,
)
from edgerec_sdk.recommender import demo_bundle_path


def test_memory_is_the_default() -> None:
    assert RecommenderConfig().profile_store == "memory"
    store = make_profile_store("memory", max_events_per_user=2, max_users=5)
    assert isinstance(store, MemoryProfileStore)


def test_sqlite_paths_follow_sqlalchemy(tmp_path: Path) -> None:
    assert parse_profile_spec("sqlite:///rel/p.db").target == "rel/p.db"
    assert parse_profile_spec("sqlite:////abs/p.db").target == "/abs/p.db"
    spec = parse_profile_spec("sqlite:////abs/p.db?busy_timeout_s=0.25")
    assert spec.kind == "sqlite" and dict(spec.options) == {"busy_timeout_s": 0.25}
    store = make_profile_store(f"sqlite:///{tmp_path}/x/p.db?busy_timeout_s=0.02", max_events_per_user=2)
    assert isinstance(store, SqliteProfileStore) and store.path == tmp_path / "x" / "p.db"
    store.close()


def test_redis_options_are_split_from_the_url() -> None:
    spec = parse_profile_spec("redis://:pw@host:6380/2?timeout_s=0.08&ttl_s=9&key_prefix=s:&health_check_interval=5")
    assert spec.kind == "redis"
    assert spec.target == "redis://:pw@host:6380/2?health_check_interval=5"
    assert dict(spec.options) == {"timeout_s": 0.08, "ttl_s": 9, "key_prefix": "s:"}
    assert parse_profile_spec("rediss://host/0").kind == "redis"


@pytest.mark.parametrize("bad", [
    "", "mem", "postgres://x/y", "sqlite://relative-without-third-slash", "sqlite:///", "sqlite:///:memory:",
    "sqlite:////p.db?nope=1", "sqlite:////p.db?busy_timeout_s=soon", "redis://h/0?timeout_s=x",
    "sqlite:////p.db?busy_timeout_s=-1", "redis://h/0?timeout_s=nan", "redis://h/0?timeout_s=inf",
])
def test_bad_specs_are_config_errors_at_construction(bad: str) -> None:
    with pytest.raises(ConfigError):
        RecommenderConfig(profile_store=bad)


def test_from_mapping_and_env_carry_the_store() -> None:
    assert RecommenderConfig.from_mapping({"profile_store": "sqlite:////tmp/p.db"}).profile_store == "sqlite:////tmp/p.db"
    env = {"EDGEREC_PROFILE_STORE": "redis://127.0.0.1:6379/0"}
    assert RecommenderConfig.from_env(environ=env).profile_store == "redis://127.0.0.1:6379/0"


def test_recommender_builds_the_configured_store_and_shares_it(tmp_path: Path) -> None:
    config = RecommenderConfig(profile_store=f"sqlite:///{tmp_path}/p.sqlite3")
    with Recommender.demo(config=config) as a, Recommender.demo(config=config) as b:
        item = a.recommend("shopper", k=1)[0].item_id
        a.feedback({"user": "shopper", "item": item, "type": "click"})
        after = b.recommend("shopper", k=5)  # "another worker" of the same host
        assert after[0].source == "personalized" and item not in after.item_ids
        a.forget("shopper")
        assert b.recommend("shopper", k=5)[0].source == "popular"


class _BrokenStore:
    def get(self, user: str) -> list[ProfileEvent]:
        raise ProfileUnavailableError("down")

    def append(self, user: str, event: ProfileEvent) -> None:
        raise ProfileUnavailableError("down")

    def forget(self, user: str) -> None:
        raise ProfileUnavailableError("down")

    def close(self) -> None:
        return None


def test_d20_profile_down_degrades_to_popular_with_filters_kept() -> None:
    with Recommender.demo() as ref:
        cold = ref.recommend("x", k=5, exclude=[ref.recommend("x", k=1)[0].item_id])
    rec = Recommender(load_bundle(demo_bundle_path()), profile_store=_BrokenStore())
    first = rec.recommend("x", k=1)[0].item_id
    result = rec.recommend("u", k=5, exclude=[first])
    assert result.degraded and result.degraded_reason == "profile_unavailable"
    assert result.item_ids == cold.item_ids and first not in result.item_ids
    many = rec.recommend_many(["a", "b"], k=3)
    assert all(r.degraded_reason == "profile_unavailable" for r in many)
    with_history = rec.recommend("u", k=3, history=[first])
    assert not with_history.degraded and with_history[0].source == "personalized"
    assert rec.feedback({"user": "u", "item": first, "type": "click"}) is True
    assert rec.status().counters["profile_write_failed"] == 1
    with pytest.raises(ProfileUnavailableError):
        rec.forget("u")  # erasure never fails silently
    rec.close()


def test_d20_strict_raises_the_store_error() -> None:
    rec = Recommender(load_bundle(demo_bundle_path()), RecommenderConfig(strict=True), profile_store=_BrokenStore())
    with pytest.raises(ProfileUnavailableError):
        rec.recommend("u", k=3)
    with pytest.raises(ProfileUnavailableError):
        rec.feedback({"user": "u", "item": "B004756YJA", "type": "click"})
    rec.close()


def test_millisecond_options_of_earlier_versions_still_work_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="busy_timeout_s"):
        spec = parse_profile_spec("sqlite:////abs/p.db?busy_timeout_ms=250")
    assert dict(spec.options) == {"busy_timeout_s": 0.25}
    with pytest.warns(DeprecationWarning, match="timeout_s"):
        spec = parse_profile_spec("redis://host/0?timeout_ms=80")
    assert dict(spec.options) == {"timeout_s": 0.08} and spec.target == "redis://host/0"


@pytest.mark.parametrize("spec", ["sqlite://rel.db", "sqlite:/rel.db", "sqlite:rel.db"])
def test_sqlite_url_with_too_few_slashes_says_three(spec: str) -> None:
    with pytest.raises(ConfigError, match="three slashes") as exc:
        RecommenderConfig(profile_store=spec)
    assert "sqlite:///rel.db" in str(exc.value)  # before: "got a value with scheme 'sqlite'"
