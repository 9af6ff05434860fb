"""Model building: training, ONNX export, int8 quantization, evaluation and bundle writing.

This subpackage needs the ``[build]`` extra (torch, onnx, tqdm, matplotlib) and is never imported by the
runtime. Importing it is cheap; torch is imported by the modules that train (``model``, ``train``,
``export``, ``pipeline``), which the ``edgerec build`` command loads only when it runs.

Example:
    >>> from edgerec_sdk.train.pipeline import build_bundle                      # doctest: +SKIP
    >>> build_bundle("Beauty.txt", "bundles/beauty", titles="item_keywords.tsv")  # doctest: +SKIP
"""

from __future__ import annotations

__all__: list[str] = []
