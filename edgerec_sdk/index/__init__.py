"""Exact top-K kernels behind one contract (:class:`VectorIndex`): numpy and onnxruntime (CPU, CUDA).

Example:
    >>> import numpy as np
    >>> from edgerec_sdk.index import make_index
    >>> v = np.eye(4, dtype=np.float32)
    >>> make_index(v).search(v[:2], 2).rows.tolist()
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

from ._caps import HAS_CUDA
from ._common import SearchResult, VectorIndex, brute_force_topk
from .factory import AUTO_ONNX_MIN_ROWS, make_index
from .numpy_exact import NumpyExactIndex
from .onnx_topk import OnnxTopKIndex

__all__ = [
    "AUTO_ONNX_MIN_ROWS",
    "HAS_CUDA",
    "NumpyExactIndex",
    "OnnxTopKIndex",
    "SearchResult",
    "VectorIndex",
    "brute_force_topk",
    "make_index",
]

for _name in (
    "NumpyExactIndex",
    "OnnxTopKIndex",
    "SearchResult",
    "VectorIndex",
    "brute_force_topk",
    "make_index",
):
    globals()[_name].__module__ = __name__
del _name
