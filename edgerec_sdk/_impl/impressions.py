"""What the recommender showed: recent answers (for ``impression(rec_id)``) and compact impression rows."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..config import FeedbackConfig
from ..errors import EventError
from ..rank.rotation import ImpressionMemory, rotate_rows
from ..types import FeedbackEvent, Recommendations
from .events import check_position
from .weights import event_weight

__all__ = ["AnswerLog"]

Answer = tuple[str, Recommendations]
"""The user and the answer: all an impression row needs."""


class _Sink(Protocol):
    def put_later(self, event: Mapping[str, Any]) -> None: ...


class AnswerLog:
    """Recent answers of this process and the per-user show counts that rotation reads.

    Args:
        config: the feedback settings (``remembered_answers``, ``impression_max_items``, rotation caps).
        clock: wall clock for the rows' ``ts``.
    """

    def __init__(self, config: FeedbackConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.shown = ImpressionMemory(max_users=config.rotation_max_users, free_shows=config.rotation_free_shows)
        self._clock = clock
        self._answers: dict[str, Answer] = {}  # insertion order is age: the oldest is evicted first
        self._lock = threading.Lock()

    def remember(self, answers: Sequence[Answer]) -> None:
        cap = self.config.remembered_answers
        with self._lock:
            for answer in answers:
                self._answers[answer[1].rec_id] = answer
            while len(self._answers) > cap:
                del self._answers[next(iter(self._answers))]

    def answered(self, users: Sequence[object], results: Sequence[Recommendations], sink: _Sink,
                 log: bool | None) -> int:
        """Remember a request's answers; log them as shown when ``log`` (``None``: the config) says so.
        Returns the rows logged."""
        answers = [(str(user), result) for user, result in zip(users, results, strict=True)]
        self.remember(answers)
        if not (self.config.log_impressions if log is None else log):
            return 0
        shown = [a for a in answers if a[1].items]
        for answer in shown:
            self.log(sink, answer, None, fresh_id=False)
        return len(shown)

    def over_free_shows(self, user: str) -> Mapping[str, int]:
        """The user's items shown more than ``rotation_free_shows`` times without a click (none: empty)."""
        if self.config.rotation_step <= 0:
            return {}
        return self.shown.over_free_shows(user)

    def rotation_of_rows(self, rows: NDArray[np.int64], counts: Mapping[str, int],
                         row_of: Callable[[str], int | None]) -> NDArray[np.int64]:
        """The order of best-first catalogue ``rows`` after impression decay (``row_of`` maps an item id to its
        row, ``None`` if unknown; see :func:`~edgerec_sdk.rank.rotation.rotate`)."""
        return rotate_rows(rows, counts, row_of, free_shows=self.config.rotation_free_shows,
                           step=self.config.rotation_step)

    def find(self, rec_id: object, positions: Sequence[int] | None) -> tuple[Answer, list[int] | None]:
        """The remembered answer and the checked slots, or ``EventError`` (nothing logged)."""
        if not isinstance(rec_id, str) or not rec_id:
            raise EventError("impression needs the rec_id of an answer", field="rec_id")
        with self._lock:
            answer = self._answers.get(rec_id)
        if answer is None:
            raise EventError(f"rec_id {rec_id[:40]!r} is not a recent answer of this process", field="rec_id")
        n = len(answer[1].items)
        slots = None if positions is None else sorted({check_position(p) for p in positions})
        if n == 0 or (slots is not None and (not slots or slots[-1] >= n)):
            raise EventError(f"positions must be slots of the answer's {n} items", field="position")
        return answer, slots

    def log(self, sink: _Sink, answer: Answer, slots: list[int] | None, *, fresh_id: bool) -> None:
        """Count the shows and queue one compact row: the items shown, their slots, the model version."""
        user, result = answer
        items = result.items
        if slots is None:
            slots = list(range(min(len(items), self.config.impression_max_items)))
        shown = [items[p].item_id for p in slots]
        if self.config.rotation_step > 0:  # the counts only feed rotation
            self.shown.shown(user, shown)
        # recommend()'s own row reuses the rec_id, so one answer logged twice is one row at the hub
        sink.put_later({
            "user": user, "item": shown[0], "type": "impression", "ts": self._clock(), "rec_id": result.rec_id,
            "event_id": uuid.uuid4().hex if fresh_id else result.rec_id, "model_version": result.model_version,
            "items": shown, "positions": slots,
        })

    def observe(self, event: FeedbackEvent) -> bool:
        """Count an impression event for rotation, or start an item's count over when the user acts on it;
        return whether the event belongs in the user's history (every type but ``impression``)."""
        if event.type == "impression":
            self.shown.shown(event.user, (event.item,))
            return False
        if event_weight(event.type, event.value, self.config.weights,
                        negative_rating_max=self.config.negative_rating_max) != 0.0:
            self.shown.acted(event.user, event.item)
        return True

    def forget(self, user: str) -> None:
        self.shown.forget(user)

    def postfork(self) -> None:
        self._lock = threading.Lock()
        self.shown.postfork()
