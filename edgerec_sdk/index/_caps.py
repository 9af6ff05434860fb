"""Capability flags, computed once at import (CONVENTIONS §8)."""

from __future__ import annotations

import onnxruntime as _ort

HAS_CUDA: bool = "CUDAExecutionProvider" in _ort.get_available_providers()
"""Whether this onnxruntime build offers the CUDA execution provider (a GPU may still be absent)."""
