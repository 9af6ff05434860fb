"""``edgerec hub serve|export-events``, ``edgerec publish``, ``edgerec channel set`` (and ``edgerec experiment``).

``register(subparsers)`` is called by ``edgerec_sdk/cli.py``. Tokens and keys may come from the environment
(``EDGEREC_ADMIN_TOKEN``, ``EDGEREC_EDGE_TOKEN``, ``EDGEREC_SIGNING_KEY``) so they stay out of shell history.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ..bundle.manifest import MANIFEST_NAME, Manifest
from ..bundle.verify import sign_bytes
from ..errors import ConfigError
from ..sync.client import HubClient
from ..sync.config import _check_url


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the hub commands to the ``edgerec`` parser."""
    hub = subparsers.add_parser("hub", help="run the reference hub or export its events")
    hub_sub = hub.add_subparsers(dest="hub_command", required=True)

    serve = hub_sub.add_parser(
        "serve", help="serve protocol v1 with waitress (one process; run gunicorn for several)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    serve.add_argument("--root", required=True, help="data directory (bundle files, and the SQLite database)")
    serve.add_argument("--db", default=None, help="postgresql://USER@HOST/DB to store events, bundles and "
                       "channels in PostgreSQL (default: $EDGEREC_HUB_DB, else SQLite under --root)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface "
                       "(put TLS in front: edges refuse http:// to a non-loopback hub)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    serve.add_argument("--threads", type=_positive_int, default=8, help="requests served at once")
    serve.add_argument("--idle-timeout", type=_positive_int, default=30, metavar="SECONDS",
                       help="close a connection that sent nothing for this long (a stalled upload included)")
    serve.add_argument("--admin-token", default=None, help="default: $EDGEREC_ADMIN_TOKEN (comma-separated list)")
    serve.add_argument("--edge-token", default=None, help="default: $EDGEREC_EDGE_TOKEN (comma-separated list)")
    serve.add_argument("--guard-confidence", type=float, default=None, metavar="C",
                       help="abort a rollout whose candidate is worse at this confidence, e.g. 0.99 (default: off)")
    serve.add_argument("--guard-metric", choices=("ctr", "conversion"), default="ctr", help="what the guard judges")
    serve.add_argument("--guard-min-impressions", type=_positive_int, default=1000,
                       help="answers shown per arm before the guard judges")
    serve.set_defaults(func=_cmd_serve)

    export = hub_sub.add_parser("export-events", help="write the event log (CSV user,item,type,timestamp)")
    export.add_argument("--root", default=None, help="hub data directory (its SQLite database)")
    export.add_argument("--db", default=None, help="postgresql://USER@HOST/DB instead of --root "
                        "(default: $EDGEREC_HUB_DB)")
    export.add_argument("--since", default="0", help="unix seconds or ISO 8601 date/time (event time)")
    export.add_argument("--out", default="-", help="file to write, '-' for stdout")
    export.set_defaults(func=_cmd_export)

    publish = subparsers.add_parser("publish", help="upload a bundle to a hub and optionally point a channel at it")
    publish.add_argument("bundle", help="bundle directory")
    _hub_args(publish)
    publish.add_argument("--channel", default=None, help="channel to point at the bundle (e.g. stable)")
    publish.add_argument("--rollout", type=_percent, default=None, help="percent of users, 0-100 (default 100)")
    publish.add_argument("--signing-key", default=None, help="HMAC key to sign the manifest with "
                         "(default: $EDGEREC_SIGNING_KEY; without one, the bundle's own signature file is sent)")
    publish.add_argument("--restamp", action="store_true", help="deliberate rollback: publish a copy of BUNDLE "
                         "with a fresh created_at and version (VERSION-restamp-TIME), re-signed; edges refuse an "
                         "older manifest otherwise (needs the signing key)")
    publish.add_argument("--restamp-version", default=None, help="version of the restamped copy "
                         "(default: ORIGINAL-restamp-YYYYMMDDTHHMMSSZ)")
    publish.add_argument("--restamp-out", default=None, help="keep the restamped copy in this new directory "
                         "(default: a temporary directory, removed after the upload)")
    publish.add_argument("--origin", default=None, metavar="s3://BUCKET/PREFIX", help="upload the bundle files "
                         "there (boto3, extra [origin]; AWS credentials from the environment) and publish only the "
                         "manifest to the hub, naming where edges fetch the files; edges verify them as always")
    publish.add_argument("--origin-url", default=None, help="base URL edges fetch PREFIX/ from (a CDN); default "
                         "the endpoint's path-style URL of the prefix")
    publish.add_argument("--origin-endpoint", default=None, help="S3-compatible endpoint URL (MinIO, R2, ...; "
                         "default: $AWS_ENDPOINT_URL or AWS)")
    publish.add_argument("--origin-acl", default=None, help="canned ACL of each object, e.g. public-read when "
                         "edges read the bucket directly")
    publish.set_defaults(func=_cmd_publish)

    channel = subparsers.add_parser("channel", help="manage channels on a hub")
    channel_sub = channel.add_subparsers(dest="channel_command", required=True)
    cset = channel_sub.add_parser("set", help="point a channel at a published version")
    cset.add_argument("channel")
    cset.add_argument("version")
    cset.add_argument("--rollout", type=_percent, default=100.0, help="percent of users on VERSION, 0-100 "
                      "(default 100: VERSION becomes the base; 0 ends a rollout)")
    _hub_args(cset)
    cset.set_defaults(func=_cmd_channel_set)

    from .experiment_cli import register as register_experiment

    register_experiment(subparsers)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"must be a number within [0, 100], got {text[:20]!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text[:20]!r}")
    return int(text)


def _hub_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--hub", required=required, help="hub base URL")
    p.add_argument("--token", default=None, help="admin token (default: $EDGEREC_ADMIN_TOKEN)")
    p.add_argument("--allow-insecure-http", action="store_true", help="allow http:// to a non-loopback host")


def _tokens(value: str | None, env: str) -> list[str]:
    raw = value if value is not None else os.environ.get(env, "")
    return [t.strip() for t in raw.split(",") if t.strip()]


def _cmd_serve(args: argparse.Namespace) -> int:
    from .app import HubApp
    from .server import ServerLimits, serve_forever

    admin = _tokens(args.admin_token, "EDGEREC_ADMIN_TOKEN")
    edge = _tokens(args.edge_token, "EDGEREC_EDGE_TOKEN")
    if not admin:
        raise ConfigError("an admin token is required (--admin-token or EDGEREC_ADMIN_TOKEN)")
    db = args.db or os.environ.get("EDGEREC_HUB_DB") or None
    guard = None
    if args.guard_confidence is not None:
        from .experiments import ExperimentGuard

        try:
            guard = ExperimentGuard(confidence=args.guard_confidence, metric=args.guard_metric,
                                    min_impressions=args.guard_min_impressions)
        except ValueError as exc:
            raise ConfigError(f"--guard-*: {exc}") from exc
    app = HubApp(args.root, admin_tokens=admin, edge_tokens=edge, db=db, guard=guard)
    sys.stderr.write(f"edgerec hub: serving {args.root} ({app.storage.kind}) on http://{args.host}:{args.port}\n")
    try:
        serve_forever(app, host=args.host, port=args.port,
                      limits=ServerLimits(threads=args.threads, idle_timeout_s=args.idle_timeout))
    except KeyboardInterrupt:
        return 0
    return 0


def parse_since(text: str) -> float:
    """Unix seconds, or an ISO 8601 date/time (UTC when naive)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--since: not a time: {text[:40]!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _cmd_export(args: argparse.Namespace) -> int:
    from .storage import open_storage

    db = args.db or os.environ.get("EDGEREC_HUB_DB") or None
    if db is None and args.root is None:
        raise ConfigError("give --root (SQLite) or --db (PostgreSQL)")
    try:
        storage = open_storage(db, root=args.root, create=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"no hub database under {args.root}") from exc
    since = parse_since(args.since)
    with storage:
        if args.out == "-":
            n = storage.export_events(sys.stdout, since_ts=since)
        else:
            tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                n = storage.export_events(out, since_ts=since)
            os.replace(tmp, args.out)
    sys.stderr.write(f"edgerec hub: exported {n} events\n")
    return 0


def _client(args: argparse.Namespace) -> HubClient:
    _check_url(args.hub, args.allow_insecure_http)
    tokens = _tokens(args.token, "EDGEREC_ADMIN_TOKEN")
    if not tokens:
        raise ConfigError("an admin token is required (--token or EDGEREC_ADMIN_TOKEN)")
    return HubClient(args.hub, token=tokens[0], read_timeout_s=600.0)


def _cmd_publish(args: argparse.Namespace) -> int:
    from .publish import make_tar

    root = Path(args.bundle)
    if not (root / MANIFEST_NAME).is_file():
        raise ConfigError(f"{root} is not a bundle directory (no manifest.json)")
    key = args.signing_key if args.signing_key is not None else os.environ.get("EDGEREC_SIGNING_KEY")
    if args.rollout is not None and not args.channel:
        raise ConfigError("--rollout goes with --channel")
    if (args.restamp_version or args.restamp_out) and not args.restamp:
        raise ConfigError("--restamp-version and --restamp-out go with --restamp")
    if (args.origin_url or args.origin_endpoint or args.origin_acl) and not args.origin:
        raise ConfigError("--origin-url, --origin-endpoint and --origin-acl go with --origin")
    origin = None
    if args.origin:  # credentials and bucket checked now, before anything is built or sent
        from .origin import S3Origin

        origin = S3Origin(args.origin, endpoint_url=args.origin_endpoint, public_url=args.origin_url,
                          acl=args.origin_acl)
    with tempfile.TemporaryDirectory(prefix="edgerec-restamp-") as tmp:
        if args.restamp:
            if not key:
                raise ConfigError("--restamp re-signs the manifest: give --signing-key or $EDGEREC_SIGNING_KEY")
            from ..bundle.restamp import restamp_bundle

            out = Path(args.restamp_out) if args.restamp_out else Path(tmp) / "bundle"
            root = restamp_bundle(root, out, signing_key=key, model_version=args.restamp_version)
        signature = sign_bytes((root / MANIFEST_NAME).read_bytes(), key) if key else None
        client = _client(args)
        base = None
        if origin is not None:
            manifest = Manifest.from_bytes((root / MANIFEST_NAME).read_bytes())
            base = origin.upload(root, manifest.model_version, [*sorted(manifest.files), MANIFEST_NAME])
        try:
            result = client.publish_bundle(make_tar(root, signature=signature, manifest_only=base is not None),
                                           channel=args.channel, rollout_percent=args.rollout, origin=base)
        finally:
            client.close()
    _write_result(result)
    return 0


def _cmd_channel_set(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        result = client.set_channel(args.channel, args.version, rollout_percent=args.rollout)
    finally:
        client.close()
    _write_result(result)
    return 0


def _write_result(result: object) -> None:
    """The hub's JSON answer on stdout; its warning (a channel moved back edges will refuse) on stderr too."""
    if isinstance(result, dict) and isinstance(result.get("warning"), str):
        sys.stderr.write(f"edgerec: warning: {result['warning']}\n")
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
