"""The one onnxruntime session of a bundle: the user-interest encoder.

Its onnxruntime errors become :class:`ModelLoadError` here (those of the top-K graph in ``index/onnx_topk.py``,
see the list in ``errors.py``). The session is
created lazily and per process id: an ``InferenceSession`` inherited across ``os.fork`` can hang in its
thread pool, so a forked child builds its own and never deallocates the inherited one (see ``onnxrt``).
onnxruntime itself is imported only when a session is built (fault D21).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelLoadError
from .onnxrt import PerProcess, inference_session, onnxruntime

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..bundle import Bundle

__all__ = [
    "SMOKE_BATCHES",
    "InterestModel",
    "last_item_history",
    "session_options",
    "table_mismatch",
    "warmup_history",
]

logger = logging.getLogger(__name__)


SMOKE_BATCHES = (1, 2, 3, 16, 64)
"""Batch sizes the smoke child runs: the serving process runs 1 (``recommend``, the warm-up) and any size
(``recommend_many``); a model that misbehaves on one shape only must meet it in the child first."""


def warmup_history(n_items: int) -> NDArray[np.int64]:
    """The one history the in-process warm-up runs; the smoke child runs it too (same shape, same values)."""
    return np.arange(min(3, n_items), dtype=np.int64)


def last_item_history(n_items: int) -> NDArray[np.int64]:
    """A history of the catalogue's last item: it fails when the model's item table is smaller than the
    catalogue (every user with such an item would otherwise get ``model_error``)."""
    return np.array([n_items - 1], dtype=np.int64)


def table_mismatch(n_items: int, exc: BaseException) -> str:
    return (f"interest.onnx fails on the catalogue's last item (row {n_items - 1} of {n_items}): the model's item "
            f"table does not cover the catalogue; rebuild the bundle with the model and vectors of one run ({exc})")


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Session options for a web worker: explicit thread counts, no spinning between calls.

    A spinning pool keeps a core busy after each call and slows the index scan that follows it.
    """
    rt = onnxruntime()
    opts = rt.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class InterestModel:
    """Turns padded item-row histories into interest vectors.

    Args:
        model_bytes: the verified ONNX bytes (never a path: see bundle/verify.py).
        history_input: the model's history input name.
        interest_output: the model's output name.
        max_seq_len: the history length the model expects.
        dim: the interest vector size.
        query_input: the optional query-token input name.
        query_max_len: its length.
        text_output: the optional text-tower output name (the text vector of the ``query`` tokens).
        intra_op_threads: onnxruntime intra-op threads.
        providers: execution providers, CPU by default.
    """

    def __init__(
        self,
        model_bytes: bytes,
        *,
        history_input: str,
        interest_output: str,
        max_seq_len: int,
        dim: int,
        query_input: str | None = None,
        query_max_len: int = 0,
        text_output: str | None = None,
        intra_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self._bytes = model_bytes
        self.history_input = history_input
        self.interest_output = interest_output
        self.max_seq_len = max_seq_len
        self.dim = dim
        self.query_input = query_input
        self.query_max_len = query_max_len
        self.text_output = text_output if query_input is not None else None
        self._threads = intra_op_threads
        self._providers = tuple(providers)
        self._session: PerProcess[ort.InferenceSession] = PerProcess(self._create)

    @classmethod
    def for_bundle(
        cls, bundle: Bundle, *, intra_op_threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> InterestModel:
        """The interest model of ``bundle``, wired to the input and output names its manifest declares."""
        m = bundle.manifest
        return cls(
            bundle.model_bytes,
            history_input=m.input_names["history"],
            interest_output=m.output_names["interest"],
            max_seq_len=m.max_seq_len,
            dim=m.dim,
            query_input=m.input_names.get("query"),
            query_max_len=m.query_max_len,
            text_output=m.output_names.get("text"),
            intra_op_threads=intra_op_threads,
            providers=providers,
        )

    def load(self) -> None:
        """Create the session now and check its inputs and outputs against the manifest."""
        self._get_session()

    def _get_session(self) -> ort.InferenceSession:
        return self._session.get()

    def _create(self) -> ort.InferenceSession:
        try:
            session: ort.InferenceSession = inference_session(
                self._bytes, session_options(self._threads), self._providers
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeError types
            raise ModelLoadError(f"interest.onnx: onnxruntime refused the model: {exc}") from exc
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if self.history_input not in inputs:
            raise ModelLoadError(f"interest.onnx: no input named {self.history_input!r} (has {sorted(inputs)})")
        if self.interest_output not in outputs:
            raise ModelLoadError(f"interest.onnx: no output named {self.interest_output!r} (has {sorted(outputs)})")
        if self.query_input is not None and self.query_input not in inputs:
            raise ModelLoadError(f"interest.onnx: no input named {self.query_input!r}")
        if self.text_output is not None and self.text_output not in outputs:
            raise ModelLoadError(f"interest.onnx: no output named {self.text_output!r}")
        if inputs[self.history_input].type != "tensor(int64)":
            raise ModelLoadError(f"interest.onnx: input {self.history_input!r} must be int64")
        return session

    def embed(
        self, history: NDArray[np.int64], query: NDArray[np.int64] | None = None, *, run_options: Any = None
    ) -> NDArray[np.float32]:
        """Interest vectors for a batch of left-padded histories (``(b, max_seq_len)`` int64 tokens)."""
        return self._run([self.interest_output], history, query, run_options)[0]

    def embed_text(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Text-tower vectors of token rows ``(n, query_max_len)`` (a query, or items added on the edge)."""
        if self.text_output is None:
            raise ModelLoadError("interest.onnx: this model has no text output")
        history = np.zeros((tokens.shape[0], self.max_seq_len), dtype=np.int64)
        return self._run([self.text_output], history, tokens)[0]

    def _run(
        self, names: list[str], history: NDArray[np.int64], query: NDArray[np.int64] | None,
        run_options: Any = None,
    ) -> list[NDArray[np.float32]]:
        feeds: dict[str, Any] = {self.history_input: np.ascontiguousarray(history, dtype=np.int64)}
        if self.query_input is not None:
            if query is None:
                query = np.zeros((history.shape[0], self.query_max_len), dtype=np.int64)
            feeds[self.query_input] = np.ascontiguousarray(query, dtype=np.int64)
        session = self._get_session()
        try:
            outs = session.run(names, feeds, run_options)
        except Exception as exc:
            raise ModelLoadError(f"interest.onnx: inference failed: {exc}") from exc
        results = [np.asarray(out, dtype=np.float32) for out in outs]
        for result in results:
            if result.ndim != 2 or result.shape != (history.shape[0], self.dim):
                raise ModelLoadError(
                    f"interest.onnx: output shape {result.shape} does not match (batch, dim={self.dim})"
                )
        return results

    def embed_bounded(
        self, histories: Sequence[NDArray[np.int64]], *, timeout_s: float
    ) -> list[NDArray[np.float32]] | None:
        """Load, then :meth:`embed` each padded batch, on a helper thread; ``None`` when that passes ``timeout_s``.

        The run is then cancelled through onnxruntime's terminate flag (checked between kernels, inside
        ``Loop`` bodies too), so an untrusted model cannot wedge the caller (the updater's swap).
        """
        opts = onnxruntime().RunOptions()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                self.load()
                box["out"] = [self.embed(h, run_options=opts) for h in histories]
            except BaseException as exc:  # handed to the caller below
                box["exc"] = exc

        worker = threading.Thread(target=run, name="edgerec-warmup", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            opts.terminate = True
            worker.join(5.0)
            return None
        if "exc" in box:
            raise box["exc"]
        out: list[NDArray[np.float32]] = box["out"]
        return out

    def pad(self, rows_per_user: Sequence[NDArray[np.int64]]) -> NDArray[np.int64]:
        """Left-pad item rows (oldest first) into model tokens ``row + 1``, newest in the last column."""
        out = np.zeros((len(rows_per_user), self.max_seq_len), dtype=np.int64)
        for i, rows in enumerate(rows_per_user):
            tail = rows[-self.max_seq_len :]
            if len(tail):
                out[i, self.max_seq_len - len(tail) :] = tail + 1
        return out

    def postfork(self) -> None:
        """Forget the parent's session (never deallocated here: see ``onnxrt``) so the next call builds one."""
        self._session.reset()
