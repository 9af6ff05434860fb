"""Readers for interaction data, and the leave-one-out split.

Two interaction formats are read:

* the one-user-per-line format of the public sequential-recommendation data sets
  (``user item item ...``, space separated, oldest first), and
* an event log, CSV (with a header) or JSONL, with the fields ``user``, ``item``, ``type`` and
  ``timestamp`` (``ts`` is accepted as an alias). This is what the hub exports. Events are ordered per user
  by timestamp (stable, so equal timestamps keep file order); consecutive repeats of one item collapse.
  Non-clicked impressions and explicit negatives become the user's negative items
  (:attr:`InteractionData.negatives`), which training uses as hard negatives.

Item titles and attributes are read by :mod:`.metadata`.

Example:
    >>> data = read_interactions("Beauty.txt")           # doctest: +SKIP
    >>> split = leave_one_out(data.sequences)            # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..config import DEFAULT_EVENT_WEIGHTS
from ..errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "InteractionData",
    "Negatives",
    "Split",
    "leave_one_out",
    "read_events",
    "read_interactions",
    "read_sequences",
]

#: Event types that do not express interest and are dropped from sequences (an ``impression`` is a shown item,
#: not an interaction).
NEGATIVE_EVENT_TYPES = frozenset({"skip", "dislike", "hide", "remove", "return", "impression"})
#: Explicit negatives: besides being dropped, they take the item out of the user's sequence when they are the
#: user's latest signal on it (a dislike after a click undoes the click; a purchase after a dislike stands).
EXPLICIT_NEGATIVE_TYPES = frozenset({"dislike", "hide"})
NEGATIVE_RATING_MAX = 2.0
"""A ``rating`` event whose ``value`` is at or below this is an explicit negative too."""
IMPRESSION = "impression"
"""The event type of a shown item; one the user never engaged with is one of the user's negatives."""


@dataclass(frozen=True)
class Negatives:
    """An event log's negative items per user, and when each became known (see :func:`read_events`).

    Attributes:
        items: per user, the item rows the user was shown and never engaged with (non-clicked impressions)
            or whose latest signal from the user is an explicit negative; never an item of the user's sequence.
        since: aligned with ``items``: how many of the user's sequence items came before the negative's
            first sign (its first impression, or the explicit negative).
        step_since: aligned with the user's sequence: for a step whose item the user was shown (or
            explicitly negated) and engaged with only after another step, the number of steps before that
            first sign; else the sequence's length. Until the engagement such an item was a non-clicked
            impression.
    """

    items: list[NDArray[np.int64]]
    since: list[NDArray[np.int64]]
    step_since: list[NDArray[np.int64]]

    @property
    def n_negatives(self) -> int:
        return int(sum(len(n) for n in self.items))


@dataclass(frozen=True)
class InteractionData:
    """User sequences over item rows.

    Attributes:
        item_ids: the item id of each row, as written in the data file (row order).
        user_ids: one id per sequence.
        sequences: item rows (0-based, int64), oldest first, one array per user.
        weights: per event, how much it says about interest (an event log mixing types, by
            :data:`~edgerec_sdk.config.DEFAULT_EVENT_WEIGHTS`); ``None`` when every event weighs the same
            (sequence files, purchase-only logs), and training is then unweighted.
        negatives: the users' negative items (non-clicked impressions, explicit negatives) and when each
            became known; ``None`` when there is no sign of one (sequence files, logs without impressions or
            explicit negatives), and training is then exactly what it was without them.
    """

    item_ids: list[str]
    user_ids: list[str]
    sequences: list[NDArray[np.int64]]
    weights: list[NDArray[np.float32]] | None = None
    negatives: Negatives | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


@dataclass(frozen=True)
class Split:
    """A leave-one-out split (users with fewer than 3 items have no validation/test target).

    Attributes:
        train: ``seq[:-2]`` per user (the whole sequence for users with fewer than 3 items).
        train_full: ``seq[:-1]`` per user (the validation item included, the test item never).
        valid_users / valid_targets: users evaluated on validation and their target rows.
        test_users / test_targets: users evaluated on test and their target rows.
    """

    train: list[NDArray[np.int64]]
    train_full: list[NDArray[np.int64]]
    valid_users: NDArray[np.int64]
    valid_targets: NDArray[np.int64]
    test_users: NDArray[np.int64]
    test_targets: NDArray[np.int64]
    train_weights: list[NDArray[np.float32]] | None = None
    """Event weights aligned with ``train`` (``None``: unweighted)."""
    train_full_weights: list[NDArray[np.float32]] | None = None
    """Event weights aligned with ``train_full``."""
    train_negatives: list[NDArray[np.int64]] | None = None
    """Per user, the negative item rows the search fit may use (``None``: none)."""
    train_full_negatives: list[NDArray[np.int64]] | None = None
    """Per user, the negative item rows the final fit may use (``None``: none)."""


def leave_one_out(sequences: Sequence[NDArray[np.int64]], *, min_len: int = 3,
                  weights: Sequence[NDArray[np.float32]] | None = None,
                  negatives: Negatives | None = None) -> Split:
    """Split each sequence: last item = test, second-to-last = validation, the rest = training.

    Users shorter than ``min_len`` are not evaluated; their items up to ``seq[:-1]`` still train the model
    in the final fit (and up to ``seq[:-2]`` in the search fit), so no test item is ever seen.

    A part's negatives are the items that, as of the part's last item, had been shown to the user (or
    explicitly negated) before one of the part's items and not engaged with within the part: a negative
    whose first sign came after the part's last item is left out (the items shown beside the held-out item
    and not clicked would tell the model what the held-out item is not), and a held-out item the user had
    been shown before and not yet engaged with is one (the model serving that day would have had it as one).
    """
    train: list[NDArray[np.int64]] = []
    train_full: list[NDArray[np.int64]] = []
    users: list[int] = []
    valid_t: list[int] = []
    test_t: list[int] = []
    empty = np.zeros(0, dtype=np.int64)
    for u, seq in enumerate(sequences):
        if len(seq) >= min_len:
            train.append(seq[:-2])
            train_full.append(seq[:-1])
            users.append(u)
            valid_t.append(int(seq[-2]))
            test_t.append(int(seq[-1]))
        else:
            train.append(seq[:-2] if len(seq) > 2 else empty)
            train_full.append(seq[:-1] if len(seq) > 1 else empty)
    u_arr = np.asarray(users, dtype=np.int64)
    return Split(
        train=train,
        train_full=train_full,
        valid_users=u_arr,
        valid_targets=np.asarray(valid_t, dtype=np.int64),
        test_users=u_arr.copy(),
        test_targets=np.asarray(test_t, dtype=np.int64),
        train_weights=None if weights is None else [w[: len(t)] for w, t in zip(weights, train, strict=True)],
        train_full_weights=None if weights is None else [w[: len(t)] for w, t in zip(weights, train_full,
                                                                                     strict=True)],
        train_negatives=_part_negatives(negatives, sequences, train),
        train_full_negatives=_part_negatives(negatives, sequences, train_full),
    )


def _part_negatives(negatives: Negatives | None, sequences: Sequence[NDArray[np.int64]],
                    parts: Sequence[NDArray[np.int64]]) -> list[NDArray[np.int64]] | None:
    """Each user's negatives as of the last item of its part (``parts[u]`` = ``sequences[u][:k]``);
    ``None`` when no user has one."""
    if negatives is None:
        return None
    out: list[NDArray[np.int64]] = []
    for items, since, step_since, seq, part in zip(negatives.items, negatives.since, negatives.step_since,
                                                   sequences, parts, strict=True):
        k = len(part)
        known = items[since < k]
        held, held_since = seq[k:], step_since[k:]
        later = held[(held_since < k) & ~np.isin(held, part)]
        out.append(np.union1d(known, later) if len(later) else known)
    return out if any(len(n) for n in out) else None


def _row_order(first_seen: Mapping[str, int]) -> list[str]:
    """Numeric ids in numeric order (row r = id r+1 for the public sets), else first appearance."""
    ids = list(first_seen)
    if ids and all(i.isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids, key=first_seen.__getitem__)


def _build(user_ids: list[str], raw: list[list[str]], weights: list[list[float]] | None = None,
           negatives: list[tuple[list[tuple[str, int]], list[int]]] | None = None) -> InteractionData:
    first_seen: dict[str, int] = {}
    for seq in raw:
        for it in seq:
            if it not in first_seen:
                first_seen[it] = len(first_seen)
    item_ids = _row_order(first_seen)
    row = {it: r for r, it in enumerate(item_ids)}
    sequences = [np.fromiter((row[i] for i in seq), dtype=np.int64, count=len(seq)) for seq in raw]
    if not item_ids:
        raise ConfigError("the interaction data holds no items")
    flat = {w for ws in weights or () for w in ws}
    weighted = None if len(flat) <= 1 else [np.asarray(ws, dtype=np.float32) for ws in weights or ()]
    return InteractionData(item_ids=item_ids, user_ids=user_ids, sequences=sequences, weights=weighted,
                           negatives=_negative_rows(negatives, row, [len(s) for s in sequences]))


def _negative_rows(negatives: list[tuple[list[tuple[str, int]], list[int]]] | None, row: Mapping[str, int],
                   lengths: list[int]) -> Negatives | None:
    """Per user ``(item, since)`` pairs and step ``since`` values as :class:`Negatives` (sorted by row);
    ``None`` when there is no sign of a negative.

    An item no user ever engaged with has no row and is left out: its vector would be trained by nothing but
    negatives (only ever pushed down), and it would join the catalog of a bundle that cannot recommend it.
    """
    if not negatives:
        return None
    items: list[NDArray[np.int64]] = []
    since: list[NDArray[np.int64]] = []
    unknown = 0
    for pairs, _ in negatives:
        known = sorted((row[item], s) for item, s in pairs if item in row)
        unknown += len(pairs) - len(known)
        items.append(np.fromiter((r for r, _ in known), dtype=np.int64, count=len(known)))
        since.append(np.fromiter((s for _, s in known), dtype=np.int64, count=len(known)))
    out = Negatives(items=items, since=since, step_since=[np.asarray(steps, dtype=np.int64) for _, steps in negatives])
    later = sum(int((st < n).sum()) for st, n in zip(out.step_since, lengths, strict=True))
    if not out.n_negatives and not later:
        return None
    logger.info("negatives: %d items shown and never engaged with or explicitly negated, for %d users; %d shown "
                "before the user engaged with them; %d on items no user engaged with left out",
                out.n_negatives, sum(1 for r in items if len(r)), later, unknown)
    return out


def read_sequences(path: str | os.PathLike[str]) -> InteractionData:
    """Read the one-user-per-line format ``user item item ...`` (oldest first).

    A user id that appears on more than one line continues that user's sequence in file order, so the
    ``user item`` pair-per-line layout (one interaction per line, grouped by user and sorted by time, as some
    public releases ship) reads as the same sequences as its one-line-per-user form.
    """
    index: dict[str, int] = {}
    user_ids: list[str] = []
    raw: list[list[str]] = []
    continued = 0
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                logger.debug("line %d has a user and no items; skipped", line_no)
                continue
            at = index.get(parts[0])
            if at is None:
                index[parts[0]] = len(user_ids)
                user_ids.append(parts[0])
                raw.append(parts[1:])
            else:
                raw[at].extend(parts[1:])
                continued += 1
    if continued:
        logger.info("%s: %d lines continued an earlier line's user (read as one sequence per user)", path, continued)
    return _build(user_ids, raw)


def _parse_ts(value: object) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ConfigError(f"unreadable timestamp {text[:40]!r}") from exc


def _iter_event_rows(path: Path) -> Iterator[Mapping[str, object]]:
    with open(path, encoding="utf-8", newline="") as fh:
        head = fh.read(1)
        fh.seek(0)
        if head in ("{", "["):
            if head == "[":
                yield from json.load(fh)
                return
            for line in fh:
                line = line.strip()
                if line:
                    yield json.loads(line)
            return
        sample = fh.readline()
        fh.seek(0)
        delimiter = "\t" if "\t" in sample else ","
        reader = csv.DictReader(fh, delimiter=delimiter)
        if reader.fieldnames is None or not {"user", "item"} <= {f.strip() for f in reader.fieldnames}:
            raise ConfigError(f"{path.name}: an event log needs a header with at least 'user' and 'item'")
        for rec in reader:
            yield {k.strip(): v for k, v in rec.items() if k is not None}


def read_events(
    path: str | os.PathLike[str], *, drop_types: Iterable[str] = NEGATIVE_EVENT_TYPES
) -> InteractionData:
    """Read a CSV or JSONL event log (``user,item,type,timestamp`` and optionally ``value``; the columns
    ``edgerec hub export-events`` adds are accepted) into per-user sequences.

    Types in ``drop_types`` are left out; explicit negatives (``dislike``, ``hide``, a rating of 2 or less)
    also remove the item from the user's sequence when they are the latest signal on it. The user's
    negatives (:attr:`InteractionData.negatives`) are the items shown to the user (``impression``) that the
    user never engaged with (no event of a kept type: an impression then a click is no negative), and the
    items whose latest signal from the user is an explicit negative.
    """
    drop = {t.lower() for t in drop_types}
    per_user: dict[str, list[tuple[float, int, str]]] = {}
    explicit: dict[str, list[tuple[float, int, str]]] = {}
    shown: dict[str, dict[str, tuple[float, int]]] = {}  # user -> item -> its first impression
    weight_of: dict[int, float] = {}
    n = 0
    for n, rec in enumerate(_iter_event_rows(Path(path))):
        user, item = rec.get("user"), rec.get("item")
        if user in (None, "") or item in (None, ""):
            raise ConfigError(f"{Path(path).name}: event {n + 1} lacks 'user' or 'item'")
        etype = str(rec.get("type") or "view").lower()
        if _is_explicit_negative(etype, rec.get("value")):
            explicit.setdefault(str(user), []).append((_parse_ts(rec.get("timestamp", rec.get("ts"))), n, str(item)))
            continue
        if etype in drop:
            if etype == IMPRESSION:
                key = (_parse_ts(rec.get("timestamp", rec.get("ts"))), n)
                seen = shown.setdefault(str(user), {})
                seen[str(item)] = min(seen.get(str(item), key), key)
            continue
        ts = _parse_ts(rec.get("timestamp", rec.get("ts")))
        per_user.setdefault(str(user), []).append((ts, n, str(item)))
        weight_of[n] = float(DEFAULT_EVENT_WEIGHTS.get(etype, 1.0)) or 1.0  # an unknown type counts as a click
    user_ids: list[str] = []
    raw: list[list[str]] = []
    weights: list[list[float]] = []
    negatives: list[tuple[list[tuple[str, int]], list[int]]] = []
    for user, events in per_user.items():
        events.sort()
        bad = explicit.get(user, [])
        kept = _without_negated(events, bad) if bad else events
        seq: list[str] = []
        ws: list[float] = []
        starts: list[tuple[float, int]] = []  # the first event of each step
        for ts, n_ev, item in kept:
            if not seq or seq[-1] != item:
                seq.append(item)
                ws.append(weight_of[n_ev])
                starts.append((ts, n_ev))
            else:  # a repeat collapses into one step that keeps the heavier signal (a view, then the purchase)
                ws[-1] = max(ws[-1], weight_of[n_ev])
        user_ids.append(user)
        raw.append(seq)
        weights.append(ws)
        negatives.append(_user_negatives(events, bad, shown.get(user, {}), seq, starts))
    logger.info("read %d events for %d users from %s", n + 1, len(user_ids), Path(path).name)
    return _build(user_ids, raw, weights, negatives)


def _user_negatives(events: list[tuple[float, int, str]], bad: list[tuple[float, int, str]],
                    shown: Mapping[str, tuple[float, int]], seq: list[str], starts: list[tuple[float, int]]
                    ) -> tuple[list[tuple[str, int]], list[int]]:
    """One user's ``(item, since)`` negatives and the step ``since`` values of :class:`Negatives`.

    The negatives are the items shown or explicitly negated that did not stay in the sequence; ``since``
    counts the sequence steps before the first sign: for an item the user never engaged with, its first
    impression or explicit negative; for one engaged with and then negated, the first explicit negative
    after the last positive event. A step's value is the steps before its item's first impression or
    explicit negative when another step came between that sign and the item's first step, else ``len(seq)``
    (an item clicked right where it was shown was never a non-clicked impression as of any cut).
    """
    if not shown and not bad:
        return [], [len(seq)] * len(seq)
    kept = set(seq)
    step_since = [len(seq)] * len(seq)
    first_step: dict[str, int] = {}
    for i, item in enumerate(seq):
        first_step.setdefault(item, i)
    sign: dict[str, tuple[float, int]] = {i: k for i, k in shown.items() if i in kept}
    for ts, n, item in bad:
        if item in kept:
            sign[item] = min(sign.get(item, (ts, n)), (ts, n))
    for i, item in enumerate(seq):
        if item in sign:
            before = bisect.bisect_left(starts, sign[item])
            if before < first_step[item]:  # shown, then something else, then engaged with
                step_since[i] = before
    last_pos: dict[str, tuple[float, int]] = {}
    for ts, n, item in events:
        last_pos[item] = max(last_pos.get(item, (ts, n)), (ts, n))
    first: dict[str, tuple[float, int]] = {i: k for i, k in shown.items() if i not in kept and i not in last_pos}
    for ts, n, item in bad:
        if item in kept or (item in last_pos and (ts, n) < last_pos[item]):
            continue
        first[item] = min(first.get(item, (ts, n)), (ts, n))
    return [(item, bisect.bisect_left(starts, key)) for item, key in first.items()], step_since


def _is_explicit_negative(etype: str, value: object) -> bool:
    if etype in EXPLICIT_NEGATIVE_TYPES:
        return True
    if etype != "rating" or value in (None, ""):
        return False
    try:
        return float(str(value)) <= NEGATIVE_RATING_MAX
    except ValueError:
        return False


def _without_negated(events: list[tuple[float, int, str]], bad: list[tuple[float, int, str]]
                     ) -> list[tuple[float, int, str]]:
    """The positive events of items whose latest signal is not a negative one."""
    latest: dict[str, tuple[tuple[float, int], bool]] = {}
    for ts, n, item in events:
        latest[item] = max(latest.get(item, ((ts, n), True)), ((ts, n), True))
    for ts, n, item in bad:
        if item in latest and (ts, n) > latest[item][0]:
            latest[item] = ((ts, n), False)
    return [e for e in events if latest[e[2]][1]]


def read_interactions(path: str | os.PathLike[str]) -> InteractionData:
    """Read either format, chosen by the file's content (a header or JSON means an event log)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data file not found: {p}")
    with open(p, encoding="utf-8") as fh:
        first = fh.readline().strip()
    if first.startswith(("{", "[")) or p.suffix.lower() in (".csv", ".jsonl", ".json"):
        return read_events(p)
    tokens = first.replace(",", " ").split()
    if tokens and tokens[0].lower() in ("user", "user_id"):
        return read_events(p)
    return read_sequences(p)
