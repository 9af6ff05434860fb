"""``edgerec rules check|publish``: merchandising rule sets, validated locally and published on a channel.

A published rule set is a channel artifact of kind ``rules``: signed like a manifest (HMAC-SHA256 with the
channel's signing key), checked by the hub for form, and applied whole by every edge following the channel
(``Recommender.set_rules``), which first checks it against the catalogue it serves; a refused set leaves the
previous one serving and its reason in ``status()``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from ..bundle import load_bundle
from ..bundle.verify import sign_bytes
from ..errors import ConfigError
from ..rank.rules import RuleSet
from .cli import _client, _hub_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``edgerec rules`` to the ``edgerec`` parser."""
    rules = subparsers.add_parser("rules", help="merchandising rule sets: check one, publish one on a channel")
    sub = rules.add_subparsers(dest="rules_command", required=True)
    check = sub.add_parser("check", help="validate a rule set (JSON), against a bundle's catalogue columns if given")
    check.add_argument("file")
    check.add_argument("--bundle", default=None, help="bundle directory whose catalogue columns 'where' may use")
    check.set_defaults(func=_cmd_check)
    publish = sub.add_parser("publish", help="sign a rule set and publish it on a channel of a hub")
    publish.add_argument("file")
    publish.add_argument("--channel", default="stable")
    publish.add_argument("--signing-key", default=None, help="HMAC key (default: $EDGEREC_SIGNING_KEY)")
    _hub_args(publish)
    publish.set_defaults(func=_cmd_publish)


def _read(path: str, bundle: str | None) -> tuple[bytes, RuleSet]:
    body = Path(path).read_bytes()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    columns = None if bundle is None else load_bundle(bundle).catalog.column_names
    return body, RuleSet.parse(doc, columns=columns)


def _cmd_check(args: argparse.Namespace) -> int:
    _, rules = _read(args.file, args.bundle)
    sys.stdout.write(f"{args.file}: {len(rules)} rules, version {rules.version!r}: valid\n")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    body, rules = _read(args.file, None)
    key = args.signing_key if args.signing_key is not None else os.environ.get("EDGEREC_SIGNING_KEY")
    signature = sign_bytes(body, key) if key else None
    client = _client(args)
    try:
        answer = client.publish_artifact(args.channel, "rules", body, signature=signature)
    finally:
        client.close()
    seq = answer.get("seq") if isinstance(answer, dict) else None
    sys.stdout.write(f"rule set {rules.version!r} ({len(rules)} rules) published on {args.channel!r} as #{seq}"
                     f"{'' if signature else ' UNSIGNED (edges with a signing key refuse it)'}\n")
    return 0
