"""Warn once when numpy's BLAS may run a multi-threaded pool on the request path.

Why: the numpy and IVF kernels call BLAS (gemv/gemm) inside ``search()``. OpenBLAS and MKL default to one
thread per core; in a web server with one worker process per core those pools oversubscribe the machine,
and a 2-thread BLAS call that finds its second core busy runs 10-40x slower (measured on the 2-core dev
box, docs/design.md). The fix is an environment setting made before numpy is imported
(``OPENBLAS_NUM_THREADS=1``, ``MKL_NUM_THREADS=1`` or ``OMP_NUM_THREADS=1``), which the SDK cannot make
for the host. threadpoolctl is not a runtime dependency: when it is installed its report is used, else the
environment variables are read. Anchor: ``benfred/implicit: implicit/utils.py`` (``check_blas_config``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Mapping

from .._impl.log import warn_once

__all__ = ["blas_threads", "check_blas_threads"]

logger = logging.getLogger(__name__)

_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "BLIS_NUM_THREADS")


def blas_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """Threads numpy's BLAS will use, or None when unknown (no threadpoolctl and no variable set)."""
    if environ is None and importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return max(int(p.get("num_threads", 1)) for p in pools)
    env = os.environ if environ is None else environ
    for name in _ENV:
        raw = env.get(name, "").strip()
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
    return None


# Modules whose presence means the process serves requests; a CLI or a notebook has no neighbours to starve.
_SERVER_MODULES = ("gunicorn", "uwsgi", "uvicorn", "hypercorn", "waitress", "celery", "django", "flask")


def in_server_process() -> bool:
    """Whether a web server, web framework or task queue is loaded in this process."""
    return any(name in sys.modules for name in _SERVER_MODULES)


def check_blas_threads(
    environ: Mapping[str, str] | None = None, cpu_count: int | None = None, *, server: bool | None = None
) -> bool:
    """Log one warning (per process) when BLAS may use more than one thread in a server process.

    Outside a server (the CLI, a notebook, a batch job) a multi-threaded BLAS is what the user wants, so
    it is only logged at DEBUG. Returns whether it warned.
    """
    threads = blas_threads(environ)
    cores = os.cpu_count() if cpu_count is None else cpu_count
    if threads == 1 or (threads is None and (cores or 1) <= 1):
        return False
    if not (in_server_process() if server is None else server):
        logger.debug("numpy's BLAS may use %s threads (not a server process: fine)", threads or cores)
        return False
    return warn_once(
        logger,
        "blas-threads",
        "numpy's BLAS may use %s threads inside search(); in a web worker set OPENBLAS_NUM_THREADS=1 "
        "(or MKL_NUM_THREADS/OMP_NUM_THREADS) before numpy is imported to avoid oversubscription",
        threads if threads is not None else f"up to {cores}",
    )
