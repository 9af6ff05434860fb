"""The ``edgerec`` command: demo, inspect, and (through extras) build, evaluate and the hub."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any

from .bundle import inspect_bundle
from .errors import EdgerecError

__all__ = ["main"]


def _demo_histories() -> list[dict[str, Any]]:
    raw = (resources.files("edgerec_sdk") / "_demo_histories.json").read_text(encoding="utf-8")
    data: list[dict[str, Any]] = json.loads(raw)
    return data


def _title(rec: Any, item_id: str) -> str:
    meta = rec.items.get(item_id, {})
    title = meta.get("title") or "(no title)"
    return f"{item_id}  {title[:60]}"


def _cmd_demo(args: argparse.Namespace) -> int:
    from .recommender import Recommender

    rec = Recommender.from_bundle(args.bundle) if args.bundle else Recommender.demo()
    out = sys.stdout
    with rec:
        status = rec.status()
        out.write(f"edgerec demo: bundle {status.model_version}, {status.n_items} items\n")
        users = _demo_histories()[: args.users]
        for entry in users:
            user, history = entry["user"], [i for i in entry["history"] if i in rec.items]
            for item in history:  # replaying the history through feedback() builds the live profile
                rec.feedback({"user": user, "item": item, "type": "purchase"})
            out.write(f"\n== {user}: {len(history)} past purchases, newest last\n")
            for item in history[-3:]:
                out.write(f"   bought   {_title(rec, item)}\n")
            first = rec.recommend(user, k=args.k, explain=True)
            out.write(f"-- recommended for you ({first.items[0].source if len(first) else 'none'}):\n")
            for r in first:
                out.write(f"   {r.score:7.3f}  {_title(rec, r.item_id)}\n")
        if users:
            user = users[0]["user"]
            before = rec.recommend(user, k=args.k)
            clicked = before.item_ids[-1]
            rec.feedback({"user": user, "item": clicked, "type": "click", "rec_id": before.rec_id})
            after = rec.recommend(user, k=args.k)
            out.write(f"\n== {user} clicks {_title(rec, clicked)}\n-- the next answer:\n")
            for r in after:
                mark = "   " if r.item_id in before.item_ids else "new"
                out.write(f"   {mark} {r.score:7.3f}  {_title(rec, r.item_id)}\n")
            changed = sum(1 for i in after.item_ids if i not in before.item_ids)
            out.write(f"   {changed} of {len(after)} items changed after one click\n")
        known = [i for i in users[0]["history"] if i in rec.items] if users else []
        title = str(rec.items.get(known[-1], {}).get("title") or "") if known else ""
        query = " ".join([w for w in title.split() if len(w) > 2][:2])
        if query and rec.status().takes_query:  # a bundle with a text tower: a search, warm and cold
            for who in (users[0]["user"], "a-new-visitor"):
                found = rec.recommend(who, k=args.k, query=query)
                source = found.items[0].source if len(found) else "none"
                out.write(f"\n== {who} searches {query!r} ({source}):\n")
                for r in found:
                    out.write(f"   {r.score:7.3f}  {_title(rec, r.item_id)}\n")
        c = rec.status().counters
        out.write(f"\nstatus: requests={c.get('requests', 0)} feedback_accepted={c.get('feedback_accepted', 0)} "
                  f"degraded={c.get('degraded', 0)}\n")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    report = inspect_bundle(args.bundle)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        for key, value in report.items():
            if isinstance(value, dict):
                sys.stdout.write(f"{key}:\n")
                for k2, v2 in value.items():
                    sys.stdout.write(f"  {k2}: {v2}\n")
            else:
                sys.stdout.write(f"{key}: {value}\n")
    return 0 if report.get("ok") else 1


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgerec", description="edgerec_sdk command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    parser.add_argument("--version", action="version", version=f"edgerec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="recommend for a few real shoppers from the demo bundle")
    demo.add_argument("--bundle", help="a bundle directory instead of the embedded demo")
    demo.add_argument("-k", type=int, default=5, help="items per answer")
    demo.add_argument("--users", type=int, default=3, help="how many sample shoppers")
    demo.set_defaults(func=_cmd_demo)
    inspect = sub.add_parser("inspect", help="show a bundle's manifest, sizes and checksum verdict")
    inspect.add_argument("bundle")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=_cmd_inspect)
    for module in ("edgerec_sdk.train.cli", "edgerec_sdk.hub.cli", "edgerec_sdk.hub.items_cli",
                   "edgerec_sdk.hub.rules_cli"):
        try:
            register = __import__(module, fromlist=["register"]).register
        except (ImportError, AttributeError):
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgerec`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except EdgerecError as exc:
        sys.stderr.write(f"edgerec: error: {exc}\n")
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
