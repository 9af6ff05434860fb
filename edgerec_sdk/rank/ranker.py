"""The CTR ranking stage: the bundle's small ONNX ranker rescoring one user's retrieval candidates.

The ranker (written by ``edgerec ranker train``) is a calibrated logistic regression over
:data:`~edgerec_sdk.rank.features.FEATURES`: standardisation, int8 weights and a sigmoid in one ONNX graph, so
its output is a click probability. Candidates are reordered by it; each keeps the probability as its score.

When the model is exactly that (its logit affine in the features, which :meth:`Ranker.load` checks against
onnxruntime on random rows), a request evaluates it as one dot product in numpy: an onnxruntime run costs
~50 us in place for 100 rows, the dot product a tenth of that. Any other model keeps running in onnxruntime.
Its onnxruntime errors become :class:`~edgerec_sdk.errors.ModelLoadError` here; the session is built lazily and
per process id, like the interest model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from .._impl.model import session_options
from .._impl.onnxrt import PerProcess, inference_session, onnxruntime
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
        self._affine: tuple[NDArray[np.float32], np.float32] | None = None  # set by load() when it holds

    def _create(self) -> ort.InferenceSession:
        options = session_options(self._threads)
        # Basic graph optimisations only: the extended ones fuse DequantizeLinear + MatMul into a matmul that
        # quantizes the features per call, which moved probabilities by up to 0.007, and by what else was in the
        # batch (measured on a fitted ranker; tests/rank/test_ranker.py). A ranker is too small to gain from them.
        options.graph_optimization_level = onnxruntime().GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            session: ort.InferenceSession = inference_session(self._bytes, options, ("CPUExecutionProvider",))
        except Exception as exc:  # onnxruntime's own error types
            raise ModelLoadError(f"ranker: onnxruntime refused the model: {exc}", model_version=self.version) from exc
        return session

    def load(self) -> None:
        """Build the session now and score one row, so a broken ranker fails at swap time, not per request;
        then probe whether the model is a logistic regression that numpy may evaluate (module docstring)."""
        probs = self.probabilities(np.zeros((1, len(FEATURES)), dtype=np.float32))
        if probs.shape != (1,) or not np.all((probs >= 0) & (probs <= 1)):
            raise ModelLoadError("ranker: the smoke row did not give one probability", model_version=self.version)
        self._affine = self._probe_affine()

    @property
    def evaluates_in_numpy(self) -> bool:
        """Whether requests skip onnxruntime (the model proved affine in its logit at load)."""
        return self._affine is not None

    def _run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        try:
            out = self._session.get().run([self._output], {self._input: x})[0]
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"ranker: inference failed: {exc}", model_version=self.version) from exc
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def _probe_affine(self) -> tuple[NDArray[np.float32], np.float32] | None:
        """``(w, b)`` with ``sigmoid(x @ w + b)`` equal to the model's output (within 1e-5) on random rows around
        the training means that the fit never saw, or ``None``; kept as ``(w / 2, b / 2)`` (for the tanh form of
        the sigmoid), ``w`` spread over all :data:`FEATURES`. Rows whose probability is within 1e-4 of 0 or 1
        tell little about the logit in float32 and are left out of the fit (not of the check)."""
        n = len(self._columns)
        rng = np.random.default_rng(0)
        x = (self._means + rng.normal(scale=1.0, size=(256, n))).astype(np.float32)
        p = self._run(x).astype(np.float64)
        fit, check = slice(0, 128), slice(128, 256)
        usable = (p[fit] > 1e-4) & (p[fit] < 1 - 1e-4)
        if int(usable.sum()) < 2 * (n + 1):
            return None
        design = np.hstack([x[fit][usable].astype(np.float64), np.ones((int(usable.sum()), 1))])
        target = np.log(p[fit][usable] / (1.0 - p[fit][usable]))
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        if not np.all(np.isfinite(coef)):
            return None
        half_w, half_b = (0.5 * coef[:n]).astype(np.float32), np.float32(0.5 * coef[n])
        if np.max(np.abs(_logistic(x[check], half_w, half_b) - p[check])) > 1e-5:  # the serving formula itself
            return None
        spread = np.zeros(len(FEATURES), dtype=np.float32)
        spread[self._columns] = half_w
        return spread, half_b

    def probabilities(self, matrix: NDArray[np.float32]) -> NDArray[np.float32]:
        """Click probability of each row of a full :data:`FEATURES` matrix."""
        if self._affine is not None:  # halved weights spread over all FEATURES columns (0 for unused): no gather
            return _logistic(np.asarray(matrix, dtype=np.float32), *self._affine)
        return self._run(np.ascontiguousarray(matrix[:, self._columns], dtype=np.float32))

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


def _logistic(x: NDArray[np.float32], half_w: NDArray[np.float32], half_b: np.float32) -> NDArray[np.float32]:
    """``sigmoid(x @ w + b)`` from halved weights as ``(1 + tanh(x @ w/2 + b/2)) / 2``: no overflow to guard
    against, three in-place calls after the product."""
    out: NDArray[np.float32] = x @ half_w
    out += half_b
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out
