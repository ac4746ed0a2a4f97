"""A pass over a tile's groups, fitted one after the other or several at once.

Mixed into the engine's tile state (:class:`dja_sepp.fit.engine._TileState`):
with ``fit.threads`` > 1 the fits run on threads of the tile's task, with
``fit.processes`` > 1 in processes forked from it (:mod:`.forked`: the GIL
does not slow them). Either way the working images change only in the
calling thread, in an order that gives the serial result (:mod:`.schedule`).
"""
from __future__ import annotations

import time

import numpy as np

from .. import progress
from .forked import ForkedPool
from .schedule import run_in_order

__all__ = ["ParallelPass"]

#: a fit process's stand-in for the group's previous model (the parent has it)
_PREVIOUS = "previous"


class ParallelPass:
    """Methods of the engine's tile state (``fit_rows``, ``apply_models``,
    ``regions_of``, ``regions``, ``models``, ``out``, ...) that run one pass of fits."""

    def fit_pass(self, groups: list[np.ndarray], order, npass: int, share: float) -> None:
        """Fit the groups ``order`` (indices into ``groups``) brightest first
        in pass ``npass``; each group advances the progress bar by ``share``
        of its size."""
        flux = np.nan_to_num(np.asarray(self.sources["FLUX_AUTO"], float), nan=0.0)
        order = sorted(order, key=lambda g: -float(flux[groups[g]].sum()))
        for gi in order:
            if gi not in self.regions:
                self.regions[gi] = self.regions_of(groups[gi])
        reads = {gi: self.regions[gi][0] for gi in order}
        writes = {gi: self.regions[gi][1] for gi in order}

        def apply(gi: int, result) -> None:
            rows, previous, subtracted, seconds = result
            self.apply_models(previous, subtracted)
            if len(rows):
                self.duration[rows] += seconds / len(rows)
            progress.advance(len(groups[gi]) * share)

        processes, threads = int(self.opts["processes"]), int(self.opts["threads"])
        if processes < 2 or len(order) < 2:
            on_helpers = threads > 1 and len(order) > 1  # the calling thread's CPU does not hold theirs
            run_in_order(order, reads, writes, lambda gi: self._timed_fit(gi, groups[gi], npass, on_helpers),
                         apply, threads)
            return

        def apply_change(gi: int, result) -> None:
            change, (rows, add_back, subtracted, seconds) = result
            previous = self.models.get(gi, {}) if add_back else {}
            self._apply_change(gi, groups[gi], change, previous)
            apply(gi, (rows, previous, previous if subtracted == _PREVIOUS else subtracted, seconds))

        with ForkedPool(processes, self._fit_in_child) as pool:
            run_in_order(order, reads, writes, lambda gi: pool.run(
                (gi, groups[gi], npass, self.modelled.copy(), self.explained.copy())), apply_change, processes,
                on_error=pool.kill)
        self.helper_cpu_s += pool.cpu_s
        self.helper_mb = max(self.helper_mb, pool.private_mb)

    def _timed_fit(self, gi: int, rows: np.ndarray, npass: int, count_cpu: bool = False) -> tuple:
        start, cpu = time.perf_counter(), time.thread_time()
        result = self.fit_rows(gi, rows, npass)
        if count_cpu:
            with self._count:
                self.helper_cpu_s += time.thread_time() - cpu
        return (*result, time.perf_counter() - start)

    def _fit_in_child(self, args) -> tuple[dict, tuple]:
        """A fit process's task: fit group ``gi`` on the parent's current
        ``modelled`` and ``explained`` (the rest of the state is the fork's,
        the working images are shared); returns what the fit changed, and
        the fit's result with the group's previous model (which the parent
        holds) named instead of sent."""
        gi, rows, npass, modelled, explained = args
        self.modelled[:], self.explained[:] = modelled, explained
        counters = (self.refits_skipped, self.restarts)
        fitted, previous, subtracted, seconds = self._timed_fit(gi, rows, npass)
        solution = self.solutions.get(gi)
        models = self.models.get(gi)
        change = {
            "out": {k: v[rows] for k, v in self.out.items()},
            "modelled": self.modelled[rows], "explained": self.explained[rows],
            "models": _PREVIOUS if models is previous else models, "fitted_on": self.fitted_on.get(gi),
            # the model by role: the parent's own definitions, which the engine compares by identity
            "solution": None if solution is None else (solution[0] is self.point,) + solution[1:],
            "fit_snr": {int(r): self.fit_snr[int(r)] for r in rows if int(r) in self.fit_snr},
            "counters": (self.refits_skipped - counters[0], self.restarts - counters[1]),
        }
        for held in (self.models, self.fitted_on):  # the parent holds them now: a child's memory stays flat
            held.pop(gi, None)
        return change, (fitted, bool(previous), _PREVIOUS if subtracted is previous else subtracted, seconds)

    def _apply_change(self, gi: int, rows: np.ndarray, change: dict, previous: dict) -> None:
        """What a fit process changed in the state in fitting group ``gi``."""
        for k, v in change["out"].items():
            self.out[k][rows] = v
        self.modelled[rows], self.explained[rows] = change["modelled"], change["explained"]
        models = previous if change["models"] == _PREVIOUS else change["models"]
        for name, value in (("models", models), ("fitted_on", change["fitted_on"])):
            if value is None:
                getattr(self, name).pop(gi, None)
            else:
                getattr(self, name)[gi] = value
        if change["solution"] is not None:
            is_point, fitted_rows, theta = change["solution"]
            self.solutions[gi] = (self.point if is_point else self.mdef, fitted_rows, theta)
        self.fit_snr.update(change["fit_snr"])
        self.refits_skipped += change["counters"][0]
        self.restarts += change["counters"][1]
