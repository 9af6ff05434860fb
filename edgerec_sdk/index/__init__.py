"""Top-K kernels behind one contract (:class:`VectorIndex`): exact numpy and onnxruntime (CPU, or CUDA with
the item matrix resident on the GPU), and an approximate IVF index for large catalogs (:class:`IvfIndex`,
built by :func:`build_ivf`). :func:`resolve_device` picks the device.

Example:
    >>> import numpy as np
    >>> from edgerec_sdk.index import make_index
    >>> v = np.eye(4, dtype=np.float32)
    >>> make_index(v).search(v[:2], 2).rows.tolist()
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

import inspect
from typing import Any

from . import _caps
from ._caps import AUTO_CUDA_MIN_ROWS, Device, cuda_usable, providers_for, resolve_device
from ._common import SearchResult, VectorIndex, brute_force_topk
from .factory import ANN_MIN_ITEMS, AUTO_ONNX_MIN_ROWS, make_index
from .ivf import IvfIndex, IvfLayout
from .ivf_build import DEFAULT_TARGET_RECALL, build_ivf, default_nlist
from .numpy_exact import NumpyExactIndex
from .onnx_topk import OnnxTopKIndex

__all__ = [
    "ANN_MIN_ITEMS",
    "AUTO_CUDA_MIN_ROWS",
    "AUTO_ONNX_MIN_ROWS",
    "DEFAULT_TARGET_RECALL",
    "HAS_CUDA",
    "Device",
    "IvfIndex",
    "IvfLayout",
    "NumpyExactIndex",
    "OnnxTopKIndex",
    "SearchResult",
    "VectorIndex",
    "brute_force_topk",
    "build_ivf",
    "cuda_usable",
    "default_nlist",
    "make_index",
    "providers_for",
    "resolve_device",
]

# Reprs and tracebacks name the package, not the private module (constants and aliases keep theirs).
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) or inspect.isfunction(_obj):
        _obj.__module__ = __name__
del _name, _obj


def __getattr__(name: str) -> Any:
    # HAS_CUDA is asked on first read: importing the SDK must not import onnxruntime (fault D21).
    if name == "HAS_CUDA":
        return _caps.has_cuda()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
