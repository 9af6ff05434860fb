# Over 500 lines: one WSGI app; its routes share the auth, body caps and storage-error mapping kept here.
"""The reference hub: a plain WSGI application implementing protocol v1 (docs/hub.md).

No framework: it runs under waitress (``edgerec hub serve``, see server.py), gunicorn
(``gunicorn 'edgerec_sdk.hub.app:app_from_env()'`` with ``EDGEREC_HUB_ROOT`` and the token variables) and
in-process through ``httpx.WSGITransport``. State: the database (SQLite under ``--root``, or PostgreSQL given
a ``postgresql://`` URL) and the bundle files (under ``<root>/bundles/<version>/`` with SQLite, chunked in the
database with PostgreSQL, so replicas share nothing but the database).

Auth (fault F09): no or unknown token on any ``/v1/`` path is 401 before routing (an unknown channel is not
revealed); an edge token on an admin call is 403. Transient trouble answers 429/503 with ``Retry-After``,
never 400 (design G1, docs/design.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from ..bundle.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    check_file_name,
    check_model_version,
    created_at_time,
)
from ..errors import (
    ConfigError,
    EdgerecError,
    HubProtocolError,
    ModelFormatError,
    PublishError,
    StorageBusyError,
)
from ..sync import protocol
from .artifacts import DEFAULT_MAX_ARTIFACT_BYTES, VALIDATORS
from .experiments import ExperimentGuard, GuardRunner, experiment_report
from .metrics import HubMetrics
from .origin import check_origin_url
from .publish import ingest_tar
from .storage import (
    BundleRecord,
    ChannelRecord,
    DatabaseFileStore,
    FileStore,
    LocalFileStore,
    SQLStorage,
    bundle_scope,
    open_storage,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["HubApp", "app_from_env"]

logger = logging.getLogger(__name__)

Response = tuple[int, list[tuple[str, str]], Iterable[bytes]]

_REASONS = {
    200: "OK", 201: "Created", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 416: "Range Not Satisfiable", 429: "Too Many Requests",
    500: "Internal Server Error", 503: "Service Unavailable",
}
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 256 * 1024


def _json(status: int, doc: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
    body = orjson.dumps(doc)
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers], [body]


def _error(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return _json(status, {"error": message}, headers)


class HubApp:
    """The WSGI callable.

    Args:
        root: directory of ``bundles/`` (and of ``hub.sqlite3`` unless ``db`` or ``storage`` is given).
        admin_tokens: tokens that may publish and move channels (and do what edges do).
        edge_tokens: tokens that may read manifests and bundle files and post events.
        max_body_bytes: cap on a compressed event batch.
        max_batch_bytes: cap on a decompressed event batch.
        max_bundle_bytes: cap on a published bundle.
        max_concurrent_batches: event posts handled at once; more answer 429.
        db: ``postgresql://…`` to keep events, bundles and channels in PostgreSQL; default SQLite under root.
        storage: a storage object to use as it is (tests); overrides ``db``.
        max_artifact_bytes: cap on one channel artifact (a catalogue delta, a rule set); more answers 413.
        artifact_validators: kind -> a check of an artifact's bytes raising ``EdgerecError``/``ValueError``
            (refused with 400, nothing stored); default :data:`~edgerec_sdk.hub.artifacts.VALIDATORS`.
        files: where bundle files live; default: in the database with PostgreSQL (stateless replicas),
            under ``root/bundles/`` with SQLite.
        metrics: serve Prometheus metrics at ``/metrics`` (no token: keep it internal); ``None``: when
            prometheus-client is installed (extra ``[hub]``), ``True``: required, ``False``: off.
        guard: abort a channel's rollout when its candidate is worse (``GET /v1/experiments/<channel>``
            shows the numbers); checked after event batches, at most every ``guard_interval_s``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        admin_tokens: Iterable[str],
        edge_tokens: Iterable[str] = (),
        max_body_bytes: int = 8 * 1024 * 1024,
        max_batch_bytes: int = 32 * 1024 * 1024,
        max_bundle_bytes: int = 4 * 1024**3,
        max_concurrent_batches: int = 8,
        db: str | None = None,
        storage: SQLStorage | None = None,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
        artifact_validators: Mapping[str, Callable[[bytes], object]] | None = None,
        files: FileStore | None = None,
        metrics: bool | None = None,
        guard: ExperimentGuard | None = None,
        guard_interval_s: float = 10.0,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "bundles").mkdir(exist_ok=True, mode=0o755)
        (self.root / "tmp").mkdir(exist_ok=True, mode=0o700)
        self.storage = storage if storage is not None else open_storage(db, root=self.root)
        self.files = files or (DatabaseFileStore(self.storage) if self.storage.kind == "postgresql"
                               else LocalFileStore(self.root))
        self._admin = [t.encode() for t in admin_tokens if t]
        self._edge = [t.encode() for t in edge_tokens if t]
        if not self._admin:
            raise ValueError("the hub needs an admin token")
        self.max_body_bytes = max_body_bytes
        self.max_batch_bytes = max_batch_bytes
        self.max_bundle_bytes = max_bundle_bytes
        self._batch_slots = threading.BoundedSemaphore(max_concurrent_batches)
        self._files_cache: dict[str, frozenset[str]] = {}
        self.metrics = HubMetrics(self.storage) if metrics or (metrics is None and _has_prometheus()) else None
        self.max_artifact_bytes = max_artifact_bytes
        self.artifact_validators = dict(VALIDATORS if artifact_validators is None else artifact_validators)
        self.guard = None if guard is None else GuardRunner(guard, interval_s=guard_interval_s)

    def close(self) -> None:
        """Close the storage (its PostgreSQL connections); the app must not serve afterwards."""
        self.storage.close()

    # --- WSGI ----------------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            status, headers, body = self._dispatch(environ)
        except StorageBusyError as exc:
            logger.warning("hub: storage unavailable (%s); answering 503", exc)
            status, headers, body = _error(503, "storage busy", [("Retry-After", "1")])
        except Exception:  # why: never leak a traceback to a client; log it here
            logger.exception("hub: unhandled error")
            status, headers, body = _error(500, "internal error")
        if self.metrics is not None:
            self.metrics.request(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "") or "/", status,
                                 time.perf_counter() - started, headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            body = []
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return body

    def _role(self, environ: dict[str, Any]) -> str | None:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth[7:].strip().encode()
        # compare against every token, so timing says nothing about which list matched
        is_admin = any([hmac.compare_digest(token, t) for t in self._admin])
        is_edge = any([hmac.compare_digest(token, t) for t in self._edge])
        return "admin" if is_admin else "edge" if is_edge else None

    def _dispatch(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if path == protocol.HEALTH_PATH:
            return _json(200, {"ok": True})
        if path == "/metrics" and self.metrics is not None:
            body = self.metrics.render()
            return 200, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                         ("Content-Length", str(len(body)))], [body]
        if not path.startswith("/v1/"):
            return _error(404, "not found")
        role = self._role(environ)
        if role is None:
            return _error(401, "missing or unknown token", [("WWW-Authenticate", "Bearer")])
        parts = path.split("/")[2:]
        admin = role == "admin"
        if parts == ["events"]:
            return self._post_events(environ) if method == "POST" else _error(405, "use POST")
        if len(parts) == 2 and parts[0] == "experiments":
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET")
            return self._experiment(environ, parts[1]) if admin else _error(403, "admin token required")
        if parts == ["status"]:
            return _json(200, self.storage.status()) if method in ("GET", "HEAD") else _error(405, "use GET")
        if parts == ["bundles"]:
            if method != "POST":
                return _error(405, "use POST")
            return self._publish(environ) if admin else _error(403, "admin token required")
        if len(parts) == 3 and parts[0] == "bundles":
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET")
            return self._bundle_file(environ, parts[1], parts[2])
        if len(parts) == 3 and parts[0] == "channels" and parts[2] == "manifest":
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET")
            return self._manifest(environ, parts[1])
        if len(parts) in (4, 5) and parts[0] == "channels" and parts[2] == "artifacts":
            return self._artifacts(environ, method, parts[1], parts[3], parts[4] if len(parts) == 5 else None, admin)
        if len(parts) == 2 and parts[0] == "channels":
            if method == "PUT":
                return self._set_channel(environ, parts[1]) if admin else _error(403, "admin token required")
            if method in ("GET", "HEAD"):
                rec = self.storage.get_channel(parts[1])
                if rec is None:
                    return _error(404, "no such channel")
                return _json(200, {"channel": rec.name, **_channel_doc(rec)})
            return _error(405, "use GET or PUT")
        return _error(404, "not found")

    def _experiment(self, environ: dict[str, Any], channel: str) -> Response:
        """``?base=&candidate=&rollout=`` name the arms of a test that ended (promoted or aborted)."""
        if self.storage.get_channel(channel) is None:
            return _error(404, "no such channel")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            rollout = float(query["rollout"]) if "rollout" in query else None
            if rollout is not None and not 0.0 < rollout < 100.0:
                raise ValueError(rollout)
            alpha = float(query.get("alpha", 0.01))
            if not 0.0 < alpha < 0.5:
                raise ValueError(alpha)
        except ValueError:
            return _error(400, "rollout must be within (0, 100) and alpha within (0, 0.5)")
        report = experiment_report(self.storage, channel, alpha=alpha, base=query.get("base"),
                                   candidate=query.get("candidate"), rollout_percent=rollout)
        if report is None:
            return _error(409, "the channel has no rollout in progress (name ?base= and ?candidate=)")
        return _json(200, report)

    # --- body ----------------------------------------------------------------------------------------

    def _read_body(self, environ: dict[str, Any], cap: int) -> bytes | Response:
        raw_len = environ.get("CONTENT_LENGTH") or ""
        if not raw_len.isdigit():
            return _error(411, "Content-Length required")
        length = int(raw_len)
        if length > cap:
            return _error(413, f"body over {cap} bytes")
        stream = environ["wsgi.input"]
        chunks: list[bytes] = []
        got = 0
        while got < length:
            chunk = stream.read(min(_CHUNK, length - got))
            if not chunk:
                return _error(400, "body shorter than Content-Length")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    # --- events --------------------------------------------------------------------------------------

    def _post_events(self, environ: dict[str, Any]) -> Response:
        # the body first: a client that stalls mid-upload must not hold a slot real batches need
        body = self._read_body(environ, self.max_body_bytes)
        if isinstance(body, tuple):
            return body
        if not self._batch_slots.acquire(blocking=False):
            return _error(429, "busy", [("Retry-After", "1")])
        try:
            try:
                raw = protocol.decompress_body(body, environ.get("HTTP_CONTENT_ENCODING"), max_bytes=self.max_batch_bytes)
                edge_id, batch_id, events = protocol.decode_batch(raw)
            except OverflowError:
                return _error(413, "decompressed batch over the cap")
            except HubProtocolError as exc:
                return _error(400, str(exc))
            try:
                result = self.storage.insert_events(edge_id, batch_id, events)
                if self.guard is not None and result.accepted:
                    self.guard.maybe_run(self.storage)
            except StorageBusyError as exc:
                logger.warning("hub: storage busy (%s); answering 503", exc)
                return _error(503, "storage busy", [("Retry-After", "1")])
            if self.metrics is not None:
                self.metrics.batch(len(events), result)
            logger.debug("hub: batch of %d events: %d new, %d duplicates, %d rejected",
                         len(events), len(result.accepted), len(result.duplicates), len(result.rejected))
            body_out = protocol.encode_batch_result(result)
            return 200, [("Content-Type", "application/json"), ("Content-Length", str(len(body_out)))], [body_out]
        finally:
            self._batch_slots.release()

    # --- bundles -------------------------------------------------------------------------------------

    def _publish(self, environ: dict[str, Any]) -> Response:
        # every argument is checked before the body is read and anything is written
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        channel = (query.get("channel") or [None])[0]
        rollout = 100.0
        if channel is not None:
            try:
                check_model_version(channel, what="channel name")
            except ModelFormatError:
                return _error(400, _BAD_CHANNEL)
            raw_rollout = (query.get("rollout") or ["100"])[0]
            parsed = _percent(raw_rollout)
            if parsed is None:
                return _error(400, f"rollout must be a number within [0, 100], got {raw_rollout[:20]!r}")
            rollout = parsed
        elif "rollout" in query:
            return _error(400, "rollout needs a channel")
        origin = (query.get("origin") or [None])[0]
        if origin is not None:
            try:
                origin = check_origin_url(origin, allow_insecure_http=True)  # edges apply their own rule
            except ConfigError as exc:
                return _error(400, str(exc))
        raw_len = environ.get("CONTENT_LENGTH") or ""
        if not raw_len.isdigit():
            return _error(411, "Content-Length required")
        if int(raw_len) > self.max_bundle_bytes:
            return _error(413, "bundle over the hub's size cap")
        tmp = self.root / "tmp" / uuid.uuid4().hex
        tar_path = tmp.with_suffix(".tar")
        try:
            remaining = int(raw_len)
            with open(tar_path, "wb") as f:
                while remaining > 0:
                    chunk = environ["wsgi.input"].read(min(_CHUNK, remaining))
                    if not chunk:
                        return _error(400, "body shorter than Content-Length")
                    f.write(chunk)
                    remaining -= len(chunk)
            try:
                intake = ingest_tar(tar_path, tmp, max_bytes=self.max_bundle_bytes, files_elsewhere=origin is not None)
            except PublishError as exc:
                return _error(exc.status, str(exc))
            version = intake.manifest.model_version
            sha = hashlib.sha256(intake.raw_manifest).hexdigest()
            existing = self.storage.get_bundle(version)
            if existing is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                if existing.manifest_sha256 != sha or existing.signature != intake.signature:
                    return _error(409, "that version exists with other content")
            else:
                self.files.put(bundle_scope(version), tmp)
                self.storage.add_bundle(BundleRecord(version, intake.raw_manifest, sha, intake.signature,
                                                     intake.total_bytes))
                logger.info("hub: published %s", version)
            if origin is not None:
                self.storage.set_origin(bundle_scope(version), origin)
            out: dict[str, Any] = {"version": version, "manifest_sha256": sha, "created": existing is None}
            if channel is not None:
                warning = self._older_than_base(channel, intake.manifest)
                rec = self.storage.set_channel(channel, version, rollout)
                out["channel"] = {"name": rec.name, **_channel_doc(rec)}
                if warning:
                    out["warning"] = warning
            return _json(201 if existing is None else 200, out)
        except (ModelFormatError, ValueError) as exc:
            return _error(400, str(exc))
        finally:
            tar_path.unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)

    def _set_channel(self, environ: dict[str, Any], channel: str) -> Response:
        try:
            check_model_version(channel, what="channel name")
        except ModelFormatError:
            return _error(400, _BAD_CHANNEL)
        body = self._read_body(environ, 64 * 1024)
        if isinstance(body, tuple):
            return body
        usage = 'body must be {"version": str, "rollout_percent": number}'
        try:
            doc = protocol.loads_strict(body, what="body")
        except HubProtocolError as exc:
            return _error(400, f"{exc}; {usage}")
        if not isinstance(doc, dict) or set(doc) - {"version", "rollout_percent"}:
            return _error(400, usage)
        try:
            version = check_model_version(doc.get("version"), what="version")
        except ModelFormatError:
            return _error(400, f"invalid version {str(doc.get('version'))[:80]!r}; {usage}")
        rollout = _percent(doc.get("rollout_percent", 100.0))
        if rollout is None:
            return _error(400, "rollout_percent must be a number within [0, 100]")
        bundle = self.storage.get_bundle(version)
        if bundle is None:
            return _error(404, "no such bundle version")
        warning = self._older_than_base(channel, Manifest.from_bytes(bundle.manifest))
        rec = self.storage.set_channel(channel, version, rollout)
        logger.info("hub: channel %s -> %s (candidate %s at %.1f%%)", rec.name, rec.version, rec.candidate,
                    rec.rollout_percent)
        doc_out = {"channel": rec.name, **_channel_doc(rec)}
        if warning:
            doc_out["warning"] = warning
        return _json(200, doc_out)

    def _older_than_base(self, channel: str, target: Manifest) -> str | None:
        """A warning when ``target`` is older than the channel's base: edges that took the base refuse it."""
        rec = self.storage.get_channel(channel)
        base = self.storage.get_bundle(rec.version) if rec is not None else None
        if base is None or base.version == target.model_version:
            return None
        current = Manifest.from_bytes(base.manifest)
        when, now = created_at_time(target.created_at), created_at_time(current.created_at)
        if when is None or now is None or when >= now:
            return None
        message = (f"{target.model_version} (created_at {target.created_at}) is older than "
                   f"{current.model_version} (created_at {current.created_at}), which this channel serves: every "
                   f"edge that took {current.model_version} refuses it (rollback_refused). To roll back, publish "
                   f"it again with a fresh stamp: edgerec publish BUNDLE --restamp --channel {channel}")
        logger.warning("hub: channel %s: %s", channel, message)
        return message

    def _manifest(self, environ: dict[str, Any], channel: str) -> Response:
        rec = self.storage.get_channel(channel)
        if rec is None:
            return _error(404, "no such channel")
        bundle = self.storage.get_bundle(rec.version)
        if bundle is None:
            return _error(503, "channel points at a missing bundle", [("Retry-After", "30")])
        tag_src = f"{bundle.manifest_sha256}:{rec.candidate or ''}:{rec.rollout_percent}".encode()
        etag = '"' + hashlib.sha256(tag_src).hexdigest()[:32] + '"'
        headers = [("ETag", etag), ("Cache-Control", "no-cache")]
        if rec.candidate:
            headers += [(protocol.CANDIDATE_HEADER, rec.candidate), (protocol.ROLLOUT_HEADER, f"{rec.rollout_percent:g}")]
        if bundle.signature:
            headers.append((protocol.SIGNATURE_HEADER, bundle.signature))
        origin = self.storage.get_origin(bundle_scope(rec.version))
        if origin:
            headers.append((protocol.ORIGIN_HEADER, origin))
        if environ.get("HTTP_IF_NONE_MATCH", "").strip() == etag:
            return 304, headers, []
        body = bundle.manifest
        return 200, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers], [body]

    # --- channel artifacts (signed catalogue deltas, rule sets) -------------------------------------------

    def _artifacts(self, environ: dict[str, Any], method: str, channel: str, kind: str, seq: str | None,
                   admin: bool) -> Response:
        if kind not in self.artifact_validators:
            return _error(404, f"unknown artifact kind; known: {sorted(self.artifact_validators)}")
        try:
            check_model_version(channel, what="channel")
        except ModelFormatError as exc:
            return _error(400, str(exc))
        if seq is not None:
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET")
            rec = self.storage.get_artifact(channel, kind, int(seq)) if seq.isdigit() else None
            if rec is None or rec.body is None:
                return _error(404, "no such artifact")
            headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(rec.size))]
            if rec.signature:
                headers.append((protocol.SIGNATURE_HEADER, rec.signature))
            return 200, headers, [rec.body]
        if method in ("GET", "HEAD"):
            after = (parse_qs(environ.get("QUERY_STRING", "")).get("after") or ["0"])[0]
            if not after.isdigit():
                return _error(400, "after must be a sequence number")
            listed = self.storage.list_artifacts(channel, kind, after=int(after))
            return _json(200, {"channel": channel, "kind": kind, "artifacts": [
                {"seq": r.seq, "sha256": r.sha256, "size": r.size, "signature": r.signature} for r in listed]})
        if method != "POST":
            return _error(405, "use GET or POST")
        if not admin:
            return _error(403, "admin token required")
        body = self._read_body(environ, self.max_artifact_bytes)
        if isinstance(body, tuple):
            return body
        try:
            self.artifact_validators[kind](body)
        except (EdgerecError, ValueError, TypeError) as exc:
            return _error(400, f"{kind} artifact refused: {exc}")
        signature = environ.get("HTTP_" + protocol.SIGNATURE_HEADER.upper().replace("-", "_")) or None
        rec = self.storage.add_artifact(channel, kind, body, hashlib.sha256(body).hexdigest(), signature)
        logger.info("hub: channel %s: %s artifact %d (%d bytes)", channel, kind, rec.seq, rec.size)
        return _json(201, {"channel": channel, "kind": kind, "seq": rec.seq, "sha256": rec.sha256,
                           "size": rec.size})

    def _bundle_file(self, environ: dict[str, Any], version: str, name: str) -> Response:
        try:
            check_model_version(version, what="version")
            check_file_name(name)
        except ModelFormatError:
            return _error(404, "not found")
        if name not in self._listed_files(version):
            return _error(404, "not found")
        scope = bundle_scope(version)
        size = self.files.size(scope, name)
        if size is None:
            return _error(404, "not found")
        start, end, status = 0, size - 1, 200
        match = _RANGE_RE.fullmatch(environ.get("HTTP_RANGE", "").strip())
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size or end < start:
                return _error(416, "range not satisfiable", [("Content-Range", f"bytes */{size}")])
            status = 206
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(end - start + 1)),
                   ("Accept-Ranges", "bytes")]
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        if name == MANIFEST_NAME and (origin := self.storage.get_origin(scope)):
            headers.append((protocol.ORIGIN_HEADER, origin))  # where a rollout candidate's files are
        return status, headers, self.files.read(scope, name, start, end - start + 1)


    def _listed_files(self, version: str) -> frozenset[str]:
        names = self._files_cache.get(version)
        if names is None:
            bundle = self.storage.get_bundle(version)
            if bundle is None:
                return frozenset()
            files = Manifest.from_bytes(bundle.manifest).files
            names = frozenset(files) | {MANIFEST_NAME} | ({SIGNATURE_NAME} if bundle.signature else set())
            self._files_cache[version] = names
        return names


_BAD_CHANNEL = "invalid channel name: use 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit"


def _percent(value: object) -> float | None:
    """A rollout share within [0, 100] from JSON (a number, never a bool) or a query string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) <= 32 else None
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 100.0:
        return None
    return float(value)


def _channel_doc(rec: ChannelRecord) -> dict[str, Any]:
    """A channel as the API shows it. ``serving`` gives each version's share of users, so a channel with no
    rollout reads as its version on 100 %, never as ``rollout_percent: 0`` (which looked like "nobody")."""
    if rec.candidate is None:
        return {"version": rec.version, "candidate": None, "rollout_percent": None,
                "serving": {rec.version: 100.0}}
    return {"version": rec.version, "candidate": rec.candidate, "rollout_percent": rec.rollout_percent,
            "serving": {rec.version: 100.0 - rec.rollout_percent, rec.candidate: rec.rollout_percent}}


def app_from_env(environ: dict[str, str] | None = None) -> HubApp:
    """Build the app from ``EDGEREC_HUB_ROOT``, ``EDGEREC_ADMIN_TOKEN``, ``EDGEREC_EDGE_TOKEN`` and, for
    PostgreSQL, ``EDGEREC_HUB_DB`` (gunicorn)."""
    env = os.environ if environ is None else environ
    root = env.get("EDGEREC_HUB_ROOT")
    if not root:
        raise ValueError("set EDGEREC_HUB_ROOT to the hub's data directory")
    return HubApp(
        root,
        admin_tokens=[t for t in env.get("EDGEREC_ADMIN_TOKEN", "").split(",") if t],
        edge_tokens=[t for t in env.get("EDGEREC_EDGE_TOKEN", "").split(",") if t],
        db=env.get("EDGEREC_HUB_DB") or None,
    )


def _has_prometheus() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True
