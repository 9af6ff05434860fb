"""Hub protocol v1: paths, the retry rule, backoff, ``Retry-After``, event batches.

Pure code (no I/O, no httpx), imported by both the SDK and ``edgerec_sdk.hub``, so both sides agree on one
definition of every rule. See decisions G1 and G3 in docs/design.md.

Example:
    >>> is_retryable(503), is_retryable(404)
    (True, False)
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

from ..errors import HubError, HubProtocolError, HubStatusError, HubTransportError
from ..types import EVENT_TYPES as _FEEDBACK_TYPES
from ..types import MAX_POSITION

__all__ = [
    "ALLOWED_EVENT_FIELDS",
    "EVENTS_PATH",
    "FORGET_TYPE",
    "PROTOCOL_VERSION",
    "Backoff",
    "BatchResult",
    "artifact_path",
    "artifacts_path",
    "bundle_file_path",
    "channel_path",
    "decode_batch",
    "decode_batch_result",
    "encode_batch",
    "is_retryable",
    "is_valid_name",
    "loads_strict",
    "manifest_path",
    "parse_retry_after",
    "validate_wire_event",
]

PROTOCOL_VERSION: Final = 1
EVENTS_PATH: Final = "/v1/events"
BUNDLES_PATH: Final = "/v1/bundles"
STATUS_PATH: Final = "/v1/status"
HEALTH_PATH: Final = "/healthz"
SIGNATURE_HEADER: Final = "X-Edgerec-Signature"
#: Base URL of an external origin serving the bundle's files (``<origin>/<name>``); never trusted, files verified.
ORIGIN_HEADER: Final = "X-Edgerec-Origin"
ROLLOUT_HEADER: Final = "X-Edgerec-Rollout-Percent"
"""Share of users (0-100) a channel's candidate version serves; the manifest body is the base version's."""
CANDIDATE_HEADER: Final = "X-Edgerec-Rollout-Version"
"""The candidate version of a channel in rollout; absent when the base version serves everyone."""

FORGET_TYPE: Final = "forget"
"""Event type of a tombstone: the hub erases every event of that pseudonymised user."""
EVENT_TYPES: Final = _FEEDBACK_TYPES | {FORGET_TYPE}
ALLOWED_EVENT_FIELDS: Final = (
    "event_id",
    "user",
    "item",
    "type",
    "ts",
    "value",
    "rec_id",
    "model_version",
    "edge_id",
    "position",
    "items",
    "positions",
)
"""The only event fields that ever leave the edge (fault F06). ``items``/``positions`` belong to the one
``impression`` row an answer logs: the ids shown and their 0-based slots (``item`` repeats the first)."""
MAX_IMPRESSION_ITEMS: Final = 1000
MAX_EVENTS_PER_BATCH: Final = 5000
MAX_ID_CHARS: Final = 256
MAX_EVENT_FUTURE_S: Final = 2 * 86400.0
"""The hub refuses an event ``ts`` further ahead of its clock than this: the edge's one day plus a day of
clock skew between edge and hub. A negative ``ts`` is refused too, as the edge does (fault E08)."""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def manifest_path(channel: str) -> str:
    """``/v1/channels/{channel}/manifest``."""
    return f"/v1/channels/{_segment(channel)}/manifest"


def channel_path(channel: str) -> str:
    """``/v1/channels/{channel}``."""
    return f"/v1/channels/{_segment(channel)}"


def bundle_file_path(version: str, name: str) -> str:
    """``/v1/bundles/{version}/{file}``."""
    return f"/v1/bundles/{_segment(version)}/{_segment(name)}"


def artifacts_path(channel: str, kind: str) -> str:
    """``/v1/channels/{channel}/artifacts/{kind}``: append (admin POST) or list (GET ``?after=seq``)."""
    return f"/v1/channels/{_segment(channel)}/artifacts/{_segment(kind)}"


def artifact_path(channel: str, kind: str, seq: int) -> str:
    """``/v1/channels/{channel}/artifacts/{kind}/{seq}``: one artifact's exact signed bytes."""
    return f"{artifacts_path(channel, kind)}/{int(seq)}"


def is_valid_name(value: object, *, max_chars: int = 255) -> bool:
    """Whether ``value`` may be a channel, version or file name: ``[A-Za-z0-9][A-Za-z0-9._-]*``, bounded."""
    return isinstance(value, str) and len(value) <= max_chars and _NAME_RE.fullmatch(value) is not None


def _segment(value: str) -> str:
    if not is_valid_name(value):
        raise ValueError(f"not a valid path segment: {str(value)[:40]!r}")
    return value


# --- the retry rule (G1) --------------------------------------------------------------------------------


def is_retryable(status_or_error: int | BaseException) -> bool:
    """Whether a failed call may be repeated as is.

    Retry connect, read and write errors, timeouts, 408, 429 and every 5xx; never another 4xx.
    """
    if isinstance(status_or_error, bool):
        raise TypeError("status must be an int or an exception")
    if isinstance(status_or_error, int):
        return status_or_error in (408, 429) or 500 <= status_or_error <= 599
    if isinstance(status_or_error, HubTransportError):
        return True
    if isinstance(status_or_error, HubStatusError):
        return is_retryable(status_or_error.status)
    if isinstance(status_or_error, HubProtocolError):
        # a truncated body or a captive portal page: transient by nature (fault A11)
        return True
    if isinstance(status_or_error, HubError):
        return False
    return isinstance(status_or_error, (ConnectionError, TimeoutError))


class Backoff:
    """Exponential backoff with jitter: ``base_s`` doubling to ``max_s``, each delay drawn from
    ``[1 - jitter_ratio, 1]`` of its value, reset after a success (design G1, docs/design.md).

    Example:
        >>> b = Backoff(rng=random.Random(0))
        >>> 0.5 <= b.next_delay() <= 1.0
        True
    """

    def __init__(
        self,
        *,
        base_s: float = 1.0,
        max_s: float = 30.0,
        jitter_ratio: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not (base_s > 0 and max_s >= base_s and 0.0 <= jitter_ratio <= 1.0):
            raise ValueError("need base_s > 0, max_s >= base_s and 0 <= jitter_ratio <= 1")
        self.base_s = base_s
        self.max_s = max_s
        self.jitter_ratio = jitter_ratio
        self._rng = rng or random.Random()
        self.failures = 0

    def jitter(self, value_s: float) -> float:
        """``value_s`` scaled by a draw from ``[1 - jitter_ratio, 1]``."""
        return value_s * (1.0 - self.jitter_ratio * self._rng.random())

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """Record one failure and return the delay before the next attempt.

        ``retry_after_s`` (already parsed and capped) is a floor: the result is ``max(backoff, retry_after)``.
        """
        raw = min(self.max_s, self.base_s * (2.0 ** min(self.failures, 62)))
        self.failures += 1
        delay = self.jitter(raw)
        if retry_after_s is not None and retry_after_s > delay:
            delay = retry_after_s
        return delay

    def reset(self) -> None:
        """A success: the next failure starts from ``base_s`` again."""
        self.failures = 0


def parse_retry_after(value: str | None, *, now_s: float, max_s: float = 300.0) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date), or ``None``.

    Negative, non-finite, unparseable values and values over ``max_s`` give ``None``: the caller falls back
    to its computed backoff (fault A07). ``now_s`` is the wall clock, used for HTTP-dates only.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    seconds: float
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_s
    if not math.isfinite(seconds) or seconds < 0 or seconds > max_s:
        return None
    return seconds


# --- event batches (G3) ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The hub's answer to an event batch: ids it stored, ids it had already, ids it refused with reasons."""

    accepted: tuple[str, ...]
    duplicates: tuple[str, ...]
    rejected: Mapping[str, str]


def wire_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the allow-listed fields of an (already pseudonymised) event, dropping ``None`` values."""
    return {k: event[k] for k in ALLOWED_EVENT_FIELDS if event.get(k) is not None}


def encode_batch(
    *, edge_id: str, batch_id: str, events: Iterable[bytes], compress: bool = True
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of ``POST /v1/events``.

    ``events`` are orjson-encoded wire events (as stored in the outbox), spliced in without re-parsing.
    """
    head = orjson.dumps({"v": PROTOCOL_VERSION, "edge_id": edge_id, "batch_id": batch_id})
    body = head[:-1] + b',"events":[' + b",".join(events) + b"]}"
    headers = {"Content-Type": "application/json"}
    if compress:
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def decompress_body(body: bytes, content_encoding: str | None, *, max_bytes: int) -> bytes:
    """Undo ``gzip`` (or nothing) with a cap on the decompressed size.

    Raises:
        HubProtocolError: unknown encoding or corrupt gzip.
        OverflowError: the decompressed body is over ``max_bytes``.
    """
    enc = (content_encoding or "identity").strip().lower()
    if enc == "identity":
        if len(body) > max_bytes:
            raise OverflowError("body over the cap")
        return body
    if enc != "gzip":
        raise HubProtocolError(f"unsupported Content-Encoding {enc[:20]!r}")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise HubProtocolError("corrupt gzip body") from exc
    if len(out) > max_bytes or d.unconsumed_tail:
        raise OverflowError("decompressed body over the cap")
    if not d.eof:
        raise HubProtocolError("truncated gzip body")
    if d.unused_data:  # a second member or trailing bytes: refused, never silently dropped
        raise HubProtocolError("data after the end of the gzip body")
    return out


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        names = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(names) if k in names[:i])
        raise HubProtocolError(f"duplicate JSON key {dup[:40]!r}")
    return doc


def _no_constant(name: str) -> Any:
    raise HubProtocolError(f"{name} is not JSON")


def loads_strict(raw: bytes, *, what: str) -> Any:
    """Parse JSON refusing what lenient parsers accept: duplicate keys (two parsers could read different
    values), ``NaN``/``Infinity`` and invalid UTF-8. Raises :class:`HubProtocolError` naming ``what``."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except HubProtocolError as exc:
        raise HubProtocolError(f"{what}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HubProtocolError(f"{what} is not JSON") from exc


def decode_batch(raw: bytes) -> tuple[str, str, list[Any]]:
    """Parse a decompressed batch into ``(edge_id, batch_id, events)``; raise ``HubProtocolError`` if malformed."""
    doc = loads_strict(raw, what="batch")
    if not isinstance(doc, dict):
        raise HubProtocolError("batch must be a JSON object")
    v = doc.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise HubProtocolError(f"unsupported protocol version {str(v)[:20]!r} (this hub speaks v{PROTOCOL_VERSION})")
    edge_id, batch_id, events = doc.get("edge_id"), doc.get("batch_id"), doc.get("events")
    if not isinstance(edge_id, str) or not isinstance(batch_id, str) or not isinstance(events, list):
        raise HubProtocolError("batch needs edge_id, batch_id (strings) and events (a list)")
    if len(edge_id) > MAX_ID_CHARS or len(batch_id) > MAX_ID_CHARS:
        raise HubProtocolError("edge_id or batch_id too long")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise HubProtocolError(f"more than {MAX_EVENTS_PER_BATCH} events in one batch")
    return edge_id, batch_id, events


def validate_wire_event(event: object, *, now_s: float | None = None) -> str | None:
    """Why the hub refuses ``event``, or ``None`` when it is acceptable.

    ``ts`` must lie in ``[0, now_s + MAX_EVENT_FUTURE_S]`` (``now_s``: the hub's wall clock, read when None).
    """
    if not isinstance(event, dict):
        return "not_an_object"
    unknown = set(event) - set(ALLOWED_EVENT_FIELDS)
    if unknown:
        return "unknown_field"
    for key in ("event_id", "user", "type"):
        v = event.get(key)
        if not isinstance(v, str) or not v or len(v) > MAX_ID_CHARS:
            return f"bad_{key}"
    if event["type"] not in EVENT_TYPES:
        return "bad_type"
    if event["type"] != FORGET_TYPE:
        item = event.get("item")
        if not isinstance(item, str) or not item or len(item) > MAX_ID_CHARS:
            return "bad_item"
    for key in ("rec_id", "model_version", "edge_id", "item"):
        v = event.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > MAX_ID_CHARS):
            return f"bad_{key}"
    ts = event.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)):
        return "bad_ts"
    if ts is not None and not 0 <= ts <= (time.time() if now_s is None else now_s) + MAX_EVENT_FUTURE_S:
        return "bad_ts"
    value = event.get("value")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        return "bad_value"
    position = event.get("position")
    if position is not None and not _is_position(position):
        return "bad_position"
    return _impression_fields(event)


def _is_position(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_POSITION


def _impression_fields(event: Mapping[str, Any]) -> str | None:
    items, positions = event.get("items"), event.get("positions")
    if items is None and positions is None:
        return "bad_rec_id" if event["type"] == "impression" and not event.get("rec_id") else None
    if event["type"] != "impression":
        return "bad_items"
    if not isinstance(items, list) or not 0 < len(items) <= MAX_IMPRESSION_ITEMS or not all(
        isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS for i in items
    ):
        return "bad_items"
    if not isinstance(positions, list) or len(positions) != len(items) or not all(map(_is_position, positions)):
        return "bad_positions"
    if not event.get("rec_id"):
        return "bad_rec_id"
    return None


def encode_batch_result(result: BatchResult) -> bytes:
    """The hub's JSON answer to a batch."""
    return orjson.dumps(
        {
            "accepted": len(result.accepted),
            "duplicates": len(result.duplicates),
            "accepted_ids": list(result.accepted),
            "duplicate_ids": list(result.duplicates),
            "rejected": [{"event_id": k, "reason": v} for k, v in result.rejected.items()],
        }
    )


def decode_batch_result(raw: bytes, sent_ids: Iterable[str]) -> BatchResult:
    """Parse the hub's answer; ids the hub neither accepted, deduplicated nor rejected count as accepted
    only when the answer names none at all (an older hub that answers counts only)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HubProtocolError("event batch answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise HubProtocolError("event batch answer must be a JSON object")
    sent = list(sent_ids)
    sent_set = set(sent)
    rejected: dict[str, str] = {}
    for entry in doc.get("rejected") or []:
        if isinstance(entry, dict) and isinstance(entry.get("event_id"), str) and entry["event_id"] in sent_set:
            rejected[entry["event_id"]] = str(entry.get("reason", "rejected"))[:100]
    dup_ids = doc.get("duplicate_ids")
    duplicates = tuple(i for i in dup_ids if i in sent_set and i not in rejected) if isinstance(dup_ids, list) else ()
    dup_set = set(duplicates)
    accepted = tuple(i for i in sent if i not in rejected and i not in dup_set)
    if not isinstance(doc.get("accepted"), int):
        raise HubProtocolError("event batch answer lacks 'accepted'")
    return BatchResult(accepted=accepted, duplicates=duplicates, rejected=rejected)
