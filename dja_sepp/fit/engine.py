"""The built-in engine: multi-band Sersic / bulge+disk fits of a tile's sources.

Sources deblended from one detection (same ``PARENT_ID``) are fitted jointly
(at most ``max_group_size`` together); groups are fitted brightest first and
each fitted group's model is subtracted from the working images, so fainter
neighbours see cleaner pixels; pixels of other, not yet modelled segments are
masked. A second pass refits every group on the data minus all *other*
models (iterative neighbour subtraction), which removes the bias from the
wings of fainter neighbours that the first pass could not see. Windows are sized from the detection footprint (Kron ellipse, bbox)
and the PSF. Nothing raises for one bad source: it is flagged.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import Table

from ..models.definition import ModelDefinition, detection_context, load_model
from .base import BandCutout, Engine
from .catalog import empty_results, fill_row, finalize, render_catalog
from .flags import FitFlag
from .render import BandGrid
from .solver import BandData, fit_group, render_group

__all__ = ["BuiltinEngine", "make_groups", "band_affine"]

log = logging.getLogger(__name__)

DEFAULTS = {"max_iterations": 500, "max_group_size": 3, "window_min": 15, "window_max": 500,
            "psf_radius": 150, "fit_psf_radius": 30, "window_kron": 1.0, "tolerance": 1e-6, "passes": 2}


def make_groups(sources: Table, max_size: int) -> list[np.ndarray]:
    """Row indices fitted together: one detection's deblended children when
    there are at most ``max_size`` of them, else each child alone.

    Joint fits cost ~(members x parameters)^2 per step; a large deblended
    complex is cheaper and as accurate fitted source by source, brightest
    first, each seeing its brighter neighbours subtracted and its fainter
    ones masked (see :class:`BuiltinEngine`).
    """
    parent = np.asarray(sources["PARENT_ID"]) if "PARENT_ID" in sources.colnames \
        else np.arange(len(sources))
    groups = []
    for pid in np.unique(parent):
        rows = np.flatnonzero(parent == pid)
        groups += [rows] if len(rows) <= max_size else [np.array([r]) for r in rows]
    return groups


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
        groups = [g for g in make_groups(sources, int(opts["max_group_size"])) if in_core[g].any()]
        groups.sort(key=lambda g: -float(np.nansum(np.asarray(sources["FLUX_AUTO"])[g])))
        work = {b.band: np.array(b.sci, dtype=np.float64) for b in bands}
        affines = {b.band: band_affine(detection, b) for b in bands}
        modelled = np.zeros(len(sources), bool)
        duration = np.zeros(len(sources))
        models: dict[int, dict] = {}
        for npass in range(max(1, int(opts["passes"]))):
            for gi, rows in enumerate(groups):
                start = time.perf_counter()
                for name, (sl, img) in models.pop(gi, {}).items():
                    work[name][sl] += img  # refit on data with every *other* model removed
                out["FLAGS"][rows] = 0
                models[gi] = self._fit_one(rows, sources, detection, bands, work, affines, modelled,
                                           mdef, opts, out)
                duration[rows] += (time.perf_counter() - start) / len(rows)
                modelled[rows] = True
        out["FIT_DURATION"][:] = duration
        out["FLAGS"][~in_core & ~modelled] |= int(FitFlag.NOT_FITTED)
        return finalize(out, sources, detection, mdef, names)

    def _fit_one(self, rows, sources, det, bands, work, affines, modelled, mdef, opts, out) -> dict:
        """Fit one group on the working images, subtract its model from them
        and return it (band -> (slice, image)); flags the rows on failure."""
        win = _det_window(sources, rows, det.shape, opts)
        seg_ids = set(int(s) for s in np.asarray(sources["SEGMENT_ID"])[rows])
        # segments already modelled were subtracted: their pixels are usable
        done = set(int(s) for s in np.asarray(sources["SEGMENT_ID"])[modelled])
        data = []
        for b in bands:
            bd = _band_data(b, det, win, affines[b.band], work[b.band], seg_ids | done, opts)
            if bd is not None and bd.npix > 0:
                data.append(bd)
        contexts = [detection_context(sources[r], det.pixel_scale) for r in rows]
        inits = [mdef.initial(c) for c in contexts]
        starts = np.array([i[0] for i in inits])
        ranges = [i[1] for i in inits]
        n_free = starts.size + len(data) * len(rows) * len(mdef.components)
        if not data or sum(d.npix for d in data) <= n_free:
            out["FLAGS"][rows] |= int(FitFlag.INSUFFICIENT_DATA)
            return {}
        x0, y0 = win[1].start, win[0].start
        for s in starts:  # the solver works in window coordinates
            s[0] -= x0
            s[1] -= y0
        for c, r in zip(contexts, ranges):
            r[0] = type(r[0])(r[0].kind, r[0].lo - x0, r[0].hi - x0)
            r[1] = type(r[1])(r[1].kind, r[1].lo - y0, r[1].hi - y0)
        try:
            fit = fit_group(mdef, starts, ranges, contexts, data, int(opts["max_iterations"]),
                            float(opts["tolerance"]))
        except Exception as exc:  # flagged, never fatal for the tile
            log.warning("fit of source rows %s failed: %s: %s", list(rows), type(exc).__name__, exc)
            out["FLAGS"][rows] |= int(FitFlag.ERROR)
            out["STOP_REASON"][rows] = f"error: {type(exc).__name__}"[:32]
            return {}
        fit.theta[:, 0] += x0
        fit.theta[:, 1] += y0
        for k, r in enumerate(rows):
            fill_row(out, r, k, fit, mdef, [d.name for d in data], blended=len(rows) > 1)
        subtracted = {}
        for d in data:  # subtract the group's model: neighbours fitted later see clean pixels
            sl, grid = _subtraction_grid(d, affines[d.name], work[d.name].shape,
                                         int(opts["psf_radius"]))
            img = render_group(mdef, fit.theta, fit.fluxes[d.name], grid)
            work[d.name][sl] -= img
            subtracted[d.name] = (sl, img)
        return subtracted

    def render(self, catalog: Table, grid: BandCutout, model: str) -> np.ndarray:
        return render_catalog(catalog, grid, load_model(model))


def _det_window(sources, rows, shape, opts) -> tuple[slice, slice]:
    """Detection-frame window around a group: Kron ellipses + bboxes + margin."""
    s = sources[rows]
    kron = np.asarray(s["KRON_RADIUS"], float) * np.asarray(s["A_IMAGE"], float)
    reach = np.maximum(float(opts["window_kron"]) * np.nan_to_num(kron, nan=5.0), 0.5 * float(opts["window_min"]))
    reach = np.minimum(reach, 0.5 * float(opts["window_max"]))
    x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
    x_lo = min(np.min(x - reach), np.min(np.asarray(s["XMIN"]) - 3))
    x_hi = max(np.max(x + reach), np.max(np.asarray(s["XMAX"]) + 3))
    y_lo = min(np.min(y - reach), np.min(np.asarray(s["YMIN"]) - 3))
    y_hi = max(np.max(y + reach), np.max(np.asarray(s["YMAX"]) + 3))
    return (slice(int(max(0, np.floor(y_lo))), int(min(shape[0], np.ceil(y_hi) + 1))),
            slice(int(max(0, np.floor(x_lo))), int(min(shape[1], np.ceil(x_hi) + 1))))


def _subtraction_grid(bd: BandData, affine, shape, psf_radius: int) -> tuple[tuple[slice, slice], BandGrid]:
    """The fit window grown by the PSF kernel's reach and half its own size:
    the galaxy and PSF wings outside the window bias fainter neighbours
    (0.02-0.03 mag, +5 % in n on 2.5" spacings) unless subtracted too."""
    a, t = affine
    sl = bd.meta_slice
    grow = min(max(psf_radius, (sl[0].stop - sl[0].start) // 2, (sl[1].stop - sl[1].start) // 2), 150)
    y_lo, x_lo = max(sl[0].start - grow, 0), max(sl[1].start - grow, 0)
    y_hi, x_hi = min(sl[0].stop + grow, shape[0]), min(sl[1].stop + grow, shape[1])
    grid = BandGrid((y_hi - y_lo, x_hi - x_lo), a, t - np.array([x_lo, y_lo]), bd.grid.psf,
                    int(min(psf_radius, bd.grid.psf.shape[0] // 2)))
    return (slice(y_lo, y_hi), slice(x_lo, x_hi)), grid


def _band_data(band: BandCutout, det: BandCutout, win, affine, work, keep_segments, opts):
    """Pixels of ``band`` over the detection window, other segments masked."""
    a, t = affine
    corners = np.array([[win[1].start - 0.5, win[0].start - 0.5], [win[1].stop - 0.5, win[0].stop - 0.5],
                        [win[1].start - 0.5, win[0].stop - 0.5], [win[1].stop - 0.5, win[0].start - 0.5]])
    bc = corners @ a.T + t
    x_lo, x_hi = int(np.floor(bc[:, 0].min() + 0.5)), int(np.ceil(bc[:, 0].max() - 0.5)) + 1
    y_lo, y_hi = int(np.floor(bc[:, 1].min() + 0.5)), int(np.ceil(bc[:, 1].max() - 0.5)) + 1
    x_lo, y_lo = max(x_lo, 0), max(y_lo, 0)
    x_hi, y_hi = min(x_hi, band.shape[1]), min(y_hi, band.shape[0])
    if x_hi <= x_lo or y_hi <= y_lo:
        return None
    sl = (slice(y_lo, y_hi), slice(x_lo, x_hi))
    weight = np.array(band.wht[sl], dtype=np.float64)
    if det.segmap is not None:
        yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
        ainv = np.linalg.inv(a)
        dx = ainv[0, 0] * (xx - t[0]) + ainv[0, 1] * (yy - t[1])
        dy = ainv[1, 0] * (xx - t[0]) + ainv[1, 1] * (yy - t[1])
        ix = np.clip(np.round(dx).astype(int), 0, det.shape[1] - 1)
        iy = np.clip(np.round(dy).astype(int), 0, det.shape[0] - 1)
        seg = det.segmap[iy, ix]
        other = (seg > 0) & ~np.isin(seg, list(keep_segments))
        weight[other] = 0.0
    psf = band.psf.stamp(oversampling=1)
    # PSF wings longer than the rendered region cannot reach the window: the
    # fit's kernel stops there (exact, and keeps the FFTs small)
    reach = max(y_hi - y_lo, x_hi - x_lo) + 2 * BandGrid.margin
    grid = BandGrid((y_hi - y_lo, x_hi - x_lo), a, t - np.array([x_lo, y_lo]) + a @ np.array(
        [win[1].start, win[0].start]), psf, int(min(opts["fit_psf_radius"], psf.shape[0] // 2, reach)))
    bd = BandData(band.band, grid, work[sl], weight, band.wavelength)
    bd.meta_slice = sl
    return bd
