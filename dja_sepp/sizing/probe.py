"""What one task costs: CPU seconds of its thread, wall seconds, peak memory.

:func:`probe` wraps a tile task (:func:`dja_sepp.pipeline.process_tile` uses
it, so every ``tiles/{id}/status.json`` records ``resources``). The peak
resident memory of the task is exact on Linux: the process's high-water mark
(``VmHWM``) is reset when the task starts (``/proc/self/clear_refs``, value 5)
and read when it ends. Elsewhere the process's lifetime peak is reported and
marked ``peak_exact: false``. With several threads per worker the peak is the
process's, shared by the tasks that ran at the same time.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["probe", "current_rss_mb", "peak_rss_mb", "reset_peak_rss"]

_STATUS = "/proc/self/status"


def _status_mb(key: str) -> float | None:
    """A ``kB`` line of ``/proc/self/status`` in MB (None where there is none)."""
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    rss = _status_mb("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory to its current value
    (Linux >= 4.0); False where that is not possible."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process since its start or the last
    :func:`reset_peak_rss` (MB)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS


@contextmanager
def probe() -> Iterator[dict]:
    """Measure the enclosed block; the yielded dict is filled on exit.

    Yields
    ------
    dict
        ``cpu_s`` (CPU seconds of the calling thread: core-seconds of a
        single-threaded task, exact when several tasks share a worker),
        ``wall_s``, ``rss_before_mb`` (the worker's resident memory when the
        block started), ``peak_rss_mb`` (its peak during the block) and
        ``peak_exact`` (False: the process's lifetime peak).
    """
    out: dict = {}
    exact = reset_peak_rss()
    before = current_rss_mb()
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    try:
        yield out
    finally:
        out.update(cpu_s=round(time.thread_time() - cpu0, 4),
                   wall_s=round(time.perf_counter() - wall0, 4),
                   rss_before_mb=round(before, 2), peak_rss_mb=round(peak_rss_mb(), 2),
                   peak_exact=exact)
