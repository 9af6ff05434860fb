"""The contract every profile store meets; subclasses provide ``make_store(max_events_per_user)``."""

from __future__ import annotations

import threading

import pytest

from edgerec_sdk.profile import ProfileEvent, ProfileStore


def ev(n: int, type_: str = "click") -> ProfileEvent:
    return ProfileEvent(f"item-{n}", type_, 1_700_000_000.0 + n)


class ProfileStoreContract:
    def make_store(self, max_events_per_user: int = 200) -> ProfileStore:
        raise NotImplementedError

    @pytest.fixture()
    def store(self) -> ProfileStore:
        s = self.make_store()
        yield s
        s.close()

    def test_unknown_user_is_empty(self, store: ProfileStore) -> None:
        assert store.get("nobody") == []

    def test_append_keeps_order_oldest_first(self, store: ProfileStore) -> None:
        for n in range(5):
            store.append("u1", ev(n, "view" if n % 2 else "click"))
        got = store.get("u1")
        assert got == [ev(n, "view" if n % 2 else "click") for n in range(5)]
        assert all(isinstance(e, ProfileEvent) for e in got)

    def test_cap_keeps_the_newest(self) -> None:
        store = self.make_store(max_events_per_user=3)
        try:
            for n in range(10):
                store.append("u", ev(n))
            assert [e.item for e in store.get("u")] == ["item-7", "item-8", "item-9"]
        finally:
            store.close()

    def test_users_are_isolated_and_forget_erases_one(self, store: ProfileStore) -> None:
        store.append("a", ev(1))
        store.append("b", ev(2))
        store.forget("a")
        assert store.get("a") == []
        assert store.get("b") == [ev(2)]
        store.forget("never-seen")  # no error

    def test_e10_ids_are_opaque(self, store: ProfileStore) -> None:
        nasty = ["'; DROP TABLE profile_events; --", "../../etc/passwd", "<script>x</script>", "ünï\u00a0côdé",
                 "a" * 256, "with\nnewline", "%s%s", "*", "?"]
        for i, uid in enumerate(nasty):
            store.append(uid, ProfileEvent(uid, "click", float(i)))
        for i, uid in enumerate(nasty):
            assert store.get(uid) == [ProfileEvent(uid, "click", float(i))]
        assert store.get("a") == []  # no prefix or pattern matching

    def test_concurrent_appends_lose_nothing(self) -> None:
        store = self.make_store(max_events_per_user=1000)
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                for n in range(25):
                    store.append("shared", ProfileEvent(f"t{t}-{n}", "click", float(n)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        try:
            assert errors == []
            items = [e.item for e in store.get("shared")]
            assert len(items) == 100 and len(set(items)) == 100
            for t in range(4):  # each thread's events stay in its own order
                mine = [i for i in items if i.startswith(f"t{t}-")]
                assert mine == [f"t{t}-{n}" for n in range(25)]
        finally:
            store.close()

    def test_close_is_idempotent(self) -> None:
        store = self.make_store()
        store.close()
        store.close()
