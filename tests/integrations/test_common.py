"""The framework-free part of the integrations: settings and the per-process holder."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edgerec_sdk import ConfigError, ModelFormatError, Recommender
from edgerec_sdk.integrations import ProcessLocalRecommender, create_recommender, parse_settings


def test_settings_keys_are_case_insensitive_and_reach_the_config(tmp_path: Path) -> None:
    s = parse_settings({"BUNDLE": "demo", "PROFILE_STORE": f"sqlite:///{tmp_path}/p.db", "max_k": 40,
                        "INDEX": {"BACKEND": "numpy"}, "PROFILE": {"MAX_EVENTS_PER_USER": 7},
                        "FEEDBACK": {"LOG_IMPRESSIONS": True},
                        "FALLBACK_ITEMS": ["a", "b"], "SIGNING_KEY": "s3cr3t-key"})
    assert s.bundle == "demo" and s.signing_key == b"s3cr3t-key"
    assert s.config.max_k == 40 and s.config.index.backend == "numpy"
    assert s.config.profile.max_events_per_user == 7 and s.config.fallback_items == ("a", "b")
    assert s.config.feedback.log_impressions is True  # the default is False
    assert s.config.profile_store.startswith("sqlite:///")
    assert "s3cr3t" not in repr(s)


@pytest.mark.parametrize("raw", [
    None, [], {}, {"PROFILE_STORE": "memory"}, {"BUNDLE": "demo", "HUB": {"hub_url": "x"}}, {"BUNDLE": 3},
    {"BUNDLE": "demo", "NO_SUCH_KEY": 1}, {"BUNDLE": "demo", "PROFILE_STORE": "ftp://x"},
    {"HUB": "https://hub"},
])
def test_bad_settings_are_config_errors(raw: object) -> None:
    with pytest.raises(ConfigError):
        parse_settings(raw)


def test_hub_is_a_clear_seam_until_connect_exists() -> None:
    settings = parse_settings({"HUB": {"HUB_URL": "https://hub.example", "TOKEN": "t"}})
    assert settings.hub == {"hub_url": "https://hub.example", "token": "t"}
    if not hasattr(Recommender, "connect"):
        with pytest.raises(ConfigError, match=r"Recommender\.connect"):
            create_recommender(settings)


def test_missing_bundle_raises_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError):
        create_recommender(parse_settings({"BUNDLE": str(tmp_path / "nope")}))


def test_holder_builds_once_lazily_and_forwards() -> None:
    built: list[Recommender] = []

    def factory() -> Recommender:
        built.append(Recommender.demo())
        return built[-1]

    holder = ProcessLocalRecommender(factory)
    assert built == [] and holder.peek() is None
    assert holder.recommend("u", k=3).item_ids == holder.recommender.recommend("u", k=3).item_ids
    assert len(built) == 1 and holder.get() is built[0] and holder.status().ready
    with pytest.raises(AttributeError):
        holder.swap  # noqa: B018 - only the public request API is forwarded
    holder.close()
    assert built[0].status().closed and holder.peek() is None
    holder.recommender  # noqa: B018 - rebuilt on next use
    assert len(built) == 2
    holder.close()


def test_d01_holder_after_fork_uses_postfork_not_the_parents_state(tmp_path: Path) -> None:
    holder = ProcessLocalRecommender(lambda: create_recommender(parse_settings(
        {"BUNDLE": "demo", "PROFILE_STORE": f"sqlite:///{tmp_path}/p.sqlite3"})))
    parent = holder.recommender
    item = parent.recommend("u", k=1)[0].item_id
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = holder.recommender
            child.feedback({"user": "u", "item": item, "type": "click"})
            code = 0 if child is parent and child.recommend("u", k=1)[0].source == "personalized" else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    got = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert got == b"\x00"
    assert holder.recommender.recommend("u", k=1)[0].source == "personalized"  # the child's click, shared file
    holder.close()


def test_import_of_integrations_loads_no_framework() -> None:
    code = ("import sys, edgerec_sdk.integrations, edgerec_sdk.integrations.django, "
            "edgerec_sdk.integrations.flask; print([m for m in ('django', 'flask') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_import_of_integrations_settles_the_idna_codec_before_worker_threads() -> None:
    # Two gunicorn gthread threads importing the idna codec at once made one request fail with "unknown
    # encoding: idna" (HTTP 500 in the first requests of a fresh worker): the integration imports it first.
    code = ("import sys; before = 'encodings.idna' in sys.modules; import edgerec_sdk.integrations.flask; "
            "print(before, 'encodings.idna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"]
