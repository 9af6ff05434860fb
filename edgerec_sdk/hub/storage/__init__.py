"""Hub storage: events (unique by ``event_id``), tombstones, the bundle registry, channels, edges, the
signed channel artifacts (catalogue deltas, rule sets) and the files the hub serves (``files.py``).

Two backends with one schema and one set of queries (``_base.py``): SQLite in ``<root>/hub.sqlite3`` by
default, PostgreSQL when given a ``postgresql://`` URL (the scale-out option, extra ``[hub]``). With
PostgreSQL the bundle files are chunked into the database too, so replicas share nothing but it.

Example::

    from edgerec_sdk.hub.storage import open_storage
    storage = open_storage(None, root="/var/lib/edgerec-hub")                 # SQLite
    storage = open_storage("postgresql://edgerec@db/edgerec", root="/srv/hub")  # PostgreSQL
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import StorageBusyError
from ._base import TABLES, ArtifactRecord, BundleRecord, ChannelRecord, SQLStorage
from .files import DatabaseFileStore, FileStore, LocalFileStore, bundle_scope
from .sqlite import SQLiteStorage

if TYPE_CHECKING:
    from .postgres import PostgresStorage

__all__ = [
    "TABLES",
    "ArtifactRecord",
    "BundleRecord",
    "ChannelRecord",
    "DatabaseFileStore",
    "FileStore",
    "LocalFileStore",
    "PostgresStorage",
    "SQLStorage",
    "SQLiteStorage",
    "Storage",
    "StorageBusyError",
    "bundle_scope",
    "open_storage",
]

#: The default backend under its historical name.
Storage = SQLiteStorage

SQLITE_NAME = "hub.sqlite3"
_PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str) -> bool:
    return db.lower().startswith(_PG_SCHEMES)


def open_storage(db: str | None, *, root: str | os.PathLike[str] | None = None, create: bool = True,
                 **options: Any) -> SQLStorage:
    """The storage ``db`` names.

    Args:
        db: ``None`` or ``""`` for SQLite under ``root``; ``postgresql://…`` for PostgreSQL;
            ``sqlite:///path`` or a plain path for another SQLite file.
        root: the hub's data directory (holds ``hub.sqlite3`` when ``db`` is not given).
        create: when ``False``, a missing SQLite file is an error instead of a new empty database.
        options: backend options (``PostgresStorage(max_connections=…)``).
    """
    if db and is_postgres_url(db):
        from .postgres import PostgresStorage

        return PostgresStorage(db, **options)
    if db:
        path = Path(db[len("sqlite://"):] if db.startswith("sqlite://") else db)
    elif root is not None:
        path = Path(root) / SQLITE_NAME
    else:
        raise ValueError("give a database URL or the hub's root directory")
    if not create and not path.is_file():
        raise FileNotFoundError(f"no hub database at {path}")
    return SQLiteStorage(path, **options)


def __getattr__(name: str) -> Any:
    if name == "PostgresStorage":  # importable without psycopg; the driver loads on first use
        from .postgres import PostgresStorage

        return PostgresStorage
    raise AttributeError(name)
