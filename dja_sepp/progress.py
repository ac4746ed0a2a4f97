"""Progress of the long steps (PSF, fit, mosaic), shown on the console.

The driver shows one bar per step on stderr, only while :func:`shown` is
on (``run(progress=True)``, the command line's default). A tile task runs on
a Dask worker: it opens :func:`task_progress`, the fitting engine calls
:func:`begin` with the number of sources it will fit and :func:`advance` as
it fits them, and the task sends ``{key, done, total}`` through distributed's
event log (topic :data:`TOPIC`, at most one event per ``interval`` seconds).
The driver subscribes to that topic (:class:`FitBoard`) and adds the tiles
up into one bar counted in sources. Outside a task these calls do nothing.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator

__all__ = ["TOPIC", "shown", "is_shown", "bar", "task_progress", "begin", "advance", "FitBoard"]

#: distributed event topic of the tile tasks' progress messages
TOPIC = "dja-sepp-progress"

_SHOWN: ContextVar[bool] = ContextVar("dja_sepp_progress_shown", default=False)
_TASK: ContextVar["TaskProgress | None"] = ContextVar("dja_sepp_task_progress", default=None)


@contextmanager
def shown(on: bool = True) -> Iterator[None]:
    """Show progress bars in this block (the driver's ``progress=`` switch)."""
    token = _SHOWN.set(bool(on))
    try:
        yield
    finally:
        _SHOWN.reset(token)


def is_shown() -> bool:
    return _SHOWN.get()


def bar(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar on stderr, disabled unless :func:`shown` is on."""
    from tqdm.auto import tqdm
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    off = bool(kwargs.pop("disable", False))
    return tqdm(iterable, disable=off or not is_shown(), **kwargs)


class TaskProgress:
    """Progress of one task: sources to fit (one entry per engine call;
    calls still ``expected`` count as many as the last one) and done."""

    def __init__(self, key: str, send: Callable[[dict], None], expected_calls: int = 1,
                 interval: float = 1.0):
        self.key, self.send, self.expected, self.interval = key, send, int(expected_calls), interval
        self.totals: list[float] = []
        self.done = 0.0
        self._last = 0.0

    @property
    def total(self) -> float | None:
        if not self.totals:
            return None
        return sum(self.totals) + max(self.expected - len(self.totals), 0) * self.totals[-1]

    def begin(self, n: float) -> None:
        self.totals.append(float(n))
        self.emit(force=True)

    def advance(self, n: float) -> None:
        self.done += float(n)
        self.emit()

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        try:
            self.send({"key": self.key, "done": round(self.done, 3), "total": self.total})
        except Exception:  # progress is never worth failing a tile
            pass


def _worker_sender() -> tuple[str, Callable[[dict], None]] | None:
    """(task key, send) inside a distributed worker task, else None."""
    try:
        from distributed import get_worker
        worker = get_worker()
        key = str(worker.get_current_task())
    except (ImportError, ValueError):
        return None
    return key, lambda msg: worker.log_event(TOPIC, msg)


@contextmanager
def task_progress(expected_calls: int = 1, interval: float = 1.0,
                  send: Callable[[dict], None] | None = None, key: str = "") -> Iterator[TaskProgress | None]:
    """Report the fit's progress of this task to the driver (no-op outside
    a distributed worker unless ``send`` is given)."""
    if send is None:
        found = _worker_sender()
        if found is None:
            yield None
            return
        key, send = found
    task = TaskProgress(key, send, expected_calls, interval)
    token = _TASK.set(task)
    try:
        yield task
    finally:
        _TASK.reset(token)
        task.emit(force=True)


def begin(n: float) -> None:
    """The engine will fit ``n`` sources (each once, whatever the passes)."""
    task = _TASK.get()
    if task is not None:
        task.begin(n)


def advance(n: float) -> None:
    """``n`` more sources fitted (a fraction per pass with several passes)."""
    task = _TASK.get()
    if task is not None:
        task.advance(n)


class FitBoard:
    """The driver's view of the tile tasks: one bar in sources fitted.

    Tiles not started yet count as the mean of the tiles that reported a
    total (the bar's total grows or shrinks a little as tiles start)."""

    def __init__(self, client, keys: Iterable[str], desc: str = "fit"):
        self.client, self.keys, self.desc = client, list(keys), desc
        self._wanted = set(self.keys)
        self.state: dict[str, tuple[float, float | None]] = {}
        self.finished: set[str] = set()
        self.failed = 0
        self.bar = bar(total=0, desc=desc, unit="src",
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} sources "
                                  "[{elapsed}<{remaining}{postfix}]")
        self.subscribed = False
        if is_shown():
            try:
                client.subscribe_topic(TOPIC, self._on_event)
                self.subscribed = True
            except Exception:  # an old scheduler: tiles only
                pass

    def _on_event(self, event) -> None:
        msg = event[1] if isinstance(event, (tuple, list)) else event
        if isinstance(msg, dict) and msg.get("key") in self._wanted:
            self.state[msg["key"]] = (float(msg.get("done") or 0.0), msg.get("total"))

    def finish(self, key: str, ok: bool, n_sources: int | None = None) -> None:
        """A tile ended; ``n_sources``: its count when its engine reported none."""
        self.finished.add(key)
        self.failed += not ok
        if self.state.get(key, (0.0, None))[1] is None and n_sources:
            self.state[key] = (float(n_sources), float(n_sources))

    def counts(self) -> tuple[float, float]:
        """(sources fitted, sources expected) over all tiles."""
        known = [t for _, t in self.state.values() if t is not None]
        mean = sum(known) / len(known) if known else 0.0
        done = total = 0.0
        for key in self.keys:
            d, t = self.state.get(key, (0.0, None))
            if key in self.finished:
                t = t if t is not None else 0.0
                d = t
            total += t if t is not None else mean
            done += min(d, t) if t is not None else 0.0
        return done, total

    def refresh(self) -> None:
        done, total = self.counts()
        waiting = not any(t is not None for _, t in self.state.values()) and not self.finished
        self.bar.set_description_str(f"{self.desc} (tiles detecting)" if waiting else self.desc,
                                     refresh=False)
        self.bar.total = max(total, done)
        self.bar.n = done
        self.bar.set_postfix_str(f"tiles {len(self.finished)}/{len(self.keys)}"
                                 + (f", {self.failed} failed" if self.failed else ""), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.refresh()
        self.bar.close()
        if self.subscribed:
            try:
                self.client.unsubscribe_topic(TOPIC)
            except Exception:
                pass
