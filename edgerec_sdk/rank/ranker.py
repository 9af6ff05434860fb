"""The CTR ranking stage: the bundle's small ONNX ranker rescoring one user's retrieval candidates.

The ranker (written by ``edgerec ranker train``) is a calibrated logistic regression over
:data:`~edgerec_sdk.rank.features.FEATURES`: standardisation, int8 weights and a sigmoid in one ONNX graph, so
its output is a click probability. Candidates are reordered by it; each keeps the probability as its score.
Its onnxruntime errors become :class:`~edgerec_sdk.errors.ModelLoadError` here; the session is built lazily and
per process id, like the interest model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from .._impl.model import session_options
from .._impl.onnxrt import PerProcess, inference_session
from ..bundle import Bundle
from ..errors import ModelLoadError
from .features import FEATURES, RankFeatures
from .pipeline import Candidates, RankStage

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["Ranker"]


class Ranker:
    """The ranker of one bundle (``bundle.ranker_bytes`` must be set).

    Raises:
        ModelLoadError: the manifest's feature list is not one this SDK computes.
    """

    def __init__(self, bundle: Bundle, *, intra_op_threads: int = 1) -> None:
        info = bundle.manifest.ranker
        if info is None or bundle.ranker_bytes is None:
            raise ModelLoadError("the bundle has no ranker", model_version=bundle.model_version)
        unknown = [f for f in info.features if f not in FEATURES]
        if unknown:
            raise ModelLoadError(f"{info.file}: features {unknown} are unknown to this SDK (it computes "
                                 f"{list(FEATURES)})", model_version=bundle.model_version)
        self._columns = np.asarray([FEATURES.index(f) for f in info.features], dtype=np.int64)
        self.features = info.features
        self.tables = RankFeatures(bundle)
        self._bytes = bundle.ranker_bytes
        self._input, self._output = info.input, info.output
        self._threads = intra_op_threads
        self._session: PerProcess[ort.InferenceSession] = PerProcess(self._create)
        self._means = np.asarray(info.means or [0.0] * len(info.features), dtype=np.float32)
        self.version = bundle.model_version

    def _create(self) -> ort.InferenceSession:
        try:
            session: ort.InferenceSession = inference_session(self._bytes, session_options(self._threads),
                                                              ("CPUExecutionProvider",))
        except Exception as exc:  # onnxruntime's own error types
            raise ModelLoadError(f"ranker: onnxruntime refused the model: {exc}", model_version=self.version) from exc
        return session

    def load(self) -> None:
        """Build the session now and score one row, so a broken ranker fails at swap time, not per request."""
        probs = self.probabilities(np.zeros((1, len(FEATURES)), dtype=np.float32))
        if probs.shape != (1,) or not np.all((probs >= 0) & (probs <= 1)):
            raise ModelLoadError("ranker: the smoke row did not give one probability", model_version=self.version)

    def probabilities(self, matrix: NDArray[np.float32]) -> NDArray[np.float32]:
        """Click probability of each row of a full :data:`FEATURES` matrix."""
        x = np.ascontiguousarray(matrix[:, self._columns], dtype=np.float32)
        try:
            out = self._session.get().run([self._output], {self._input: x})[0]
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"ranker: inference failed: {exc}", model_version=self.version) from exc
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def contributions(self, matrix: NDArray[np.float32]) -> NDArray[np.float32]:
        """Each feature's push on each row's logit: the change when that feature alone moves to its training
        mean (from the manifest), so it holds for any model the bundle carries, not only a linear one."""
        base = self.probabilities(matrix)
        logit = np.log(np.clip(base, 1e-7, 1 - 1e-7) / np.clip(1 - base, 1e-7, 1))
        out = np.zeros((len(matrix), len(self.features)), dtype=np.float32)
        for j, col in enumerate(self._columns):
            moved = matrix.copy()
            moved[:, col] = self._means[j]
            p = np.clip(self.probabilities(moved), 1e-7, 1 - 1e-7)
            out[:, j] = logit - np.log(p / (1 - p))
        return out

    def stage(self, history: NDArray[np.int64], *, now: float, explain: bool = False) -> RankStage:
        """The rank stage for one user: rescore and reorder that user's candidates."""

        def rank(candidates: Candidates) -> Candidates:
            if len(candidates.rows) == 0:
                return candidates
            top = float(np.max(candidates.scores))
            matrix = self.tables.matrix(history, candidates.rows, candidates.scores, top_score=top, now=now)
            probs = self.probabilities(matrix)
            order = np.argsort(-probs, kind="stable")
            features = dict(candidates.features)
            if explain:
                push = self.contributions(matrix[order])
                for row, p in zip(candidates.rows[order].tolist(), push, strict=True):
                    best = np.argsort(-np.abs(p))[:2]
                    features[row] = tuple(f"{'+' if p[j] > 0 else '-'}{self.features[j]}" for j in best
                                          if abs(p[j]) > 1e-3)
            return Candidates(candidates.rows[order], probs[order], candidates.touched, features)

        return rank
