"""Validation and normalisation of feedback events (pure: no I/O)."""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from ..errors import EventError
from ..types import EVENT_TYPES, MAX_POSITION, EventLike, FeedbackEvent

__all__ = ["MAX_ID_CHARS", "check_position", "check_user_id", "normalize_event"]

MAX_ID_CHARS = 256
_FIELDS = frozenset({"user", "item", "type", "ts", "value", "rec_id", "event_id", "position"})
RATING_RANGE = (1.0, 5.0)
_MAX_FUTURE_S = 86_400.0


def check_user_id(user: object) -> str:
    """Return the user id as a string, or raise ``TypeError``/``ValueError`` for a programmer error."""
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise TypeError(f"user id must be str or int, not {type(user).__name__}{_id_hint(user)}")
    text = str(user)
    if not text:
        raise ValueError("user id must not be empty")
    if len(text) > MAX_ID_CHARS:
        raise ValueError(f"user id longer than {MAX_ID_CHARS} characters")
    return text


def _id_hint(value: object) -> str:
    """A hint for the common mistake of passing a model instance (a Django ``User``, an ORM row)."""
    pk = getattr(value, "pk", None)
    if isinstance(pk, (str, int)) and not isinstance(pk, bool):
        return f": pass its primary key, e.g. {type(value).__name__.lower()}.pk"
    for attr in ("id", "user_id"):
        if isinstance(getattr(value, attr, None), (str, int)):
            return f": pass its id, e.g. {type(value).__name__.lower()}.{attr}"
    return ""


def _id_field(data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise EventError(f"event field {name!r} is missing", field=name)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventError(f"event field {name!r} must be a string, not {type(value).__name__}{_id_hint(value)}",
                         field=name)
    text = str(value)
    if not text or len(text) > MAX_ID_CHARS:
        raise EventError(f"event field {name!r} must have 1 to {MAX_ID_CHARS} characters", field=name)
    return text


def _number(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise EventError(f"event field {name!r} must be a number, not bool", field=name)
    if isinstance(value, (numbers.Real, Decimal)):
        number = float(value)
    else:
        raise EventError(f"event field {name!r} must be a number, not {type(value).__name__}", field=name)
    if not math.isfinite(number):
        raise EventError(f"event field {name!r} must be finite", field=name)
    return number


def check_position(value: object, name: str = "position") -> int:
    """A 0-based answer slot: a plain non-negative int below ``MAX_POSITION`` (bool and float refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EventError(f"event field {name!r} must be an int, not {type(value).__name__}", field=name)
    position = int(value)
    if not 0 <= position < MAX_POSITION:
        raise EventError(f"event field {name!r} must be within [0, {MAX_POSITION})", field=name)
    return position


def _timestamp(value: object, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, _dt.datetime):
        # A naive datetime is taken as UTC, never as the server's local time.
        ts = (value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)).timestamp()
    else:
        ts = _number(value, "ts")
    if ts > now + _MAX_FUTURE_S:
        raise EventError("event field 'ts' is more than a day in the future", field="ts")
    if ts < 0:
        raise EventError("event field 'ts' must not be negative", field="ts")
    return ts


def normalize_event(
    event: EventLike, *, max_event_bytes: int, clock: Callable[[], float] = time.time
) -> FeedbackEvent:
    """Validate one event and return it as a :class:`FeedbackEvent` with ``ts`` and ``event_id`` filled in.

    Raises:
        EventError: naming the field that is missing, of the wrong type, unknown or oversized.
        TypeError: when ``event`` is neither a mapping nor a FeedbackEvent.
    """
    if isinstance(event, FeedbackEvent):
        data: Mapping[str, Any] = {
            "user": event.user, "item": event.item, "type": event.type, "ts": event.ts,
            "value": event.value, "rec_id": event.rec_id, "event_id": event.event_id or None,
            "position": event.position,
        }
    elif isinstance(event, Mapping):
        data = event
        unknown = sorted(str(k) for k in data if k not in _FIELDS)
        if unknown:
            raise EventError(f"unknown event fields: {', '.join(unknown)}", field=unknown[0])
    else:
        raise TypeError(f"event must be a dict or FeedbackEvent, not {type(event).__name__}")

    user = _id_field(data, "user", required=True)
    item = _id_field(data, "item", required=True)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise EventError("event field 'type' is missing or not a string", field="type")
    if kind not in EVENT_TYPES:
        raise EventError(f"unknown event type {kind[:32]!r}; expected one of {sorted(EVENT_TYPES)}", field="type")
    value = None if data.get("value") is None else _number(data["value"], "value")
    if kind == "rating":
        low, high = RATING_RANGE
        if value is None or not low <= value <= high:
            raise EventError(f"a rating needs 'value' within [{low:g}, {high:g}], not {value!r}", field="value")
    rec_id = _id_field(data, "rec_id", required=kind == "impression")
    position = None if data.get("position") is None else check_position(data["position"])
    event_id = _id_field(data, "event_id", required=False) or uuid.uuid4().hex
    if user is None or item is None:  # unreachable (required=True raises); narrows the type
        raise EventError("event needs 'user' and 'item'")
    normalized = FeedbackEvent(
        user=user, item=item, type=kind, ts=_timestamp(data.get("ts"), clock()),
        value=value, rec_id=rec_id, event_id=event_id, position=position,
    )
    size = len(orjson.dumps({f: getattr(normalized, f) for f in _FIELDS}))
    if size > max_event_bytes:
        raise EventError(f"event is {size} bytes encoded, over the {max_event_bytes}-byte cap")
    return normalized
