"""``edgerec items upsert|delete``: publish a signed catalogue delta on a hub channel.

Example:
    edgerec items upsert new_products.csv --hub https://hub.example.com --channel stable
    edgerec items delete B0012345 B0067890 --hub https://hub.example.com
    edgerec items upsert feed.jsonl --column-type weight_g=number --dry-run

The delta is checked here first (a row without an id, an id twice, an unknown column type, a value that does
not fit its column, a file over the cap: refused with the reason, nothing sent), signed with
``--signing-key``/``$EDGEREC_SIGNING_KEY`` like a manifest, and appended to the channel's ``catalogue``
artifacts; every edge following the channel verifies and applies it whole within a poll interval.
"""

from __future__ import annotations

import argparse
import os
import sys

import orjson

from ..bundle.delta import DEFAULT_MAX_DELTA_BYTES, CatalogueDelta, make_delta, parse_delta, read_items_file
from ..bundle.verify import sign_bytes
from ..errors import CatalogueError
from .cli import _client, _hub_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``items upsert`` and ``items delete`` to the ``edgerec`` parser."""
    items = subparsers.add_parser("items", help="change the live catalogue of a hub channel (signed deltas)")
    verbs = items.add_subparsers(dest="items_command", required=True)
    up = verbs.add_parser("upsert", help="add or change items from a CSV or JSONL file")
    up.add_argument("file", help="CSV (header: id,title,attributes,price,in_stock,<any column>) or JSONL")
    up.add_argument("--column-type", action="append", default=[], metavar="NAME=TYPE",
                    help="type of a column: str, number, bool or list (default: inferred)")
    _common(up)
    up.set_defaults(func=_cmd_upsert)
    rm = verbs.add_parser("delete", help="stop serving items")
    rm.add_argument("ids", nargs="+", help="item ids")
    _common(rm)
    rm.set_defaults(func=_cmd_delete)


def _common(p: argparse.ArgumentParser) -> None:
    _hub_args(p, required=False)  # not needed with --dry-run
    p.add_argument("--channel", default="stable", help="channel whose edges apply the delta (default stable)")
    p.add_argument("--signing-key", default=None, help="HMAC key (default: $EDGEREC_SIGNING_KEY); edges with "
                   "a signing key refuse unsigned deltas")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_DELTA_BYTES, help="refuse a delta over this size")
    p.add_argument("--dry-run", action="store_true", help="check and print a summary; send nothing")


def _cmd_upsert(args: argparse.Namespace) -> int:
    types = {}
    for spec in args.column_type:
        name, sep, kind = spec.partition("=")
        if not sep or not name:
            raise CatalogueError(f"--column-type takes NAME=TYPE, not {spec!r}")
        types[name] = kind
    rows = read_items_file(args.file, column_types=types, max_bytes=args.max_bytes)
    return _send(args, make_delta(rows, column_types=types))


def _cmd_delete(args: argparse.Namespace) -> int:
    return _send(args, make_delta(deletes=list(args.ids)))


def _send(args: argparse.Namespace, delta: CatalogueDelta) -> int:
    body = delta.to_bytes()
    parse_delta(body, max_bytes=args.max_bytes)  # the check every edge makes, size cap included
    summary = {"channel": args.channel, "upserts": len(delta.upserts), "deletes": len(delta.deletes),
               "columns": dict(delta.columns), "bytes": len(body)}
    if args.dry_run:
        sys.stdout.write(orjson.dumps({**summary, "sent": False}).decode() + "\n")
        return 0
    if not args.hub:
        raise CatalogueError("--hub is required (or --dry-run)")
    key = args.signing_key if args.signing_key is not None else os.environ.get("EDGEREC_SIGNING_KEY")
    signature = sign_bytes(body, key.encode()) if key else None
    client = _client(args)
    try:
        result = client.publish_artifact(args.channel, "catalogue", body, signature=signature)
    finally:
        client.close()
    sys.stdout.write(orjson.dumps({**summary, "sent": True, "signed": bool(signature), **result}).decode() + "\n")
    return 0
