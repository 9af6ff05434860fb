"""Pick a top-K backend for an item matrix.

The ``auto`` rule, measured on the 2-core dev box (AVX-512 VNNI, one thread, single query, best of 7, shared
machine so treat as +-20 %), with ``benchmarks/bench_kernels.py``:

=============  ====================  =====================  =========================
matrix         numpy best/median     onnx int8 best/median  onnx float32 Gemm (raw)
=============  ====================  =====================  =========================
12k x 64 int8  0.24 / 0.30 ms        0.20 / 0.23 ms         0.20 ms
100k x 64      3.1 / 4.1 ms          1.9 / 2.0 ms           n/a
1M x 64 int8   25 / 29 ms            13.0 / 13.4 ms         25 ms
=============  ====================  =====================  =========================

(batch 16 at 1M: numpy 103 ms, onnx 77 ms; current numbers for every backend, the IVF index and peers are in
``docs/benchmarks.md``.) At 12k the kernels alone are within noise of each other, but end to end the onnx
graph wins where it matters for a web worker: its thread count is explicit (one), while numpy's gemv runs on
BLAS's own pool. On the demo bundle (12k, quiet machine, no ``OPENBLAS_NUM_THREADS``) ``recommend()`` measured
p50 0.86 / p99 1.33-1.57 ms with onnx against p50 0.73-1.31 / p99 1.69-1.85 ms with numpy, the numpy spread
coming from the 2-thread BLAS pool. So int8 catalogs from a few thousand rows up use onnx (at the cost of a
private copy of the int8 matrix per worker: 0.8 MB for the demo).

* int8 with ``n_items >= AUTO_ONNX_MIN_ROWS``: onnx (its int8 GEMM reads 1 byte per value, numpy must widen to
  float32 first; and its one thread is explicit). Below that, numpy: a tiny matrix is dequantized once and a
  float32 gemv plus a partial sort costs less than one onnxruntime ``run()``.
* float16/float32: numpy (float32 BLAS reaches the memory floor, and the memmap stays shared; onnx would
  hold a private float32 copy).
* ``device="cuda"`` (chosen by :func:`~edgerec_sdk.index.resolve_device`): the onnx graph on the GPU, exact,
  with the item matrix resident on the device, ahead of IVF: a GPU scans every row at device bandwidth, so
  there is no recall to give up (not yet measured on a GPU: no device was lent to this project so far).
* An IVF layout given (the bundle was written with one) and ``n_items >= ann_min_items`` (default
  :data:`ANN_MIN_ITEMS`): the approximate :class:`~edgerec_sdk.index.IvfIndex`, which scores its candidates
  exactly. Below that size the exact kernels are fast enough and return the true top-K. ``backend="ivf"``
  asks for IVF whatever the size (an error without a layout); ``numpy``/``onnx`` always give an exact kernel.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ._blas import check_blas_threads
from ._caps import providers_for
from ._common import VectorIndex, check_values
from .ivf import IvfIndex, IvfLayout
from .numpy_exact import NumpyExactIndex
from .onnx_topk import OnnxTopKIndex

__all__ = ["ANN_MIN_ITEMS", "AUTO_ONNX_MIN_ROWS", "make_index"]

ANN_MIN_ITEMS = 100_000
"""Catalog size from which ``auto`` serves the IVF index when the bundle has one (and writers build one)."""

AUTO_ONNX_MIN_ROWS = 4096
"""Catalog size from which ``auto`` prefers the onnxruntime int8 graph."""


def make_index(
    values: NDArray[Any],
    scales: NDArray[np.float32] | None = None,
    *,
    backend: Literal["auto", "numpy", "onnx", "ivf"] = "auto",
    block_rows: int = 65536,
    intra_op_threads: int = 1,
    ivf: IvfLayout | None = None,
    ann_min_items: int = ANN_MIN_ITEMS,
    nprobe: int | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
) -> VectorIndex:
    """Build the top-K index for ``values`` with the requested (or measured-fastest) backend.

    Args:
        values: ``(n, d)`` int8 (with ``scales``), float16 or float32 item matrix; a memmap is fine.
        scales: per-row float32 scales for int8 values, else None.
        backend: ``numpy``, ``onnx``, ``ivf`` or ``auto`` (rule in this module's docstring).
        block_rows: rows per block of the numpy scan.
        intra_op_threads: onnxruntime intra-op threads.
        ivf: the bundle's IVF layout, if it has one (rows must match ``values``).
        ann_min_items: smallest catalog for which ``auto`` picks IVF.
        nprobe: lists probed by IVF; None keeps the layout's tuned value.
        device: where ``auto`` and ``onnx`` run; ``cuda`` puts the onnx graph on the GPU (``numpy`` and
            ``ivf`` always run on the CPU).

    Raises:
        ValueError: bad matrix, scales or backend name.
        ModelLoadError: onnxruntime refused the graph (``onnx`` backend).

    Example:
        >>> import numpy as np
        >>> idx = make_index(np.eye(3, dtype=np.float32), backend="numpy")
        >>> idx.search(np.eye(3, dtype=np.float32), 1).rows.ravel().tolist()
        [0, 1, 2]
    """
    if backend not in ("auto", "numpy", "onnx", "ivf"):
        raise ValueError(f"backend must be 'auto', 'numpy', 'onnx' or 'ivf', not {backend!r}")
    check_values(values, scales)
    if ivf is not None and (ivf.n_items, ivf.dim) != values.shape:
        raise ValueError(f"ivf layout is {ivf.n_items} x {ivf.dim}, values are {values.shape}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and backend in ("auto", "onnx"):
        return OnnxTopKIndex(values, scales, providers=providers_for("cuda"), intra_op_threads=intra_op_threads)
    if backend == "ivf" or (backend == "auto" and ivf is not None and values.shape[0] >= ann_min_items):
        if ivf is None:
            raise ValueError("backend 'ivf' needs an IVF layout (write the bundle with one)")
        exact = None if values.dtype == np.int8 else values
        check_blas_threads()  # IVF scores its candidates with a BLAS gemv
        return IvfIndex(ivf, nprobe=nprobe, exact_values=exact, check=False)
    if backend == "auto":
        big = values.shape[0] >= AUTO_ONNX_MIN_ROWS
        backend = "onnx" if big and values.dtype == np.int8 else "numpy"
    if backend == "onnx":
        return OnnxTopKIndex(values, scales, providers=providers_for("cpu"), intra_op_threads=intra_op_threads)
    check_blas_threads()
    return NumpyExactIndex(values, scales, block_rows=block_rows)
