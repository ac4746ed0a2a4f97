"""Environment of every worker process, whatever the cluster kind."""
from __future__ import annotations

__all__ = ["THREAD_ENV"]

#: BLAS, OpenMP and numba pinned to one thread: one tile fit per core.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}
