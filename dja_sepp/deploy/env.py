"""Environment of every worker process, whatever the cluster kind."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["THREAD_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

#: BLAS, OpenMP and numba pinned to one thread: one tile fit per core.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}

#: Allocations below this size come from the heap, never from a fresh memory map
#: (glibc's ceiling for the setting on 64-bit systems).
MMAP_THRESHOLD = 32 * 2 ** 20
#: Free memory kept at the top of the heap before it is returned to the system.
TRIM_THRESHOLD = 64 * 2 ** 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc's malloc.h)


def tune_allocator() -> bool:
    """Serve the fit's temporary arrays from the heap instead of fresh memory maps.

    A Dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_`` set (to
    return memory to the system), and glibc then freezes its threshold for
    memory-mapped allocations at 128 kB: every FFT stack and derivative image
    of a fit (0.2-10 MB, allocated and freed thousands of times per tile) is a
    new mapping whose pages are faulted in one by one, and a 64 kB trim
    threshold gives the top of the heap back after each. Measured on a crowded
    40" tile: 45 s of system time on top of 43 s of user time; with the
    thresholds raised here, 2-3 s. A worker keeps at most ``TRIM_THRESHOLD``
    of free heap; larger arrays are still mapped and returned at once.
    Called by every task that fits or renders (idempotent, cheap); returns
    False where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
