"""Merchandising rules: pin, boost, bury, always-show and never-show, validated before they can serve.

A rule set is plain JSON-compatible data, the same whether it comes with one request or is published through the
hub on a channel::

    {"version": "spring-sale-3", "rules": [
        {"id": "hero", "action": "pin", "item": "B004756YJA", "position": 0},
        {"id": "acme", "action": "boost", "where": {"brand": "acme"}, "factor": 1.5},
        {"id": "promo", "action": "boost", "where": {"category": "nail"}, "add": 0.05},
        {"id": "oos", "action": "bury", "where": {"in_stock": false}},
        {"id": "recall", "action": "never", "items": ["B00BADBAD0"]},
        {"id": "house", "action": "always", "items": ["B00HOUSE01"]}]}

``where`` selects items by catalogue columns, all conditions combined with AND: a scalar is equality (for a
list-valued column such as ``category``: membership), a list is "any of", ``{"min": a, "max": b}`` a numeric
range (either end optional), ``null`` means "value missing". ``item``/``items`` select by id.

The order in which an answer is shaped (each step sees the previous one's output):

1. ``never`` items are removed (the pipeline also hands them to the kernel as exclusions, so ``k`` stays full);
2. ``boost`` rules adjust scores: ``factor`` multiplies (a negative score is divided, so a factor above 1
   always raises), ``add`` adds; several matching rules compose in rule order;
3. candidates are sorted by adjusted score, then every ``bury`` item moves below every un-buried one;
4. ``always`` items missing from the top ``k`` take the last un-buried places;
5. ``pin`` items are placed at their positions (0 is the top), when the item is eligible for this answer.

Conflicts are refused when the rule set is built (never + pin/always on one item, two pins on one position or
one item pinned twice, a bury that also pins or always-shows an item), so no answer depends on rule order for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..bundle import Catalog
from ..errors import RuleError

__all__ = ["MAX_RULES", "Rule", "RuleSet", "Shaped", "apply_rules"]

MAX_RULES: Final = 1000
MAX_PIN_POSITION: Final = 1000
_ACTIONS: Final = frozenset({"pin", "boost", "bury", "never", "always"})
_KEYS: Final = {
    "pin": {"id", "action", "item", "position"},
    "boost": {"id", "action", "where", "item", "items", "factor", "add"},
    "bury": {"id", "action", "where", "item", "items"},
    "never": {"id", "action", "where", "item", "items"},
    "always": {"id", "action", "item", "items"},
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    """One validated rule. ``where`` is canonical: column -> ("eq", v) | ("in", values) | ("range", lo, hi)."""

    id: str
    action: str
    items: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    position: int | None = None
    factor: float = 1.0
    add: float = 0.0


def _fail(where: str, message: str) -> RuleError:
    return RuleError(f"{where}: {message}")


def _number(where: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise _fail(where, f"{name!r} must be a finite number, got {value!r}")
    return float(value)


def _condition(where: str, column: str, value: object) -> tuple[Any, ...]:
    if value is None or isinstance(value, (str, bool, int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(where, f"where[{column!r}] must be finite")
        return ("eq", value)
    if isinstance(value, (list, tuple)):
        if not value or not all(v is None or isinstance(v, (str, bool, int, float)) for v in value):
            raise _fail(where, f"where[{column!r}] as a list must hold one or more scalars")
        return ("in", tuple(value))
    if isinstance(value, Mapping):
        extra = set(value) - {"min", "max"}
        if extra or not value:
            raise _fail(where, f"where[{column!r}] as a range takes 'min' and/or 'max', got {sorted(map(str, value))}")
        lo = _number(where, "min", value["min"]) if value.get("min") is not None else -math.inf
        hi = _number(where, "max", value["max"]) if value.get("max") is not None else math.inf
        if lo > hi:
            raise _fail(where, f"where[{column!r}] has min > max")
        return ("range", lo, hi)
    raise _fail(where, f"where[{column!r}] must be a scalar, a list, a range mapping or null")


def _rule(raw: object, index: int, columns: Sequence[str] | None) -> Rule:
    at = f"rule {index}"
    if not isinstance(raw, Mapping):
        raise _fail(at, "must be a mapping")
    rid = raw.get("id", f"rule-{index}")
    if not isinstance(rid, str) or not rid or len(rid) > 200:
        raise _fail(at, "'id' must be a non-empty string of at most 200 characters")
    at = f"rule {rid!r}"
    action = raw.get("action")
    if action not in _ACTIONS:
        raise _fail(at, f"'action' must be one of {sorted(_ACTIONS)}, got {action!r}")
    unknown = set(map(str, raw)) - _KEYS[action]
    if unknown:
        raise _fail(at, f"unknown key(s) for {action!r}: {sorted(unknown)}")
    items: list[str] = []
    if "item" in raw:
        items.append(raw["item"])
    if "items" in raw:
        if not isinstance(raw["items"], (list, tuple)):
            raise _fail(at, "'items' must be a list of item ids")
        items.extend(raw["items"])
    if not all(isinstance(i, str) and i for i in items):
        raise _fail(at, "item ids must be non-empty strings")
    where_raw = raw.get("where", {})
    if not isinstance(where_raw, Mapping):
        raise _fail(at, "'where' must be a mapping of catalogue column to condition")
    where = tuple(sorted((str(c), _condition(at, str(c), v)) for c, v in where_raw.items()))
    if columns is not None:
        missing = sorted(c for c, _ in where if c not in columns)
        if missing:
            raise _fail(at, f"'where' names column(s) the catalogue lacks: {missing}; known: {sorted(columns)}")
    if not items and not where:
        raise _fail(at, "selects nothing: give 'item', 'items' or 'where'")
    position = None
    if action == "pin":
        if len(items) != 1:
            raise _fail(at, "'pin' takes exactly one 'item'")
        pos = raw.get("position")
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= MAX_PIN_POSITION:
            raise _fail(at, f"'position' must be an int in [0, {MAX_PIN_POSITION}], got {pos!r}")
        position = pos
    factor, add = 1.0, 0.0
    if action == "boost":
        if "factor" not in raw and "add" not in raw:
            raise _fail(at, "'boost' needs 'factor' (multiplicative) and/or 'add' (additive)")
        factor = _number(at, "factor", raw.get("factor", 1.0))
        add = _number(at, "add", raw.get("add", 0.0))
        if factor <= 0:
            raise _fail(at, "'factor' must be > 0 (use 'bury' or 'never' to push items down or out)")
    return Rule(id=rid, action=action, items=tuple(dict.fromkeys(items)), where=where, position=position,
                factor=factor, add=add)


class RuleSet:
    """A validated, immutable set of rules. Build with :meth:`parse`; apply with :func:`apply_rules`."""

    __slots__ = ("_compiled", "_masks", "_rows", "rules", "version")

    def __init__(self, rules: Sequence[Rule], *, version: str = "") -> None:
        self.rules = tuple(rules)
        self.version = version
        self._masks: dict[tuple[int, str], NDArray[np.bool_]] = {}
        self._rows: dict[int, tuple[NDArray[np.bool_], NDArray[np.int64]]] = {}
        self._compiled: tuple[Catalog, _Compiled] | None = None

    @classmethod
    def parse(cls, raw: object, *, columns: Sequence[str] | None = None) -> RuleSet:
        """Validate a rule set (a mapping with ``rules``, or a bare list of rules).

        Args:
            columns: the catalogue's column names; when given, ``where`` may only name these.

        Raises:
            RuleError: the first problem found, naming the rule.
        """
        version = ""
        if isinstance(raw, Mapping):
            extra = set(map(str, raw)) - {"version", "rules"}
            if extra:
                raise RuleError(f"rule set: unknown key(s) {sorted(extra)}")
            version = raw.get("version", "")
            if not isinstance(version, str) or len(version) > 200:
                raise RuleError("rule set: 'version' must be a string of at most 200 characters")
            raw = raw.get("rules", [])
        if not isinstance(raw, (list, tuple)):
            raise RuleError("rule set: 'rules' must be a list")
        if len(raw) > MAX_RULES:
            raise RuleError(f"rule set: {len(raw)} rules, more than the {MAX_RULES} allowed")
        rules = [_rule(r, i, columns) for i, r in enumerate(raw)]
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise RuleError(f"rule set: duplicate rule id(s) {sorted({i for i in ids if ids.count(i) > 1})}")
        _check_conflicts(rules)
        return cls(rules, version=version)

    @classmethod
    def combine(cls, sets: Sequence[RuleSet]) -> RuleSet:
        """One rule set applying ``sets`` in order (the channel's, then a request's); conflicts are refused.

        Raises:
            RuleError: a rule of one set contradicts a rule of another (same checks as within one set).
        """
        rules = [r for s in sets for r in s.rules]
        _check_conflicts(rules)
        return cls(rules, version="+".join(s.version for s in sets if s.version))

    def to_json(self) -> dict[str, Any]:
        """The set in its JSON form (``RuleSet.parse(s.to_json())`` gives an equal set)."""
        out: list[dict[str, Any]] = []
        for r in self.rules:
            raw: dict[str, Any] = {"id": r.id, "action": r.action}
            if r.action == "pin":
                raw["item"], raw["position"] = r.items[0], r.position
            elif r.items:
                raw["items"] = list(r.items)
            if r.where:
                raw["where"] = {column: _condition_json(cond) for column, cond in r.where}
            if r.action == "boost":
                raw["factor"], raw["add"] = r.factor, r.add
            out.append(raw)
        return {"version": self.version, "rules": out}

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={len(self.rules)})"

    def mask(self, rule: Rule, catalog: Catalog) -> NDArray[np.bool_]:
        """Rows of ``catalog`` a rule selects (cached per catalogue object)."""
        key = (id(catalog), rule.id)
        cached = self._masks.get(key)
        if cached is not None and len(cached) == len(catalog):
            return cached
        mask = _select(rule, catalog)
        if len(self._masks) > 4 * max(len(self.rules), 1):  # a catalogue swap: drop the old catalogue's masks
            self._masks.clear()
        self._masks[key] = mask
        return mask

    def never_mask(self, catalog: Catalog) -> NDArray[np.bool_] | None:
        """The catalogue rows no answer may show, or ``None`` without ``never`` rules (cached per catalogue)."""
        key = (id(catalog), "\0never")
        cached = self._masks.get(key)
        if cached is None or len(cached) != len(catalog):
            masks = [self.mask(r, catalog) for r in self.rules if r.action == "never"]
            if not masks:
                return None
            cached = self._masks[key] = np.logical_or.reduce(masks)
        return cached

    def never_rows(self, catalog: Catalog) -> NDArray[np.int64]:
        """Rows every answer must leave out (handed to the kernel as exclusions; cached like the masks, since
        every request with this set asks for them)."""
        mask = self.never_mask(catalog)
        if mask is None:
            return np.zeros(0, dtype=np.int64)
        cached = self._rows.get(id(mask))
        if cached is None or cached[0] is not mask:  # keyed by the cached mask, so a new catalogue recomputes
            self._rows.clear()
            cached = self._rows[id(mask)] = (mask, np.flatnonzero(mask).astype(np.int64))
        return cached[1]

    def compiled(self, catalog: Catalog) -> _Compiled:
        """The set resolved against one catalogue (masks, rows, rule lists by action), built once per catalogue
        object so a request walks no rule list and looks up no item id."""
        held = self._compiled
        if held is not None and held[0] is catalog and held[1].n_items == len(catalog):
            return held[1]
        built = _Compiled(self, catalog)
        self._compiled = (catalog, built)
        return built


def _condition_json(cond: tuple[Any, ...]) -> Any:
    if cond[0] == "range":
        return {name: v for name, v in (("min", cond[1]), ("max", cond[2])) if math.isfinite(v)}
    return cond[1] if cond[0] == "eq" else list(cond[1])


def _check_conflicts(rules: Sequence[Rule]) -> None:
    never_items = {i for r in rules if r.action == "never" for i in r.items}
    buried_items = {i for r in rules if r.action == "bury" for i in r.items}
    positions: dict[int, str] = {}
    pinned: dict[str, str] = {}
    for r in rules:
        if r.action in ("pin", "always"):
            clash = [i for i in r.items if i in never_items]
            if clash:
                raise RuleError(f"rule {r.id!r}: {r.action} of {clash[0]!r}, which a 'never' rule removes")
            clash = [i for i in r.items if i in buried_items]
            if clash:
                raise RuleError(f"rule {r.id!r}: {r.action} of {clash[0]!r}, which a 'bury' rule buries")
        if r.action == "pin" and r.position is not None:
            if r.position in positions:
                raise RuleError(f"rule {r.id!r}: position {r.position} is already pinned by {positions[r.position]!r}")
            if r.items[0] in pinned:
                raise RuleError(f"rule {r.id!r}: item {r.items[0]!r} is already pinned by {pinned[r.items[0]]!r}")
            positions[r.position] = r.id
            pinned[r.items[0]] = r.id


def _matches(values: Sequence[Any], cond: tuple[Any, ...]) -> NDArray[np.bool_]:
    kind = cond[0]
    out = np.zeros(len(values), dtype=np.bool_)
    if kind == "range":
        lo, hi = cond[1], cond[2]
        for i, v in enumerate(values):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi:
                out[i] = True
        return out
    wanted = (cond[1],) if kind == "eq" else cond[1]
    want_missing = None in wanted
    # True == 1 in Python: booleans match booleans only, so {"in_stock": true} never selects a count of 1.
    bools = {w for w in wanted if isinstance(w, bool)}
    plain = {w for w in wanted if w is not None and not isinstance(w, bool)}
    for i, v in enumerate(values):
        if v is None:
            out[i] = want_missing
        elif isinstance(v, tuple):  # list-valued column: membership of any wanted value
            out[i] = any(x in plain for x in v)
        elif isinstance(v, bool):
            out[i] = v in bools
        else:
            out[i] = v in plain
    return out


def _select(rule: Rule, catalog: Catalog) -> NDArray[np.bool_]:
    n = len(catalog)
    mask = np.zeros(n, dtype=np.bool_)
    if rule.items:
        rows = catalog.rows(rule.items)
        mask[rows] = True
    if rule.where:
        cond_mask = np.ones(n, dtype=np.bool_)
        columns = catalog.columns
        for column, cond in rule.where:
            values = columns.get(column)
            if values is None:  # the catalogue lacks the column: only "missing" conditions can match
                cond_mask &= np.full(n, cond[0] != "range" and None in ((cond[1],) if cond[0] == "eq" else cond[1]))
            else:
                cond_mask &= _matches(values, cond)
        mask |= cond_mask
    return mask


def _member(rows: NDArray[np.int64], few: set[int]) -> NDArray[np.bool_]:
    """``rows`` in a handful of pinned or always-shown rows (np.isin sorts; a compare per row does not)."""
    if len(few) == 1:
        one: NDArray[np.bool_] = rows == next(iter(few))
        return one
    if len(few) <= 4:  # a few pins: a compare each, no broadcast matrix
        out = np.zeros(len(rows), dtype=np.bool_)
        for row in few:
            out |= rows == row
        return out
    wide: NDArray[np.bool_] = (rows[:, None] == np.fromiter(few, dtype=np.int64, count=len(few))[None, :]).any(axis=1)
    return wide


class _Compiled:
    """A rule set resolved against one catalogue: what :func:`apply_rules` reads per request."""

    __slots__ = ("always", "boosts", "buried_any", "bury", "n_items", "never", "never_rules", "pins",
                 "special")

    def __init__(self, rules: RuleSet, catalog: Catalog) -> None:
        n = len(catalog)
        self.never = rules.never_mask(catalog)
        self.n_items = n
        self.never_rules = [(r.id, rules.mask(r, catalog)) for r in rules.rules if r.action == "never"]
        self.boosts = [(r.id, rules.mask(r, catalog), r.factor, r.add) for r in rules.rules if r.action == "boost"]
        self.bury = [(r.id, rules.mask(r, catalog)) for r in rules.rules if r.action == "bury"]
        self.buried_any = np.logical_or.reduce([m for _, m in self.bury]) if self.bury else None
        # pins by position, then always-shown rows: (row, rule id, position or -1), each row's first rule only
        pins: list[tuple[int, str, int]] = []
        for r in sorted((r for r in rules.rules if r.action == "pin"), key=lambda r: r.position or 0):
            found = catalog.rows(r.items)[:1].tolist()
            if found:
                pins.append((found[0], r.id, r.position or 0))
        always: list[tuple[int, str, int]] = []
        for r in rules.rules:
            if r.action == "always":
                always.extend((row, r.id, -1) for row in catalog.rows(r.items).tolist())
        self.pins, self.always = pins, always
        self.special = np.asarray([row for row, _, _ in pins + always], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Shaped:
    """An answer after the rules: rows in answer order, their adjusted scores, and the rules that acted on it."""

    rows: NDArray[np.int64]
    scores: NDArray[np.float32]
    touched: tuple[str, ...]


def apply_rules(
    rules: RuleSet,
    catalog: Catalog,
    rows: NDArray[np.int64],
    scores: NDArray[np.floating],
    k: int,
    *,
    allow: NDArray[np.bool_] | None = None,
    blocked: NDArray[np.int64] | None = None,
) -> Shaped:
    """Shape one answer of at most ``k`` items from ranked candidates (``rows`` best first, any length).

    ``pin`` and ``always`` may bring in items that are not among the candidates; they must pass the request's
    filters (``allow``, a catalogue-length mask) and not be ``blocked`` (the request's exclusions, e.g. items
    the user already bought). Pinned items are exempt from burying; so are always-shown ones.
    """
    touched: list[str] = []
    c = rules.compiled(catalog)
    rows = np.asarray(rows, dtype=np.int64)
    adj = np.array(scores, dtype=np.float64)
    if c.never is not None:
        dropped = c.never[rows]
        if dropped.any():  # usually not: long never-lists leave inside the kernel
            touched.extend(rid for rid, mask in c.never_rules if mask[rows].any())
            rows, adj = rows[~dropped], adj[~dropped]
    for rid, mask, factor, add in c.boosts:
        m = mask[rows]
        if not m.any():
            continue
        touched.append(rid)
        if factor != 1.0:  # a negative score is divided, so a factor above 1 always raises
            sel = adj[m]
            adj[m] = np.where(sel >= 0, sel * factor, sel / factor)
        if add:
            adj[m] += add
    # pinned and always-shown items must pass the request's filters and exclusions (one vectorised check)
    ok: list[bool] = []
    if len(c.special):
        passing = np.ones(len(c.special), dtype=np.bool_)
        if allow is not None:
            passing &= allow[c.special]
        if c.never is not None:
            passing &= ~c.never[c.special]
        if blocked is not None and len(blocked):
            # usually a handful of special rows against the request's exclusions: a broadcast compare, no sort
            passing &= ~((c.special[:, None] == blocked[None, :]).any(axis=1)
                         if len(c.special) * len(blocked) <= 65536 else np.isin(c.special, blocked))
        ok = passing.tolist()
    pin_rows: list[tuple[int, int, str]] = []
    pinned: set[int] = set()
    for (row, rid, pos), fine in zip(c.pins, ok, strict=False):
        if fine and pos < k and row not in pinned:
            pin_rows.append((pos, row, rid))
            pinned.add(row)
    always_rule: dict[int, str] = {}
    for (row, rid, _), fine in zip(c.always, ok[len(c.pins):], strict=True):
        if fine and row not in pinned:
            always_rule.setdefault(row, rid)
    special = pinned | set(always_rule)
    buried = np.zeros(len(rows), dtype=np.bool_)
    if c.buried_any is not None and c.buried_any[rows].any():
        exempt = _member(rows, special) if special else None
        for rid, mask in c.bury:
            m = mask[rows]
            if exempt is not None:
                m &= ~exempt
            if m.any():
                touched.append(rid)
                buried |= m
    room = max(k - len(pin_rows), 0)
    order = np.argsort(-adj, kind="stable")
    rows_o, adj_o, buried_o = rows[order], adj[order], buried[order]
    free = ~buried_o if not pinned else ~buried_o & ~_member(rows_o, pinned)
    up, down = np.flatnonzero(free)[: room + len(always_rule)], np.flatnonzero(buried_o)[:room]
    score_of = dict(zip(rows_o[up].tolist(), adj_o[up].tolist(), strict=True))
    score_of.update(zip(rows_o[down].tolist(), adj_o[down].tolist(), strict=True))
    floor = float(adj_o.min()) if len(adj_o) else 0.0
    top = rows_o[up[:room]].tolist()
    missing = [(row, rid) for row, rid in always_rule.items() if row not in top][:room]
    if missing:
        overflow = len(top) + len(missing) - room
        if overflow > 0:  # the always-shown items take the last places of items no rule asked for
            drop = set([row for row in reversed(top) if row not in always_rule][:overflow])
            top = [row for row in top if row not in drop]
        for row, rid in missing:
            top.append(row)
            score_of.setdefault(row, floor)
            touched.append(rid)
    answer = (top + rows_o[down].tolist())[:room]
    for pos, row, rid in pin_rows:
        score_of.setdefault(row, max(score_of.values(), default=0.0))
        answer.insert(min(pos, len(answer)), row)
        touched.append(rid)
    answer = answer[:k]
    return Shaped(
        rows=np.asarray(answer, dtype=np.int64),
        scores=np.asarray([score_of[row] for row in answer], dtype=np.float32),
        touched=tuple(dict.fromkeys(touched)),
    )
