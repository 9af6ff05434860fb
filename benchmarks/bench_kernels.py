"""Single-query and batch timings of the top-K backends; prints one JSON line per case.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_kernels.py [n_rows ...]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from edgerec_sdk.index import NumpyExactIndex, OnnxTopKIndex


def _time(fn: object, repeat: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        ts.append(time.perf_counter() - t0)
    return min(ts) * 1e3, float(np.median(ts)) * 1e3


def main(sizes: list[int], d: int = 64, k: int = 10) -> None:
    rng = np.random.default_rng(0)
    for n in sizes:
        v = rng.integers(-127, 128, (n, d), dtype=np.int8)
        s = ((rng.random(n, dtype=np.float32) + 0.5) / 127).astype(np.float32)
        for name, idx in (("numpy", NumpyExactIndex(v, s)), ("onnx", OnnxTopKIndex(v, s))):
            for b in (1, 16):
                q = rng.standard_normal((b, d)).astype(np.float32)
                idx.search(q, k)
                best, med = _time(lambda q=q, idx=idx: idx.search(q, k), 15 if n < 100_000 else 7)
                print(
                    json.dumps(
                        {
                            "backend": name,
                            "n": n,
                            "d": d,
                            "dtype": "int8",
                            "batch": b,
                            "k": k,
                            "best_ms": round(best, 3),
                            "median_ms": round(med, 3),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [12_000, 1_000_000])
