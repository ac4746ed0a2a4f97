"""How much of each source's light a band covers, and what the catalog says.

Mosaics of different bands cover different areas (a band can be blank over
part of a tile). A source on the edge of a band's coverage has only part of
its light on pixels with data in that band: the fit extrapolates the rest
from the shape the other bands fix, and when little is left the band's flux
can be absurd (large, negative, with an error as large). For each source and
band, the coverage is the share of the source's detection-image light (its
detection segment, positive pixels) that falls on band pixels with a
positive weight. A row whose coverage in some band is below
``fit.coverage_flag`` gets the ``PARTIAL_COVERAGE`` flag and a
``COVERAGE_{BAND}`` value below 1; below ``fit.min_coverage`` the band's
model flux, magnitude and B/T (with their errors) are NaN: not measured.
A band with no data at all over the source (coverage 0) has NaN fluxes
already and does not set the flag.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from astropy.table import Table

from .base import BandCutout
from .flags import FitFlag

__all__ = ["source_coverage", "apply_coverage"]


def source_coverage(sources: Table, det: BandCutout, band: BandCutout, affine) -> np.ndarray:
    """Share of each source's detection light on pixels of ``band`` with data.

    ``affine`` maps detection-cutout pixels to band-cutout pixels (``A, t``,
    :func:`dja_sepp.fit.engine.band_affine`). Sources without a segment
    (``SEGMENT_ID`` missing or 0) get 1 when the band has data at their
    centroid, else 0.
    """
    n = len(sources)
    if n == 0:
        return np.zeros(0)
    a, t = affine
    seg_ids = np.asarray(sources["SEGMENT_ID"], int) if "SEGMENT_ID" in sources.colnames \
        else np.zeros(n, int)
    valid_band = band.wht > 0

    def has_data(x, y):
        bx = a[0, 0] * x + a[0, 1] * y + t[0]
        by = a[1, 0] * x + a[1, 1] * y + t[1]
        ix, iy = np.rint(bx).astype(int), np.rint(by).astype(int)
        inside = (ix >= 0) & (iy >= 0) & (ix < band.shape[1]) & (iy < band.shape[0])
        ok = np.zeros(ix.shape, bool)
        ok[inside] = valid_band[iy[inside], ix[inside]]
        return ok

    centre = has_data(np.asarray(sources["x"], float), np.asarray(sources["y"], float)) \
        .astype(float)
    if det.segmap is None:
        return centre
    ys, xs = np.nonzero(det.segmap)
    ids = det.segmap[ys, xs]
    light = np.clip(np.nan_to_num(np.asarray(det.sci[ys, xs], float)), 0.0, None)
    # a tiny floor: a segment of non-positive pixels still counts its area
    light = light + 1e-6 * (light.max() if light.size and light.max() > 0 else 1.0)
    covered = has_data(xs.astype(float), ys.astype(float))
    size = int(max(ids.max(initial=0), seg_ids.max(initial=0))) + 1
    total = np.bincount(ids, light, minlength=size)
    good = np.bincount(ids, light * covered, minlength=size)
    out = centre.copy()
    has_seg = (seg_ids > 0) & (total[np.clip(seg_ids, 0, size - 1)] > 0)
    out[has_seg] = good[seg_ids[has_seg]] / total[seg_ids[has_seg]]
    return out


def apply_coverage(fitted: Table, sources: Table, det: BandCutout, bands: Sequence[BandCutout],
                   options: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Add ``COVERAGE_{BAND}`` to ``fitted`` (one row per source), flag
    ``PARTIAL_COVERAGE`` and blank the band's fluxes below ``min_coverage``;
    returns band -> coverage."""
    from .engine import band_affine
    flag_below = float(options.get("coverage_flag", 0.99))
    blank_below = float(options.get("min_coverage", 0.5))
    out = {}
    partial = np.zeros(len(fitted), bool)
    for band in bands:
        cov = source_coverage(sources, det, band, band_affine(det, band))
        out[band.band] = cov
        fitted[f"COVERAGE_{band.band}"] = cov.astype(np.float32)
        partial |= (cov > 0) & (cov < flag_below)
        low = cov < blank_below
        if low.any():
            for name in fitted.colnames:
                if _band_value(name, band.band):
                    fitted[name][low] = np.nan
    if "FLAGS" in fitted.colnames and partial.any():
        fitted["FLAGS"][partial] |= int(FitFlag.PARTIAL_COVERAGE)
    return out


def _band_value(name: str, band: str) -> bool:
    """Columns of one band's photometry: model fluxes (total and per
    component), magnitudes and B/T, with their errors."""
    if not (name.endswith(f"_{band}") or name.endswith(f"_{band}_err")):
        return False
    return name.startswith(("FLUX_MODEL", "MAG_MODEL", "B/T"))
