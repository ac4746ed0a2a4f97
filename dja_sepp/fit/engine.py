"""The built-in engine: multi-band Sersic / bulge+disk fits of a tile's sources.

Sources deblended from one detection (same ``PARENT_ID``) are fitted jointly
(at most ``max_group_size`` together, members fainter than ``solo_ratio`` of
the brightest one alone); groups are fitted brightest first and
each fitted group's model is subtracted from the working images, so fainter
neighbours see cleaner pixels; pixels of other, not yet modelled segments are
masked. A second pass refits every group on the data minus all *other*
models (iterative neighbour subtraction), which removes the bias from the
wings of fainter neighbours that the first pass could not see. Windows are
sized from the detection footprint (Kron ellipse, bbox) and the PSF.

After the first pass, the residual of all models is searched for sources
(``fit.residual_detection``, :mod:`dja_sepp.detect.residual`): faint
neighbours that deblending left inside a brighter source would otherwise
lend it their light. The tile core's new sources with S/N >=
``fit.residual_min_snr`` join the second pass; those still that significant
once fitted, and seen in most bands, stay, and they and the groups whose
windows hold them are fitted once more, each with the other's model
subtracted.

Before its first fit, a source whose segment's light is explained by the
models already subtracted (a spike or ring of a star, a lump of a brighter
galaxy) is not fitted and is flagged ``EXPLAINED``; a single source that a
point-source fit explains as well as the galaxy model becomes ``MODEL =
point`` (see :mod:`.triage`). Nothing raises for one bad source: it is flagged.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import Table

from .. import progress
from ..models.definition import detection_context, load_model
from ..settings import default_config
from .base import BandCutout, Engine
from .catalog import empty_results, fill_point_row, fill_row, finalize, render_catalog
from .flags import FitFlag
from .forked import shared_array
from .parallel import ParallelPass
from .render import BandGrid
from .residual_pass import ResidualPass
from .solver import BandData, fit_group, render_group
from .subtraction import model_reach, reach_bound, subtraction_grid
from .triage import band_box, is_explained, prefer_point, segment_flux, segments_on_band
from .windows import det_window, make_groups

__all__ = ["BuiltinEngine", "make_groups", "band_affine"]

log = logging.getLogger(__name__)

#: the ``fit:`` section of the shipped ``config/defaults.yaml`` (defaults live there only)
DEFAULTS: dict[str, Any] = default_config()["fit"]


def _groups_to_fit(sources: Table, in_core: np.ndarray, opts: Mapping[str, Any]) -> list[np.ndarray]:
    """Groups with a source in the tile core, and groups of the overlap with
    detection S/N >= ``overlap_min_snr`` (both passes): the core's neighbours must see a
    bright star's spikes and rings (or a bright galaxy's wings) subtracted,
    although its row comes from the neighbouring tile."""
    snr = np.nan_to_num(np.asarray(sources["SNR"], float)) if "SNR" in sources.colnames \
        else np.zeros(len(sources))
    groups = make_groups(sources, int(opts["max_group_size"]), float(opts["solo_ratio"]))
    return [g for g in groups if in_core[g].any() or snr[g].max() >= float(opts["overlap_min_snr"])]


def _subtraction_reach(affines, psf_radius: int) -> int:
    """How far beyond its window a fitted model is ever subtracted, in
    detection pixels: ``fit.psf_radius`` band pixels on the coarsest band."""
    scale = min((float(np.sqrt(abs(np.linalg.det(a)))) for a, _ in affines), default=1.0)  # band px per det px
    return int(np.ceil(psf_radius / scale))


def _reaching_the_core(groups: list[np.ndarray], sources: Table, in_core: np.ndarray, shape,
                       reach: int, opts: Mapping[str, Any]) -> list[np.ndarray]:
    """The core's groups, and the halo's groups whose subtracted model (their
    window grown by ``reach``) can touch a core group's window.

    The others change no pixel any core source is fitted on: their rows come
    from another tile, so fitting them only cost time (a quarter of a small
    tile's, more with a wide ``tiling.overlap``)."""
    core = [g for g in groups if in_core[g].any()]
    if not core:
        return []
    wins = [det_window(sources, g, shape, opts) for g in core]
    y0, y1 = min(w[0].start for w in wins), max(w[0].stop for w in wins)
    x0, x1 = min(w[1].start for w in wins), max(w[1].stop for w in wins)
    keep = []
    for g in groups:
        if in_core[g].any():
            keep.append(g)
            continue
        w = det_window(sources, g, shape, opts)
        if (w[0].start - reach < y1 and w[0].stop + reach > y0
                and w[1].start - reach < x1 and w[1].stop + reach > x0):
            keep.append(g)
    return keep


def band_affine(det: BandCutout, band: BandCutout) -> tuple[np.ndarray, np.ndarray]:
    """Affine map of detection-cutout pixels to band-cutout pixels (``A, t``),
    from the two WCS at the cutout centre (exact for DJA's aligned grids)."""
    cy, cx = (det.shape[0] - 1) / 2.0, (det.shape[1] - 1) / 2.0
    pts = np.array([[cx, cy], [cx + 1.0, cy], [cx, cy + 1.0]])
    world = det.wcs.pixel_to_world_values(pts[:, 0], pts[:, 1])
    bx, by = band.wcs.world_to_pixel_values(*world)
    a = np.array([[bx[1] - bx[0], bx[2] - bx[0]], [by[1] - by[0], by[2] - by[0]]])
    t = np.array([bx[0], by[0]]) - a @ pts[0]
    return a, t


class BuiltinEngine(Engine):
    """Variable-projection Levenberg-Marquardt fits (see :mod:`dja_sepp.fit.solver`)."""

    name = "builtin"

    def fit(self, sources: Table, detection: BandCutout, bands: Sequence[BandCutout],
            model: str, options: Mapping[str, Any] | None = None) -> Table:
        opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if k in DEFAULTS}}
        mdef = load_model(model)
        names = [b.band for b in bands]
        out = empty_results(len(sources), mdef, names)
        if len(sources) == 0:
            return finalize(out, sources, detection, mdef, names)
        in_core = np.asarray(sources["IN_CORE"], bool) if "IN_CORE" in sources.colnames \
            else np.ones(len(sources), bool)
        affines = {b.band: band_affine(detection, b) for b in bands}
        groups = _groups_to_fit(sources, in_core, opts)
        groups = _reaching_the_core(groups, sources, in_core, detection.shape, _subtraction_reach(
            affines.values(), int(opts["psf_radius"])), opts)
        # the working images (data minus the models subtracted so far): float32
        # like the mosaics, so a 2' tile of 8 bands holds 1.6 GB less than in float64;
        # in shared memory when fit processes subtract models from them
        copy = shared_array if int(opts["processes"]) > 1 else (lambda a: np.array(a, dtype=np.float32))
        work = {b.band: copy(b.sci) for b in bands}
        state = _TileState(sources, detection, bands, work, affines, mdef, opts, out)
        state.in_core = in_core
        passes = max(1, int(opts["passes"]))
        progress.begin(sum(len(g) for g in groups))  # the driver's bar counts sources fitted
        first_new = len(groups)
        for npass in range(passes):
            state.fit_pass(groups, range(len(groups)), npass, 1.0 / passes)
            if npass == 0 and opts["residual_detection"]:
                groups = groups + state.add_residual_sources()
                if passes == 1:  # the new sources still need their fit
                    state.fit_pass(groups, range(first_new, len(groups)), 0, 0.0)
        if len(groups) > first_new:
            state.settle_residual_sources(groups, first_new, passes)
        out = state.out
        out["FIT_DURATION"][:] = state.duration  # (wall seconds, shared by the members of a group)
        if state.refits_skipped:
            log.debug("%d of %d second-pass refits skipped (pixels unchanged)", state.refits_skipped,
                      len(groups) * (passes - 1))
        out["FLAGS"][~state.in_core & ~state.modelled] |= int(FitFlag.NOT_FITTED)
        keep = np.r_[np.ones(len(sources), bool), ~state.dropped[len(sources):]]
        table = finalize({k: v[keep] for k, v in out.items()}, state.sources[keep], state.det, mdef, names)
        if state.helper_cpu_s:  # fit threads' and processes' CPU: not in the calling thread's
            table.meta["HELPER_CPU"] = state.helper_cpu_s
        if state.helper_mb:  # nor is their memory in this process's
            table.meta["HELPER_MB"] = state.helper_mb
        if keep.sum() > len(sources):
            table.meta["RESIDUAL_SOURCES"] = state.sources[keep][len(sources):]
            table.meta["RESIDUAL_SEGMAP"] = state.det.segmap
        return table

    def render(self, catalog: Table, grid: BandCutout, model: str) -> np.ndarray:
        return render_catalog(catalog, grid, load_model(model))


class _TileState(ResidualPass, ParallelPass):
    """The working images of one tile and what has been fitted on them."""

    def __init__(self, sources, det, bands, work, affines, mdef, opts, out):
        self.sources, self.det, self.bands, self.work = sources, det, bands, work
        self.affines, self.mdef, self.opts, self.out = affines, mdef, opts, out
        self.point = load_model("point") if opts["point_choice"] and mdef.name != "point" else None
        self.modelled = np.zeros(len(sources), bool)
        self.explained = np.zeros(len(sources), bool)
        self.models: dict[int, dict] = {}
        self.fitted_on: dict[int, list] = {}  # group -> the pixels and weights of its last fit
        self.solutions: dict[int, tuple] = {}  # group -> (model, theta) of its last fit (warm starts)
        self.refits_skipped = 0
        self.helper_cpu_s = 0.0  # CPU seconds of the fit threads or processes (fit.threads, fit.processes)
        self.helper_mb = 0.0  # the fit processes' own memory (MB; their largest pass)
        # group -> (detection pixels its fit may read, and write, band -> farthest subtraction beyond its window)
        self.regions: dict[int, tuple] = {}
        self._count = threading.Lock()  # the counters below, when groups are fitted on threads
        self.restarts = 0   # bulge + disk fits started again from a small bulge
        self.in_core = np.ones(len(sources), bool)
        self.duration = np.zeros(len(sources))
        self.dropped = np.zeros(len(sources), bool)  # residual sources too faint once fitted
        self.fit_snr: dict[int, dict] = {}  # row -> band -> S/N of its last fit

    def regions_of(self, rows: np.ndarray) -> tuple[tuple[slice, slice], tuple[slice, slice], dict[str, int]]:
        """The detection pixels the group's fit may read (its window and its
        band windows, mapped back) and the ones its model may be subtracted
        from (the band windows grown by the farthest reach, mapped back), +1
        px; and that farthest reach (band px) beyond its window in each band
        (:func:`.subtraction.reach_bound`)."""
        win = det_window(self.sources, rows, self.det.shape, self.opts)
        bounds = {b.band: reach_bound(b, win, self.affines[b.band], self.opts) for b in self.bands}
        reads, writes = [win], [win]
        for b in self.bands:
            sl = band_box(win, self.affines[b.band], b.shape)
            if sl is not None:
                reads.append(_det_box(sl, self.affines[b.band]))
                writes.append(_det_box(_grown(sl, bounds[b.band]), self.affines[b.band]))
        return _grown(_hull(reads), 1), _grown(_hull(writes + reads), 1), bounds

    def _unchanged(self, gi: int, data: list) -> bool:
        """True when group ``gi``'s window holds the pixels of its last fit
        within ``fit.refit_min_change``: the same bands, slices and weights,
        and a data change whose noise-weighted norm ``sqrt(sum w dI^2)`` (all
        bands) is below it. To first order no fitted parameter (flux or shape)
        can move by more than that many of its standard errors."""
        limit = float(self.opts["refit_min_change"])
        before = self.fitted_on.get(gi)
        if limit <= 0 or before is None or len(before) != len(data):
            return False
        chi2 = 0.0
        for (name, sl, pix, weight), d in zip(before, data):
            if name != d.name or sl != d.meta_slice or not np.array_equal(weight, d.weight):
                return False
            chi2 += float(np.sum(weight * (d.data - pix) ** 2))
            if chi2 > limit * limit:
                return False
        return True

    def fit_rows(self, gi: int, rows: np.ndarray, npass: int) -> tuple[np.ndarray, dict, dict]:
        """Fit group ``gi`` in pass ``npass``; returns the rows it fitted, its
        previous model (band -> (slices, image)) to add back to the working
        images and the model to subtract from them: :meth:`apply_models`
        changes their pixels, never the fit (:mod:`.schedule`)."""
        out = self.out
        if npass == 0:
            rows = self._not_explained(rows)
        else:
            rows = rows[~self.explained[rows]]
        if not len(rows):
            return rows, {}, {}
        saved = {k: v[rows].copy() for k, v in out.items()} if gi in self.models else None
        previous = self.models.pop(gi, {})
        win, data = self._window_data(rows, previous)  # refit on data with every *other* model removed
        if saved is not None and self._unchanged(gi, data):
            # the other models moved this group's pixels by far less than the
            # noise (and unmasked none): a refit would return the same fit
            self.models[gi] = previous
            with self._count:
                self.refits_skipped += 1
            return rows, previous, previous
        out["FLAGS"][rows] = 0
        # (copies: the data may be views of the working images, which later models are subtracted from)
        pixels = [(d.name, d.meta_slice, d.data.copy(), d.weight) for d in data]
        fitted = self._fit_one(rows, win, data, gi)
        if fitted:
            self.models[gi] = fitted
            self.modelled[rows] = True
            self.fitted_on[gi] = pixels
            return rows, previous, fitted
        if saved is not None:  # the refit failed: keep the first pass, whose model stays subtracted
            for k, v in saved.items():
                out[k][rows] = v
            out["FLAGS"][rows] |= int(FitFlag.REFIT_FAILED)
            self.models[gi] = previous
        return rows, previous, previous

    def apply_models(self, previous: dict, subtracted: dict) -> None:
        """A fit's change to the working images: its previous model added
        back, its new one subtracted (the pixel operations of the serial order)."""
        self._add(previous, +1.0)
        self._add(subtracted, -1.0)

    def _add(self, models: dict, sign: float) -> None:
        for name, (sl, img) in models.items():
            self.work[name][sl] += sign * img

    def _not_explained(self, rows: np.ndarray) -> np.ndarray:
        """Rows whose light the models subtracted so far do not explain; the
        others are flagged EXPLAINED and their pixels freed for neighbours."""
        s, opts = self.sources, self.opts
        keep = []
        for r in rows:
            bbox = (slice(int(s["YMIN"][r]), int(s["YMAX"][r]) + 1),
                    slice(int(s["XMIN"][r]), int(s["XMAX"][r]) + 1))
            flux = segment_flux(self.det.segmap, int(s["SEGMENT_ID"][r]), bbox, self.bands,
                                self.work, self.affines) if self.det.segmap is not None else None
            if flux is not None and is_explained(flux, float(opts["reject_snr"]),
                                                 float(opts["reject_explained"]),
                                                 float(opts["reject_model_error"])):
                self.explained[r] = self.modelled[r] = True
                self.out["FLAGS"][r] |= int(FitFlag.EXPLAINED)
                self.out["STOP_REASON"][r] = "explained_by_neighbour"
            else:
                keep.append(r)
        return np.array(keep, dtype=int)

    def _window_data(self, rows: np.ndarray, previous: dict) -> tuple[tuple[slice, slice], list]:
        """The group's detection window and each band's pixels over it, with
        the group's ``previous`` model added back (copies where it was)."""
        s, det, opts = self.sources, self.det, self.opts
        win = det_window(s, rows, det.shape, opts)
        seg_ids = set(int(v) for v in np.asarray(s["SEGMENT_ID"])[rows])
        # segments already modelled were subtracted: their pixels are usable
        done = set(int(v) for v in np.asarray(s["SEGMENT_ID"])[self.modelled])
        data = []
        for b in self.bands:
            bd = _band_data(b, det, win, self.affines[b.band], self.work[b.band], seg_ids | done, opts,
                            previous.get(b.band))
            if bd is not None and bd.npix > 0:
                data.append(bd)
        return win, data

    def _fit_one(self, rows: np.ndarray, win, data: list, gi: int) -> dict:
        """Fit group ``gi`` on its window's pixels (``data``) and return its
        model over the region it is subtracted from (band -> (slice, image));
        flags the rows on failure.

        A refit starts from the group's previous solution with the same model
        and members (warm start): the neighbours' models moved its pixels a
        little, so the optimum moved a little too. It also keeps that model:
        a source the first pass called a point is refitted as a point only, a
        galaxy as a galaxy only (the point-or-galaxy choice is made once)."""
        s, det, opts, out = self.sources, self.det, self.opts, self.out
        contexts = [detection_context(s[r], det.pixel_scale) for r in rows]
        names = [d.name for d in data]
        prev_model, prev_rows, prev_theta = self.solutions.get(gi, (None, None, None))
        warm = prev_theta if prev_rows is not None and np.array_equal(prev_rows, rows) else None
        fit, mdef = None, self.mdef
        chosen = prev_model if warm is not None else None
        # a star of the PSF step is a point source by construction
        if self._psf_star(rows) or (chosen is not None and chosen is self.point):
            fit, mdef = self._solve(self.point, rows, contexts, data, win, quiet=True,
                                    warm=warm if prev_model is self.point else None), self.point
        if fit is None:
            fit, mdef = self._solve(self.mdef, rows, contexts, data, win,
                                    warm=warm if prev_model is self.mdef else None), self.mdef
        if fit is None:
            return {}
        if mdef is not self.point and chosen is None and self._try_point(rows):
            pfit = self._solve(self.point, rows, contexts, data, win, quiet=True,
                               warm=warm if prev_model is self.point else None)
            extra = len(mdef.parameter_names) - 2 + len(data) * (len(mdef.components) - 1)
            if pfit is not None and prefer_point(fit.chi2, pfit.chi2, fit.n_pix, extra,
                                                 float(opts["point_tolerance"]), self._snr(rows[0])):
                fit, mdef = pfit, self.point
        self.solutions[gi] = (mdef, rows.copy(), fit.theta.copy())
        for k, r in enumerate(rows):  # S/N of each member's total flux per band
            self.fit_snr[int(r)] = {n: float(np.sum(fit.fluxes[n][k]) / max(
                np.sqrt(np.sum(np.asarray(fit.flux_err[n])[k] ** 2)), 1e-300)) for n in names}
        for k, r in enumerate(rows):
            if mdef is self.point:
                fill_point_row(out, r, fit, names)
            else:
                fill_row(out, r, k, fit, mdef, names, blended=len(rows) > 1)
        subtracted = {}
        for d in data:  # the group's model, subtracted: neighbours fitted later see clean pixels
            reach = min(model_reach(d, float(np.nansum(fit.fluxes[d.name])), int(opts["psf_radius"]),
                                     float(opts["subtract_below"])), self.regions[gi][2][d.name])
            sl, grid = subtraction_grid(d, self.affines[d.name], self.work[d.name].shape, reach)
            subtracted[d.name] = (sl, render_group(mdef, fit.theta, fit.fluxes[d.name], grid))
        return subtracted

    def _snr(self, row: int) -> float:
        return float(self.sources["SNR"][row]) if "SNR" in self.sources.colnames else np.inf

    def _psf_star(self, rows: np.ndarray) -> bool:
        return (self.point is not None and len(rows) == 1 and "PSF_STAR" in self.sources.colnames
                and bool(self.sources["PSF_STAR"][rows[0]]))

    def _try_point(self, rows: np.ndarray) -> bool:
        """A point-source fit is tried for single, significant detections."""
        if self.point is None or len(rows) != 1:
            return False
        return self._snr(rows[0]) >= float(self.opts["point_min_snr"])

    def _solve(self, mdef, rows, contexts, data, win, quiet: bool = False, warm=None):
        """Fit ``mdef`` to the group (detection-frame parameters) or flag the
        rows and return None (unless ``quiet``: a trial fit flags nothing).
        ``warm``: starting values (detection frame) instead of the model's
        initial ones, kept inside the ranges."""
        out, opts = self.out, self.opts
        inits = [mdef.initial(c) for c in contexts]
        starts = np.array([i[0] for i in inits]) if warm is None else _inside(warm, [i[1] for i in inits])
        ranges = [i[1] for i in inits]
        n_free = starts.size + len(data) * len(rows) * len(mdef.components)
        if not data or sum(d.npix for d in data) <= n_free:
            if not quiet:
                out["FLAGS"][rows] |= int(FitFlag.INSUFFICIENT_DATA)
            return None
        x0, y0 = win[1].start, win[0].start
        for st in starts:  # the solver works in window coordinates
            st[0] -= x0
            st[1] -= y0
        for r in ranges:
            r[0] = type(r[0])(r[0].kind, r[0].lo - x0, r[0].hi - x0)
            r[1] = type(r[1])(r[1].kind, r[1].lo - y0, r[1].hi - y0)
        try:
            if warm is None and opts.get("bd_staged") and {"bulge", "disk"} <= {c.name for c in mdef.components}:
                starts = self._staged_starts(mdef, starts, ranges, contexts, data, x0, y0)
            fit = fit_group(mdef, starts, ranges, contexts, data, int(opts["max_iterations"]),
                            float(opts["tolerance"]))
            fit = self._restart_bulge(mdef, fit, starts, ranges, contexts, data)
        except Exception as exc:  # flagged, never fatal for the tile
            if not quiet:
                log.warning("fit of source rows %s failed: %s: %s", list(rows), type(exc).__name__, exc)
                out["FLAGS"][rows] |= int(FitFlag.ERROR)
                out["STOP_REASON"][rows] = f"error: {type(exc).__name__}"[:32]
            return None
        fit.theta[:, 0] += x0
        fit.theta[:, 1] += y0
        return fit


    def _staged_starts(self, mdef, starts, ranges, contexts, data, x0, y0):
        """Bulge + disk starts from a single-Sersic fit (``fit.bd_staged``):
        centre, angle and disk axis ratio from it, the disk r_e 1.2 and the
        bulge r_e 0.3 x its r_e (window coordinates, inside the ranges)."""
        from .geometry import ellipticity
        smdef = load_model("sersic")
        sin = [smdef.initial(c) for c in contexts]
        sst = np.array([i[0] for i in sin])
        srg = [i[1] for i in sin]
        for st, r in zip(sst, srg):
            st[0] -= x0
            st[1] -= y0
            r[0] = type(r[0])(r[0].kind, r[0].lo - x0, r[0].hi - x0)
            r[1] = type(r[1])(r[1].kind, r[1].lo - y0, r[1].hi - y0)
        sfit = fit_group(smdef, sst, srg, contexts, data, int(self.opts["max_iterations"]),
                         float(self.opts["tolerance"]))
        sn = {p: j for j, p in enumerate(smdef.parameter_names)}
        names = mdef.parameter_names
        comps = {c.name: c for c in mdef.components}
        new = starts.copy()
        for i in range(len(starts)):
            th = sfit.theta[i]
            q, phi, _ = ellipticity(th[sn["e1"]], th[sn["e2"]])
            want = {"x": th[sn["x"]], "y": th[sn["y"]]}
            geo_b, geo_d = comps["bulge"].geometry, comps["disk"].geometry
            for key, value in ((geo_d.get("re"), 1.2 * th[sn["re"]]), (geo_b.get("re"), 0.3 * th[sn["re"]]),
                               (geo_d.get("q"), q), (geo_d.get("angle"), phi)):
                if isinstance(key, str):
                    want[key] = value
            for key, value in want.items():
                j = names.index(key)
                rr = ranges[i][j]
                if rr.kind == "free":
                    new[i, j] = value
                else:
                    span = rr.hi - rr.lo
                    new[i, j] = float(np.clip(value, rr.lo + 1e-3 * span, rr.hi - 1e-3 * span))
        return new

    def _restart_bulge(self, mdef, fit, starts, ranges, contexts, data):
        """A bulge + disk fit that ended with a shape parameter at a bound or
        its bulge larger than its disk is fitted again from a small bulge
        (``fit.bd_restart`` x its starting r_e) inside the same disk; the fit
        with the lower objective (chi2 + priors) is kept.

        Bulge and disk start at the same r_e (SE++'s ``o.radius`` for both):
        from there the fit can as well grow the bulge into the outer light as
        shrink it into the core, and the first lands on r_b's upper bound
        with B/T ~ 0.5 (measured: 3 of 18 bright fits, B/T off by 0.2-0.35).
        """
        factor = float(self.opts.get("bd_restart") or 0.0)
        comps = {c.name: c for c in mdef.components}
        if factor <= 0 or not {"bulge", "disk"} <= set(comps):
            return fit
        names = mdef.parameter_names
        rb, rd = comps["bulge"].geometry.get("re"), comps["disk"].geometry.get("re")
        if not (isinstance(rb, str) and isinstance(rd, str)):
            return fit
        jb, jd = names.index(rb), names.index(rd)
        swapped = fit.theta[:, jb] > fit.theta[:, jd]
        if not (swapped.any() or np.any(fit.at_bound[:, 2:])):
            return fit
        alt = starts.copy()
        for i, rr in enumerate(ranges):
            lo, hi = rr[jb].lo, rr[jb].hi
            alt[i, jb] = float(np.clip(factor * starts[i, jb], lo + 1e-3 * (hi - lo), hi))
        second = fit_group(mdef, alt, ranges, contexts, data, int(self.opts["max_iterations"]),
                           float(self.opts["tolerance"]))
        with self._count:
            self.restarts += 1
        if second.objective < fit.objective:
            second.n_iter += fit.n_iter
            return second
        fit.n_iter += second.n_iter
        return fit


def _inside(theta: np.ndarray, ranges) -> np.ndarray:
    """``theta`` moved inside its ranges by 1 % of their span (in the
    optimiser's space a value at a bound has no gradient: it could not leave it)."""
    out = np.array(theta, dtype=float)
    for i, row in enumerate(ranges):
        for j, r in enumerate(row):
            if r.kind == "free":
                continue
            if r.kind == "linear":
                lo, hi = r.lo, r.hi
                out[i, j] = np.clip(out[i, j], lo + 0.01 * (hi - lo), hi - 0.01 * (hi - lo))
            else:
                span = np.log(r.hi / r.lo)
                out[i, j] = np.clip(out[i, j], r.lo * np.exp(0.01 * span), r.hi * np.exp(-0.01 * span))
    return out


def _band_data(band: BandCutout, det: BandCutout, win, affine, work, keep_segments, opts, model=None):
    """Pixels of ``band`` over the detection window, other segments masked;
    a view of ``work``, or a copy plus ``model`` (slices, image) where it is."""
    a, t = affine
    sl = band_box(win, affine, band.shape)
    if sl is None:
        return None
    y_lo, y_hi, x_lo, x_hi = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
    weight = np.array(band.wht[sl], dtype=np.float64)
    if det.segmap is not None:
        seg = segments_on_band(det.segmap, affine, sl)
        other = (seg > 0) & ~np.isin(seg, list(keep_segments))
        weight[other] = 0.0
    # a variable PSF at the window's centre on the band mosaic (origin: the
    # cutout's place in it); a constant one ignores the position
    psf = band.psf.stamp(x=band.origin[1] + (x_lo + x_hi - 1) / 2.0,
                         y=band.origin[0] + (y_lo + y_hi - 1) / 2.0, oversampling=1)
    # PSF wings longer than the rendered region cannot reach the window: the
    # fit's kernel stops there (exact, and keeps the FFTs small)
    reach = max(y_hi - y_lo, x_hi - x_lo) + 2 * BandGrid.margin
    grid = BandGrid((y_hi - y_lo, x_hi - x_lo), a, t - np.array([x_lo, y_lo]) + a @ np.array(
        [win[1].start, win[0].start]), psf, int(min(opts["fit_psf_radius"], psf.shape[0] // 2, reach)))
    bd = BandData(band.band, grid, work[sl] if model is None else _plus(work, sl, model), weight, band.wavelength)
    bd.meta_slice = sl
    return bd


def _plus(work: np.ndarray, sl: tuple[slice, slice], model) -> np.ndarray:
    """A copy of ``work[sl]`` with ``model`` (slices, image) added where they
    overlap, as adding it to ``work`` would (the same float32 sums)."""
    out = work[sl].copy()
    msl, img = model
    y0, y1 = max(sl[0].start, msl[0].start), min(sl[0].stop, msl[0].stop)
    x0, x1 = max(sl[1].start, msl[1].start), min(sl[1].stop, msl[1].stop)
    if y1 > y0 and x1 > x0:
        out[y0 - sl[0].start:y1 - sl[0].start, x0 - sl[1].start:x1 - sl[1].start] += 1.0 * img[
            y0 - msl[0].start:y1 - msl[0].start, x0 - msl[1].start:x1 - msl[1].start]
    return out


def _grown(win: tuple[slice, slice], by: int) -> tuple[slice, slice]:
    return slice(win[0].start - by, win[0].stop + by), slice(win[1].start - by, win[1].stop + by)


def _hull(boxes: list[tuple[slice, slice]]) -> tuple[slice, slice]:
    return (slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes)),
            slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes)))


def _det_box(sl: tuple[slice, slice], affine) -> tuple[slice, slice]:
    """Detection pixels covering the band pixels ``sl`` (``affine``: detection -> band)."""
    a, t = affine
    ys, xs = (sl[0].start - 0.5, sl[0].stop - 0.5), (sl[1].start - 0.5, sl[1].stop - 0.5)
    corners = np.array([[x, y] for x in xs for y in ys]) - t
    det = corners @ np.linalg.inv(a).T
    lo, hi = np.floor(det.min(axis=0) + 0.5).astype(int), np.floor(det.max(axis=0) + 0.5).astype(int) + 1
    return slice(int(lo[1]), int(hi[1])), slice(int(lo[0]), int(hi[0]))
