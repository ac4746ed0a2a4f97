"""Cost model of a tile: time and memory from its sources, bands and pixels.

Time: the core-seconds of a tile task (CPU of its thread, :mod:`.probe`) are
modelled as ``a * fitted sources x bands + b * megapixels + c`` (fitted: the
sources the tile's core owns and the bright ones of its halo, which it fits too) (the terms the
measurements can carry: with ``n`` measured tiles at most ``n - 1`` terms,
so that the scatter is measured too; a term whose coefficient comes out
negative is dropped). The fit is weighted by ``1 / core-s``: it minimises
relative errors, which are alike for sparse and crowded tiles.

Memory: the rise of a worker's resident memory during a task (its peak over
its size when the task started) is modelled as ``k * megapixels`` (plus a
constant when the tiles measured differ enough in size). A worker's peak is
its size at rest before any tile (after its warm-up) plus that rise, or the
size it keeps after real tiles when that is larger: the heap a finished tile
leaves to the allocator is what the next tile allocates from, so the two do
not add up.

Uncertainty: the relative scatter ``s`` of the measured tiles around the fit
(with its degrees of freedom, widened to the Student-t 1-sigma quantile when
they are few) gives the coefficients' covariance; the error of
a sum over the field's tiles adds the coefficients' part (correlated over all
tiles) and each tile's own scatter (independent). Settings of workers x threads
x machine enter as a wall-time factor (median measured wall / core-s).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field as dc_field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["LinearFit", "CostModel", "fit_linear", "makespan", "TIME_TERMS", "MEMORY_TERMS"]

#: Terms of the time model, in the order they are admitted.
TIME_TERMS = ("fitted_bands", "mpix", "const")
#: Terms of the memory model, in the order they are admitted.
MEMORY_TERMS = ("mpix", "const")


def _column(rows: Sequence[Mapping[str, Any]], term: str) -> np.ndarray:
    return np.ones(len(rows)) if term == "const" else np.array([float(r[term]) for r in rows])


@dataclass
class LinearFit:
    """``y = sum(coef[t] * x[t])`` with relative scatter ``sigma_rel``.

    Attributes
    ----------
    terms : list of str
        Feature names (``const`` is 1).
    coef : ndarray
    cov : ndarray
        Covariance of ``coef`` (NaN when there was no degree of freedom left).
    sigma_rel : float
        Relative scatter of one tile around the fit (NaN: unknown).
    dof : int
        Measurements minus terms.
    """

    terms: list[str]
    coef: np.ndarray
    cov: np.ndarray
    sigma_rel: float
    dof: int

    def design(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The design matrix of ``rows`` (dicts holding the terms)."""
        return np.column_stack([_column(rows, t) for t in self.terms]) if rows else \
            np.zeros((0, len(self.terms)))

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predicted value of each row."""
        return self.design(rows) @ self.coef

    def predict_sum(self, rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
        """Sum over ``rows`` and its standard error (NaN when unknown)."""
        X = self.design(rows)
        y = X @ self.coef
        total = float(y.sum())
        xs = X.sum(axis=0)
        var = float(xs @ self.cov @ xs) + float(self.sigma_rel ** 2 * np.sum(y ** 2))
        return total, math.sqrt(var) if np.isfinite(var) else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Coefficients, errors and scatter (JSON-ready; NaN -> None)."""
        err = np.sqrt(np.clip(np.diag(self.cov), 0, None)) if self.cov.size else np.zeros(0)
        return {"terms": list(self.terms),
                "coef": {t: _num(c) for t, c in zip(self.terms, self.coef)},
                "coef_err": {t: _num(e) for t, e in zip(self.terms, err)},
                "sigma_rel": _num(self.sigma_rel), "dof": int(self.dof)}


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def fit_linear(rows: Sequence[Mapping[str, Any]], target: str, terms: Iterable[str],
               relative: bool = True, min_spread: float = 0.0) -> LinearFit:
    """Weighted least squares of ``target`` on the first admissible ``terms``.

    Parameters
    ----------
    rows : sequence of mapping
        Measurements holding ``target`` and the terms.
    target : str
    terms : iterable of str
        Candidate terms, most important first; at most ``len(rows) - 1``
        are used (at least one), a term whose column is constant is left out
        when ``const`` is among them (``min_spread``: the relative spread
        below which a column counts as constant), and a negative coefficient
        drops its term.
    relative : bool
        Weight by ``1 / target`` (relative errors).
    """
    if not rows:
        raise ValueError("no measurement to fit")
    y = np.array([float(r[target]) for r in rows])
    terms = list(terms)
    if "const" in terms:  # a constant column cannot be told from the constant term
        keep = []
        for t in terms:
            col = _column(rows, t)
            spread = np.ptp(col) / max(abs(col).max(), 1e-300) if t != "const" else 1.0
            if spread > min_spread:
                keep.append(t)
        terms = keep or ["const"]
    terms = terms[:max(1, len(rows) - 1)]
    w = 1.0 / np.maximum(np.abs(y), 1e-9) if relative else np.ones_like(y)
    while True:
        X = np.column_stack([_column(rows, t) for t in terms])
        coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
        if len(terms) > 1 and (coef < 0).any():
            terms.pop(int(np.argmin(coef)))
            continue
        if (coef < 0).any():
            coef = np.maximum(coef, 0.0)
        break
    dof = len(rows) - len(terms)
    resid = (y - X @ coef) * w
    if dof > 0:
        # few degrees of freedom make the scatter itself uncertain: widened to the Student-t
        # 1-sigma quantile (x1.84 with 1 dof, x1.32 with 2, x1.11 with 5)
        from scipy.stats import t as student
        widen = float(student.ppf(0.841345, dof)) / 1.0
        s2 = float(resid @ resid) / dof * widen ** 2
        A = (X * w[:, None]).T @ (X * w[:, None])
        cov = s2 * np.linalg.pinv(A)
        sigma = math.sqrt(s2) if relative else math.sqrt(s2) / max(float(np.mean(np.abs(y))), 1e-9)
    else:
        cov = np.full((len(terms), len(terms)), np.nan)
        sigma = float("nan")
    return LinearFit(terms, coef, cov, sigma, dof)


def makespan(times: Sequence[float], slots: int) -> float:
    """Wall time of running tasks of ``times`` on ``slots`` parallel slots,
    longest first to the least loaded slot (as a Dask scheduler fed all tiles
    at once does, up to ordering)."""
    if not len(times):
        return 0.0
    slots = max(1, int(slots))
    if slots >= len(times):
        return float(max(times))
    loads = [0.0] * slots
    for t in sorted(times, reverse=True):
        heapq.heapreplace(loads, loads[0] + float(t))
    return float(max(loads))


@dataclass
class CostModel:
    """Time and memory of tiles on the machine kind measured.

    Attributes
    ----------
    time : LinearFit
        core-s of a tile task.
    memory : LinearFit
        MB a tile task adds to its worker's resident memory.
    rss_base_mb : float
        Resting resident memory of a worker that has run tiles (the largest
        measured: lazy imports, caches and the heap the allocator keeps).
    rss_fresh_mb : float
        Resting resident memory of a warmed-up worker before its first tile
        (the median measured; ``rss_base_mb`` when unknown).
    wall_factor : dict
        ``"machine/workers/threads"`` -> median wall / core-s of the tasks
        run in that setting (contention, I/O, other load).
    speed : dict
        machine -> core-s measured there / predicted by ``time`` (1 for the
        machine the time model was fitted on).
    machine : str
        The machine kind ``time`` was fitted on.
    warmup_s : float
        Imports a fresh worker does before its first tile (median measured).
    merge_fixed_s, merge_tile_s, merge_row_s : float
        The run's merge of the tile catalogs (on the client, after the tiles):
        seconds of any merge, per tile and per catalog row, timed on the
        sampled tiles.
    rows_per_source : float
        Catalog rows per detected source (the sample's merged rows over its
        sources).
    """

    time: LinearFit
    memory: LinearFit
    rss_base_mb: float
    wall_factor: dict[str, float] = dc_field(default_factory=dict)
    speed: dict[str, float] = dc_field(default_factory=dict)
    machine: str = "local"
    warmup_s: float = 0.0
    rss_fresh_mb: float | None = None
    merge_fixed_s: float = 0.0
    merge_tile_s: float = 0.0
    merge_row_s: float = 0.0
    rows_per_source: float = 1.0

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, Any]]) -> "CostModel":
        """Fit to measured tile rows (``state == ok``; keys of
        :data:`TIME_TERMS`, ``core_s``, ``wall_s``, ``peak_rss_mb``,
        ``rss_before_mb``, ``machine``, ``workers``, ``threads``)."""
        ok = [r for r in rows if r.get("state", "ok") == "ok" and r.get("core_s", 0) > 0]
        if not ok:
            raise ValueError("no tile was measured successfully: nothing to fit")
        machine = ok[0]["machine"]
        mine = [r for r in ok if r["machine"] == machine]
        time_fit = fit_linear(mine, "core_s", TIME_TERMS, relative=True, min_spread=0.05)
        speed = {}
        for m in dict.fromkeys(r["machine"] for r in ok):
            sub = [r for r in ok if r["machine"] == m]
            speed[m] = 1.0 if m == machine else \
                float(np.median([r["core_s"] for r in sub] / time_fit.predict(sub)))
        single = [r for r in ok if int(r.get("threads", 1)) == 1] or ok
        # what a tile adds to its worker, from the worker's size when the task started
        single = [dict(r, rss_rise_mb=max(r["peak_rss_mb"] - r["rss_before_mb"], 1e-3)) for r in single]
        mpix = np.array([r["mpix"] for r in single])
        # a constant needs tiles of different sizes; without them the rise is taken as
        # proportional to the pixels (and sources), conservative for larger tiles
        spread = np.ptp(mpix) / max(mpix.max(), 1e-12)
        terms = MEMORY_TERMS if spread > 0.2 else MEMORY_TERMS[:-1]
        # unweighted: the largest tiles set a worker's memory, not the relative error of small ones
        mem_fit = fit_linear(single, "rss_rise_mb", terms, relative=False)
        # a worker at rest after real tiles (lazy imports, caches, heap kept by the allocator)
        base = float(max(max(_base(r), r["rss_before_mb"], float(r.get("rss_after_mb") or 0.0))
                         for r in ok))
        factors = {}
        for key in dict.fromkeys(_setting(r) for r in ok):
            sub = [r for r in ok if _setting(r) == key]
            factors[key] = float(np.median([r["wall_s"] / r["core_s"] for r in sub]))
        warm = float(np.median([r.get("warmup_s", 0.0) for r in mine]))
        fresh = float(np.median([_base(r) for r in ok]))
        return cls(time_fit, mem_fit, base, factors, speed, machine, warm, min(fresh, base))

    # -- predictions -------------------------------------------------------------------------
    def core_s(self, tiles: Sequence[Mapping[str, Any]], machine: str | None = None) -> np.ndarray:
        """Predicted core-s of each tile (on ``machine``: its measured speed)."""
        return self.time.predict(tiles) * self.speed.get(machine or self.machine, 1.0)

    def total_core_s(self, tiles: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
        """Predicted core-s of all ``tiles`` on the machine measured, and its error."""
        return self.time.predict_sum(tiles)

    def peak_rss_mb(self, tiles: Sequence[Mapping[str, Any]], threads: int = 1) -> np.ndarray:
        """Predicted peak resident memory of a worker running each tile
        (``threads`` tiles of that size at once)."""
        fresh = self.rss_base_mb if self.rss_fresh_mb is None else self.rss_fresh_mb
        return np.maximum(self.rss_base_mb, fresh + threads * self.memory.predict(tiles))

    def with_merge(self, timings: Sequence[tuple[int, int, float]], rows_per_source: float,
                   min_span: int = 100) -> "CostModel":
        """This model with the merge's cost fitted to ``(tiles, rows,
        seconds)`` timings, the first one cold (first-use costs, paid once by
        a run): seconds = fixed + per tile + per row by least squares on the
        warm ones (the row term only when their rows span ``min_span`` or
        more: below that it is timing noise; a negative term is dropped),
        plus the cold excess in the fixed part."""
        if not timings:
            return replace(self, rows_per_source=float(rows_per_source))
        warm = np.array(timings[1:] or timings, float)
        x, sec = warm[:, :2], warm[:, 2]      # columns: tiles, rows
        cols = [c for c in (0, 1) if np.ptp(x[:, c]) >= (1 if c == 0 else min_span)]
        coef = np.zeros(2)
        while cols:
            a = np.column_stack([np.ones(len(sec)), x[:, cols]])
            sol = np.linalg.lstsq(a, sec, rcond=None)[0][1:]
            if sol.min() >= 0:
                coef[cols] = sol
                break
            cols.pop(int(np.argmin(sol)))
        fixed = max(float(np.median(sec - x @ coef)), 0.0)
        cold_tiles, cold_rows, cold_s = timings[0]
        fixed += max(cold_s - fixed - coef[0] * cold_tiles - coef[1] * cold_rows, 0.0)
        return replace(self, merge_fixed_s=fixed, merge_tile_s=float(coef[0]), merge_row_s=float(coef[1]),
                       rows_per_source=float(rows_per_source))

    def merge_s(self, n_tiles: int, n_sources: float) -> float:
        """Predicted seconds of the run's merge of ``n_tiles`` tiles holding
        ``n_sources`` detections."""
        return (self.merge_fixed_s + self.merge_tile_s * n_tiles
                + self.merge_row_s * self.rows_per_source * float(n_sources))

    def factor(self, machine: str, workers: int, threads: int) -> float:
        """Wall / core-s factor of a setting: the measured one, else the
        measured setting with the same threads and the most workers (a full
        machine), else the median of all, else 1."""
        key = f"{machine}/{workers}/{threads}"
        if key in self.wall_factor:
            return self.wall_factor[key]
        same = [(int(k.split("/")[1]), v) for k, v in self.wall_factor.items()
                if k.split("/")[2] == str(threads)]
        if same:
            return max(same)[1]
        return float(np.median(list(self.wall_factor.values()))) if self.wall_factor else 1.0

    def thread_penalty(self, threads: int) -> float:
        """Wall / core-s factor of ``threads`` threads per worker relative to
        single-threaded workers on the machine measured (1 for one thread, or
        when either was not measured)."""
        if threads == 1:
            return 1.0
        keys = [k for k in self.wall_factor if k.startswith(self.machine + "/")]
        if not any(k.endswith(f"/{threads}") for k in keys) or not any(k.endswith("/1") for k in keys):
            return 1.0
        return self.factor(self.machine, 10 ** 6, threads) / self.factor(self.machine, 10 ** 6, 1)

    def relative_error(self, tiles: Sequence[Mapping[str, Any]]) -> float:
        """Relative standard error of the field's total core-s (NaN: unknown)."""
        total, err = self.total_core_s(tiles)
        return err / total if total > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The fitted coefficients (``sizing.json``'s ``model``)."""
        return {"machine": self.machine,
                "time": {"target": "core_s per tile", **self.time.to_dict()},
                "memory": {"target": "MB a tile adds to its worker's resident memory",
                           **self.memory.to_dict()},
                "rss_base_mb": round(self.rss_base_mb, 1),
                "rss_fresh_mb": None if self.rss_fresh_mb is None else round(self.rss_fresh_mb, 1),
                "wall_factor": {k: round(v, 4) for k, v in self.wall_factor.items()},
                "speed": {k: round(v, 4) for k, v in self.speed.items()},
                "warmup_s": round(self.warmup_s, 3),
                "merge": {"fixed_s": round(self.merge_fixed_s, 3), "per_tile_s": round(self.merge_tile_s, 4),
                          "per_row_s": round(self.merge_row_s, 6),
                          "rows_per_source": round(self.rows_per_source, 3)}}


def _base(row: Mapping[str, Any]) -> float:
    """A worker's resting memory in a row's setting: measured after its
    warm-up (``rss_base_mb``), else when the task started."""
    return float(row.get("rss_base_mb") or row["rss_before_mb"])


def _setting(row: Mapping[str, Any]) -> str:
    return f"{row['machine']}/{int(row['workers'])}/{int(row['threads'])}"
