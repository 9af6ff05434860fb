"""Bundles: the immutable directory holding one model version (format in ``docs/bundle-format.md``).

:func:`write_bundle` writes one atomically, :func:`load_bundle` verifies (signature, sizes, sha256, ONNX
external data, ``.npy`` headers, shapes) and loads it, :func:`inspect_bundle` reports on one without raising.

Example:
    >>> from edgerec_sdk.bundle import load_bundle
    >>> bundle = load_bundle("bundles/beauty-3f9a1c2b")  # doctest: +SKIP
    >>> bundle.catalog.row("B0012345"), bundle.vectors.dim  # doctest: +SKIP
    (0, 64)
"""

from __future__ import annotations

from .catalog import Catalog
from .loader import Bundle, inspect_bundle, load_bundle
from .manifest import FileEntry, Manifest, VectorDtype
from .vectors import ItemVectors, quantize_rows_int8
from .writer import sign_manifest, update_metrics, write_bundle

__all__ = [
    "Bundle",
    "Catalog",
    "FileEntry",
    "ItemVectors",
    "Manifest",
    "VectorDtype",
    "inspect_bundle",
    "load_bundle",
    "quantize_rows_int8",
    "sign_manifest",
    "update_metrics",
    "write_bundle",
]

for _name in ("Bundle", "Catalog", "FileEntry", "ItemVectors", "Manifest"):
    globals()[_name].__module__ = __name__
del _name
