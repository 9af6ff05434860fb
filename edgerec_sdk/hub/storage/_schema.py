"""The hub database's schema, written once for every backend: tables, columns, keys, and later additions.

Column types are the placeholders ``{text}``/``{real}``/``{blob}``/``{int}``; each backend supplies its type
names (``schema_statements``) and adds the ``ADDED_COLUMNS`` a database created before them lacks.
"""

from __future__ import annotations

#: Tables, columns and keys of the hub database, identical in every backend (only type names differ).
SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS events(
    event_id {text} PRIMARY KEY,
    "user" {text} NOT NULL,
    item {text} NOT NULL,
    type {text} NOT NULL,
    ts {real} NOT NULL,
    value {real},
    rec_id {text},
    model_version {text},
    edge_id {text},
    batch_id {text},
    received_at {real} NOT NULL,
    position {int},
    items {text}
);
CREATE INDEX IF NOT EXISTS events_user ON events("user");
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_rec ON events(rec_id);
CREATE INDEX IF NOT EXISTS events_type_version ON events(type, model_version);
CREATE TABLE IF NOT EXISTS tombstones(
    event_id {text} PRIMARY KEY,
    "user" {text} NOT NULL,
    ts {real} NOT NULL,
    erased {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles(
    version {text} PRIMARY KEY,
    manifest {blob} NOT NULL,
    manifest_sha256 {text} NOT NULL,
    signature {text},
    total_bytes {int} NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS channels(
    name {text} PRIMARY KEY,
    version {text} NOT NULL,
    candidate {text},
    rollout_percent {real} NOT NULL DEFAULT 0,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS edges(
    edge_id {text} PRIMARY KEY,
    last_seen {real} NOT NULL,
    batches {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts(
    channel {text} NOT NULL,
    kind {text} NOT NULL,
    seq {int} NOT NULL,
    body {blob} NOT NULL,
    sha256 {text} NOT NULL,
    signature {text},
    created_at {real} NOT NULL,
    PRIMARY KEY (channel, kind, seq)
);
CREATE TABLE IF NOT EXISTS edge_versions(
    edge_id {text} PRIMARY KEY,
    model_version {text} NOT NULL,
    last_seen {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS files(
    scope {text} NOT NULL,
    name {text} NOT NULL,
    size {int} NOT NULL,
    chunk_bytes {int} NOT NULL,
    sha256 {text} NOT NULL,
    created_at {real} NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS file_chunks(
    scope {text} NOT NULL,
    name {text} NOT NULL,
    seq {int} NOT NULL,
    data {blob} NOT NULL,
    PRIMARY KEY (scope, name, seq)
);
CREATE TABLE IF NOT EXISTS origins(
    scope {text} PRIMARY KEY,
    base_url {text} NOT NULL,
    created_at {real} NOT NULL
)
"""

#: The tables in ``SCHEMA_TEMPLATE``, in order. ``files``/``file_chunks``/``origins`` hold streamed content by
#: scope (``bundle/<version>``; any content too large for one ``artifacts`` row takes a scope), see ``files.py``.
TABLES = ("events", "tombstones", "bundles", "channels", "edges", "artifacts", "edge_versions", "files",
          "file_chunks", "origins")


#: Columns added to a table after its first release: ``(table, column, type placeholder)``; each backend adds
#: the missing ones to a database created before them.
ADDED_COLUMNS = (("events", "position", "int"), ("events", "items", "text"))


def schema_statements(*, text: str, real: str, blob: str, int_: str) -> list[str]:
    """``SCHEMA_TEMPLATE`` with a backend's type names, split into single statements."""
    ddl = SCHEMA_TEMPLATE.format(text=text, real=real, blob=blob, int=int_)
    return [s.strip() for s in ddl.split(";") if s.strip()]
