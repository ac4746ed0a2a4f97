"""Detection on the residual of a tile's fitted models.

A faint galaxy 0.5-1.5" from a brighter one is often not split from it by
deblending: the bright galaxy's model then takes its light (on crowded
GalSim fields, bright galaxies with such a neighbour came out 1-2 % too
bright while isolated ones did not). Once every detected source is fitted
and subtracted, those neighbours stand out in what is left. This module
builds that residual on the detection grid from the bands that share it (or
an integer multiple of it), with the noise of each pixel raised by a
``tolerance`` fraction of the models there (a bright model's own mismatch
is not a source), and detects on it with the run's detection settings.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import Table

from ..io.cutout import BandCutout
from .cleaning import DetectionFlag
from .extract import DEFAULTS, detect_sources

__all__ = ["residual_cutout", "detect_residual", "grid_factor"]


def grid_factor(affine, tol: float = 1e-6) -> tuple[int, int, int] | None:
    """``(f, oy, ox)`` when a band's pixels tile the detection grid in
    blocks of ``f x f`` (detection pixel ``(y, x)`` = band pixels
    ``oy + f y .. oy + f y + f - 1``, same for x); None otherwise (rotated
    or non-integer grids)."""
    a, t = affine
    f = float(a[0, 0])
    fi = int(round(f))
    if fi < 1 or abs(f - fi) > tol or abs(a[1, 1] - f) > tol or abs(a[0, 1]) > tol or abs(a[1, 0]) > tol:
        return None
    off = np.asarray(t, float) - (fi - 1) / 2.0  # band index of the block's first pixel
    if np.any(np.abs(off - np.round(off)) > 1e-3):
        return None
    return fi, int(round(off[1])), int(round(off[0]))


def _blocks(img: np.ndarray, f: int, oy: int, ox: int, shape, fill: float) -> np.ndarray:
    """Sums of ``f x f`` blocks of ``img`` on the detection grid ``shape``
    (blocks outside ``img`` get ``fill``). An aligned cutout (the usual
    case) is summed in place: a 2' tile's 0.02" band is 6000^2 pixels."""
    ny, nx = shape
    if oy == 0 and ox == 0 and img.shape == (ny * f, nx * f):
        return img.reshape(ny, f, nx, f).sum(axis=(1, 3), dtype=np.float64)
    out = np.full((ny * f, nx * f), fill, dtype=np.float32)
    y0, x0 = max(oy, 0), max(ox, 0)
    y1, x1 = min(oy + ny * f, img.shape[0]), min(ox + nx * f, img.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = img[y0:y1, x0:x1]
    return out.reshape(ny, f, nx, f).sum(axis=(1, 3), dtype=np.float64)


def _add_blocks(target: np.ndarray, img: np.ndarray, sl: tuple[slice, slice], f: int, oy: int, ox: int) -> None:
    """Add the ``f x f`` block sums of ``img`` (band pixels ``sl``) into the
    detection-grid ``target`` (a model's own box, not a whole band)."""
    y0, x0 = sl[0].start - oy, sl[1].start - ox
    py, px = y0 % f, x0 % f
    h, w = img.shape
    rows, cols = -(-(py + h) // f), -(-(px + w) // f)
    buf = np.zeros((rows * f, cols * f))
    buf[py:py + h, px:px + w] = img
    sums = buf.reshape(rows, f, cols, f).sum(axis=(1, 3))
    ty, tx = (y0 - py) // f, (x0 - px) // f
    ys, xs = max(ty, 0), max(tx, 0)
    ye, xe = min(ty + rows, target.shape[0]), min(tx + cols, target.shape[1])
    if ye > ys and xe > xs:
        target[ys:ye, xs:xe] += sums[ys - ty:ye - ty, xs - tx:xe - tx]


def residual_cutout(det: BandCutout, bands: Sequence[BandCutout], work: Mapping[str, np.ndarray],
                    affines: Mapping[str, tuple], tolerance: float,
                    ignore: np.ndarray | None = None, points: Mapping[str, list] | None = None,
                    point_tolerance: float = 1.0) -> BandCutout | None:
    """Inverse-variance mean of the bands' residuals (``work``: data minus
    the subtracted models) on the detection grid, with weights lowered to
    ``1 / (sigma^2 + (tolerance x model)^2 + (point_tolerance x points)^2)``
    (``points``: the point-source models among them, per band a list of
    ``(slices, image)`` in band pixels: a PSF's rings and spikes are never exact) and zero where ``ignore`` (e.g. around
    sources that were not fitted: their light is still there); None when no
    band shares the detection grid."""
    num = np.zeros(det.shape)
    wsum = np.zeros(det.shape)
    model = np.zeros(det.shape)
    point = np.zeros(det.shape)
    for b in bands:
        grid = grid_factor(affines[b.band])
        if grid is None:
            continue
        f, oy, ox = grid
        # float32 band-sized temporaries only (a 0.02" band of a 2' tile: 144 MB each)
        wht = np.asarray(b.wht, np.float32)
        var = np.full(wht.shape, np.inf, np.float32)
        np.divide(np.float32(1.0), wht, out=var, where=wht > 0)
        var = _blocks(var, f, oy, ox, det.shape, np.inf)
        ok = np.isfinite(var) & (var > 0)
        w = np.divide(1.0, var, out=np.zeros_like(var), where=ok)
        res = _blocks(np.nan_to_num(np.asarray(work[b.band], np.float32)), f, oy, ox, det.shape, 0.0)
        sci = _blocks(np.nan_to_num(np.asarray(b.sci, np.float32)), f, oy, ox, det.shape, 0.0)
        num += w * res
        model += w * (sci - res)
        if points is not None and b.band in points:
            band_points = np.zeros(det.shape)
            for sl, img in points[b.band]:
                _add_blocks(band_points, img, sl, f, oy, ox)
            point += w * band_points
        wsum += w
    if not np.any(wsum > 0):
        return None
    good = wsum > 0
    mean = np.divide(num, wsum, out=np.zeros_like(num), where=good)
    mod = np.divide(model, wsum, out=np.zeros_like(num), where=good)
    pts = np.divide(point, wsum, out=np.zeros_like(num), where=good)
    var = (np.divide(1.0, wsum, out=np.full_like(num, np.inf), where=good) + (tolerance * mod) ** 2
           + (point_tolerance * pts) ** 2)
    weight = np.where(good, 1.0 / var, 0.0)
    if ignore is not None:
        weight[ignore] = 0.0
    return BandCutout("RESIDUAL", mean.astype(np.float32), weight.astype(np.float32), det.wcs,
                      origin=det.origin, pixel_scale=det.pixel_scale, zeropoint=det.zeropoint)


def detect_residual(det: BandCutout, residual: BandCutout, sources: Table,
                    config: Mapping[str, Any] | None, min_separation: float,
                    points: np.ndarray | None = None) -> tuple[Table, np.ndarray]:
    """Sources of the ``residual`` (detected with the ``detection:`` settings
    ``config``) farther than ``min_separation`` detection pixels from every
    row of ``sources`` and outside the rings of the ``points`` (rows of
    ``sources`` fitted as point sources: within ``near_bright_radius`` of one
    ``near_bright_dmag`` brighter, the PSF's mismatch dominates), and the
    detection segmentation with their segments laid over it.

    Each new source is its own parent (fitted alone) and carries
    ``DetectionFlag.RESIDUAL`` in ``FLAGS_DET``; its ``SEGMENT_ID`` follows
    the largest of ``det.segmap``. Its detection columns (``FLUX_AUTO``, the
    Kron radius, ...) are measured on the residual.
    """
    new, seg = detect_sources(residual, config)
    base = det.segmap if det.segmap is not None else np.zeros(det.shape, np.int32)
    if len(new) and len(sources):
        d = np.hypot(np.asarray(new["x"], float)[:, None] - np.asarray(sources["x"], float)[None, :],
                     np.asarray(new["y"], float)[:, None] - np.asarray(sources["y"], float)[None, :])
        keep = d.min(axis=1) > min_separation
        if points is not None and np.any(points):
            cfg = {**DEFAULTS, **(config or {})}
            ratio = 10 ** (-0.4 * float(cfg["near_bright_dmag"]))
            flux = np.nan_to_num(np.asarray(sources["FLUX_AUTO"], float))
            bright = d[:, points] < float(cfg["near_bright_radius"]) / det.pixel_scale
            fainter = np.asarray(new["FLUX_AUTO"], float)[:, None] < ratio * flux[points][None, :]
            keep &= ~np.any(bright & fainter, axis=1)
        new = new[keep]
    if not len(new):
        return new, base
    first = int(base.max()) + 1
    ids = np.zeros(int(seg.max()) + 1, dtype=np.int32)
    ids[np.asarray(new["SEGMENT_ID"], int)] = first + np.arange(len(new), dtype=np.int32)
    merged = np.where(ids[seg] > 0, ids[seg], base).astype(np.int32)
    # deblended pieces of one residual blob stay one group if all are kept
    parent = ids[np.clip(np.asarray(new["PARENT_ID"], int), 0, len(ids) - 1)]
    new["SEGMENT_ID"] = ids[np.asarray(new["SEGMENT_ID"], int)]
    new["PARENT_ID"] = np.where(parent > 0, parent, new["SEGMENT_ID"])
    new["FLAGS_DET"] = np.asarray(new["FLAGS_DET"]) | int(DetectionFlag.RESIDUAL)
    return new, merged
