"""Item vectors as stored in a bundle, and the int8 quantisation that writes them.

int8 vectors are symmetric per row: ``v[r] = q[r] * scale[r]`` with ``scale[r] = max|x[r]| / 127`` and
``q`` rounded to nearest and clipped to ``[-127, 127]`` (never -128, so negation is exact). A row of
zeros gets ``scale 0`` and ``q = 0``, which dequantises back to zeros exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["ItemVectors", "quantize_rows_int8"]

_BLOCK_ROWS: Final = 65536


def quantize_rows_int8(x: NDArray[np.floating]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Quantise a float matrix ``(n, dim)`` to int8 with one float32 scale per row.

    Args:
        x: finite float vectors, shape ``(n, dim)``.

    Returns:
        ``(q, scales)``: ``q`` int8 of shape ``(n, dim)`` and ``scales`` float32 of shape ``(n,)``, with
        ``q[r] * scales[r]`` within ``scales[r] / 2`` of ``x[r]`` element-wise.

    Example:
        >>> q, s = quantize_rows_int8(np.array([[1.0, -2.0], [0.0, 0.0]], dtype=np.float32))
        >>> q.tolist(), float(s[1])
        ([[64, -127], [0, 0]], 0.0)
    """
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {x.shape}")
    n = x.shape[0]
    q = np.empty(x.shape, dtype=np.int8)
    scales = np.empty(n, dtype=np.float32)
    # Blocks bound the float temporaries for million-row catalogs.
    for lo in range(0, n, _BLOCK_ROWS):
        block = np.asarray(x[lo : lo + _BLOCK_ROWS], dtype=np.float32)
        peak = np.max(np.abs(block), axis=1) if block.shape[1] else np.zeros(len(block), np.float32)
        scale = (peak / np.float32(127.0)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0))
        q[lo : lo + _BLOCK_ROWS] = np.clip(np.rint(block / safe[:, None]), -127, 127).astype(np.int8)
        scales[lo : lo + _BLOCK_ROWS] = scale
    return q, scales


@dataclass(frozen=True, slots=True, eq=False)  # identity equality: arrays have no single truth value
class ItemVectors:
    """The item vectors of a bundle, usually memory-mapped read-only.

    Attributes:
        values: ``(n, dim)`` int8, float16 or float32; a read-only ``np.memmap`` when loaded from a bundle,
            so every worker on a host shares one copy through the page cache.
        scales: per-row float32 scales when ``values`` is int8, else None.

    Example:
        >>> vecs = bundle.vectors  # doctest: +SKIP
        >>> vecs.rows_f32(np.array([0, 5], dtype=np.int64)).shape  # doctest: +SKIP
        (2, 64)
    """

    values: NDArray[np.int8] | NDArray[np.float16] | NDArray[np.float32]
    scales: NDArray[np.float32] | None = None

    @property
    def dtype(self) -> str:
        """``"int8"``, ``"float16"`` or ``"float32"``: the stored dtype."""
        return str(self.values.dtype)

    @property
    def n(self) -> int:
        """Number of rows (items)."""
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.values.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of stored vectors plus scales (what the page cache holds)."""
        return int(self.values.nbytes) + (int(self.scales.nbytes) if self.scales is not None else 0)

    def rows_f32(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """Dequantised float32 vectors of ``rows`` (a 1-d array of row numbers), shape ``(len(rows), dim)``."""
        out = np.asarray(self.values[rows], dtype=np.float32)
        if self.scales is not None:
            out = out * self.scales[rows][:, None]
        return out

    def unit_rows(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """float32 vectors of ``rows`` scaled to unit length (a zero row stays zero): the cosine geometry. An
        int8 row's scale cancels in the normalisation, so it is never multiplied in."""
        # the plain-array view skips np.memmap's Python-level __getitem__ (a few microseconds per call)
        out = np.asarray(self.values.view(np.ndarray)[rows], dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        out /= np.maximum(norms, np.float32(1e-12))[:, None]
        return out

    def dense_f32(self) -> NDArray[np.float32]:
        """The whole matrix as float32 (a copy unless already float32); meant for small catalogs."""
        if self.scales is None:
            return np.asarray(self.values, dtype=np.float32)
        out = np.empty(self.values.shape, dtype=np.float32)
        for lo in range(0, self.n, _BLOCK_ROWS):
            hi = lo + _BLOCK_ROWS
            np.multiply(self.values[lo:hi], self.scales[lo:hi, None], out=out[lo:hi], dtype=np.float32)
        return out
