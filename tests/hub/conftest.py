"""Storage fixtures: every contract test runs against SQLite and against a real PostgreSQL server.

The PostgreSQL server is started once per session (``pgserver.py``) and only when a test asks for it; each
test gets an empty schema of its own. Without the server binaries or psycopg those tests skip, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgerec_sdk.hub.storage import SQLStorage, open_storage

from . import pgserver

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    server = pgserver.start()
    if isinstance(server, str):
        pytest.skip(f"PostgreSQL tests skipped: {server}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: pgserver.PgServer) -> str:
    """A URL whose connections see a fresh, empty schema."""
    return pg_server.url(schema=pg_server.new_schema())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``db`` argument of ``open_storage`` for each backend."""
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "hub.sqlite3")


@pytest.fixture
def hub_db(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The ``db`` argument of ``HubApp`` for each backend (``None``: SQLite under the hub's root)."""
    return str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None


@pytest.fixture
def storage(db: str) -> Iterator[SQLStorage]:
    store = open_storage(db)
    try:
        yield store
    finally:
        store.close()
