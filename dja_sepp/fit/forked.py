"""Processes forked from a tile's task that fit its groups (``fit.processes``).

Threads fitting one tile's groups share the GIL: a third of a fit holds it
(MINPACK's QR, numpy's small-array calls, the solver's Python), so two
threads fit one tile only ~1.3x as fast as one. Processes do not share it.

The children are forked, not spawned: they inherit the tile's images,
sources and fitted state as they are at the fork, without copying or
pickling them (memory pages are shared until written). The working images
(data minus the models subtracted so far) live in shared memory
(:func:`shared_array`), so a model one child subtracts is seen by every
other and by the parent. Each task sends the child only what changed since
the fork and gets back what the fit changed (see
:class:`dja_sepp.fit.engine._TileState`); :mod:`.schedule` decides which
groups may run at once.

:func:`os.fork` is used directly: Dask's worker processes are daemonic, and
:mod:`multiprocessing` refuses to start children from those. The children
run only the fit (numpy, scipy, numba kernels) and end with :func:`os._exit`,
so nothing of the worker (event loop, other threads, atexit handlers) runs
in them.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import mmap
import os
import queue
import resource
import signal
import traceback
import warnings
from multiprocessing import Pipe
from typing import Any, Callable

import numpy as np

__all__ = ["ForkedPool", "shared_array"]


def shared_array(values: np.ndarray, dtype=np.float32) -> np.ndarray:
    """A copy of ``values`` in anonymous shared memory: processes forked
    after it read and write the same pixels."""
    values = np.asarray(values)
    nbytes = max(int(np.prod(values.shape)) * np.dtype(dtype).itemsize, 1)
    out = np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype, count=values.size).reshape(values.shape)
    out[...] = values
    return out


class _LogRecords(logging.Handler):
    """Collects a child's log records, to be logged again by the parent
    (whose handlers, e.g. the tile's log, the child's copies do not reach)."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:  # the traceback as text: the exception itself may not pickle
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        self.records.append((record.name, record.levelno, message))


def _serve(task: Callable[[Any], Any], conn) -> None:
    """A child's loop: ``task(args)`` for every ``args`` received, until None
    (then it sends its CPU seconds and private memory, MB)."""
    logger = logging.getLogger("dja_sepp")
    collect = _LogRecords()
    logger.handlers, logger.propagate = [collect], False
    while True:
        args = conn.recv()
        if args is None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            conn.send((usage.ru_utime + usage.ru_stime, _private_mb()))
            return
        collect.records = []
        try:
            reply = ("ok", task(args))
        except Exception:  # reported to the parent, which raises it
            reply = ("error", traceback.format_exc())
        conn.send(reply + (collect.records,))


def _private_mb() -> float:
    """This process's own memory (pages not shared with its parent), MB; 0 where unknown."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            return sum(float(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty"))) / 1024
    except OSError:
        return 0.0


class ForkedPool:
    """``n`` child processes, forked now, each running ``task(args)`` for the
    ``args`` that :meth:`run` sends it.

    :meth:`run` blocks its calling thread (not the GIL) until a child
    returns; call it from up to ``n`` threads at once. Use as a context
    manager: the children end on exit (killed at once if the block raised, or
    by :meth:`kill`); ``cpu_s`` then holds the CPU seconds they used and
    ``private_mb`` their own memory (pages not shared with this process).
    """

    def __init__(self, n: int, task: Callable[[Any], Any]):
        self.cpu_s, self.private_mb = 0.0, 0.0
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._children: list[tuple[int, Any]] = []
        self._ended: dict[int, int] = {}  # pid -> wait status, once reaped
        prctl = _prctl()  # looked up before the fork: the child loads nothing
        # the parent's objects out of the children's garbage collections: a
        # collection writes to every object it visits, which would copy every
        # memory page holding one (a long-lived worker holds many)
        gc.freeze()
        try:
            for _ in range(n):
                self._fork_one(task, prctl)
        except BaseException:
            self.kill()
            raise
        finally:
            gc.unfreeze()

    def _fork_one(self, task, prctl) -> None:
        parent_end, child_end = Pipe()
        pid = _fork()
        if pid == 0:  # the child
            code = 1
            try:
                if prctl is not None:
                    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the forking thread ends
                for _, sibling in self._children:  # its siblings' pipes end with them, not with it
                    sibling.close()
                parent_end.close()
                _serve(task, child_end)
                code = 0
            finally:
                os._exit(code)
        child_end.close()
        self._children.append((pid, parent_end))
        self._idle.put((pid, parent_end))

    def run(self, args: Any) -> Any:
        """``task(args)`` in an idle child; its exception is raised here."""
        pid, conn = self._idle.get()
        try:
            conn.send(args)
            while not conn.poll(0.5):  # a pipe another process also holds never reports its end
                if self._reap(pid):
                    raise EOFError
            status, value, records = conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError("a fit process ended unexpectedly (killed, or out of memory?)") from exc
        finally:
            self._idle.put((pid, conn))
        for name, level, message in records:
            logging.getLogger(name).log(level, "%s", message)
        if status == "error":
            raise RuntimeError(f"a group's fit failed in a fit process:\n{value}")
        return value

    def _reap(self, pid: int) -> bool:
        """True once ``pid`` has ended (reaped here)."""
        if pid not in self._ended:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._ended[pid] = status
        return pid in self._ended

    def kill(self) -> None:
        """End every child now (a run waiting on one raises)."""
        for pid, _ in self._children:
            if not self._reap(pid):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "ForkedPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.kill()
        for pid, conn in self._children:
            try:
                if not self._reap(pid):
                    conn.send(None)
                    cpu, private = conn.recv()
                    self.cpu_s += cpu
                    self.private_mb += private
            except (EOFError, OSError):
                self.kill()
            finally:
                conn.close()
                if pid not in self._ended:
                    os.waitpid(pid, 0)
                    self._ended[pid] = 0


def _prctl():
    """Linux's ``prctl``, or None."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _fork() -> int:
    # Python >= 3.12 warns on fork() in a process with threads (the Dask
    # worker's): a lock another thread holds stays locked in the child. The
    # children take no lock of those threads (they fit, log into their own
    # handler and end with os._exit).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()
