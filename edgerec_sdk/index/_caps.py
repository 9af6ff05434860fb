"""Capability flags and the device choice: CPU, or a CUDA GPU through onnxruntime-gpu.

``HAS_CUDA`` only says the installed onnxruntime was built with the CUDA provider; a GPU may still be
absent (onnxruntime then falls back to the CPU with an error in its log). :func:`cuda_usable` answers the
real question once per process by running a one-node graph on the CUDA provider in a *subprocess*: probing
in this process would initialise the CUDA driver, and a process that did so before ``os.fork`` (gunicorn
``--preload``) leaves its children unable to use the GPU at all.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from typing import Any, Literal

from .._impl.onnxrt import onnxruntime
from ..errors import ConfigError

__all__ = ["AUTO_CUDA_MIN_ROWS", "Device", "cuda_usable", "has_cuda", "providers_for", "resolve_device"]

logger = logging.getLogger(__name__)


def has_cuda() -> bool:
    """Whether this onnxruntime build offers the CUDA execution provider (a GPU may still be absent).

    Also readable as the module attribute ``HAS_CUDA``; asked on first use, so that importing the SDK does
    not import onnxruntime (fault D21).
    """
    known = globals().get("HAS_CUDA")
    if known is None:
        known = "CUDAExecutionProvider" in onnxruntime().get_available_providers()
        globals()["HAS_CUDA"] = known
    return bool(known)


def __getattr__(name: str) -> Any:
    if name == "HAS_CUDA":
        return has_cuda()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Device = Literal["auto", "cpu", "cuda"]

AUTO_CUDA_MIN_ROWS = 100_000
"""Catalog size from which ``device="auto"`` serves on a usable GPU.

Below it the CPU scans the catalog in about a millisecond or less (docs/benchmarks.md), so a GPU saves
little while every call pays a host-device round trip and each worker holds its own CUDA context. From it up
the CPU needs the approximate index, while the GPU scans every row exactly at device memory bandwidth.
"""

_PROBE = """
import numpy as np, onnxruntime as ort
from edgerec_sdk.index import _onnx_proto as pb
blob = pb.model([pb.node("Identity", ["x"], ["y"])], [pb.value_info("x", pb.FLOAT, [1])],
                [pb.value_info("y", pb.FLOAT, [1])], [], opsets={"": 17})
so = ort.SessionOptions(); so.log_severity_level = 4
s = ort.InferenceSession(blob, so, providers=["CUDAExecutionProvider"])
s.run(None, {"x": np.ones(1, np.float32)})
import sys; sys.stdout.write("edgerec-cuda:" + s.get_providers()[0])
"""

_lock = threading.Lock()
_usable: bool | None = None


def cuda_usable() -> bool:
    """Whether onnxruntime can run a graph on a CUDA GPU here (probed once per process, in a subprocess).

    False at no cost where onnxruntime has no CUDA provider (the ``cpu`` install).
    """
    global _usable
    if not has_cuda():
        return False
    with _lock:
        if _usable is None:
            try:
                done = subprocess.run(
                    [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
                )
                _usable = "edgerec-cuda:CUDAExecutionProvider" in done.stdout
                if not _usable:
                    logger.info("CUDA provider present but no usable GPU: %s", done.stderr.strip()[-300:])
            except (OSError, subprocess.SubprocessError) as exc:
                logger.info("CUDA probe failed: %s", exc)
                _usable = False
        return _usable


def resolve_device(requested: Device, n_items: int) -> Literal["cpu", "cuda"]:
    """The device a bundle of ``n_items`` is served on.

    ``cpu`` always; ``cuda`` or a :class:`ConfigError` when no GPU is usable; ``auto``: ``cuda`` when a GPU is
    usable and the catalog has at least :data:`AUTO_CUDA_MIN_ROWS` items, else ``cpu``.

    Example:
        >>> resolve_device("cpu", 10_000_000)
        'cpu'
    """
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if not cuda_usable():
            raise ConfigError(
                "device='cuda' but onnxruntime has no usable CUDA GPU here "
                f"(CUDA provider {'present' if has_cuda() else 'absent'}: pip install 'edgerec-sdk[gpu]' on a "
                "machine with an NVIDIA GPU, or use device='auto')"
            )
        return "cuda"
    if requested != "auto":
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', not {requested!r}")
    return "cuda" if n_items >= AUTO_CUDA_MIN_ROWS and cuda_usable() else "cpu"


def providers_for(device: Literal["cpu", "cuda"]) -> tuple[str, ...]:
    """onnxruntime providers for ``device`` (CUDA keeps the CPU provider for the nodes CUDA lacks)."""
    if device == "cuda":
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)
