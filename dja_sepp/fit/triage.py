"""Decisions the engine takes per source before and after a fit.

* Fragments: a detection whose light is explained by the models of brighter
  neighbours already subtracted (a piece of a star's diffraction spike or Airy
  ring, a lump in a bright galaxy's wing split off by deblending) is not fitted.
  Its segment's flux on the working images (data minus the neighbours' models)
  must stay significant; otherwise the row is rejected with its reason.
* Point sources: after a galaxy fit, a point-source fit of the same pixels is
  preferred when it explains them as well, by the Bayesian information
  criterion (the galaxy's extra shape parameters must buy more than
  ``k ln N`` of chi2), with a tolerance of a fraction of S/N^2 for the
  PSF-model mismatch of very bright stars (The Farmer's decision tree compares
  the same two fits).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["segments_on_band", "band_box", "SegmentFlux", "segment_flux", "is_explained",
           "prefer_point"]


def band_box(win: tuple[slice, slice], affine, shape) -> tuple[slice, slice] | None:
    """Band-pixel slices covering a detection-pixel window (None if outside)."""
    a, t = affine
    corners = np.array([[win[1].start - 0.5, win[0].start - 0.5], [win[1].stop - 0.5, win[0].stop - 0.5],
                        [win[1].start - 0.5, win[0].stop - 0.5], [win[1].stop - 0.5, win[0].start - 0.5]])
    bc = corners @ a.T + t
    x_lo, x_hi = int(np.floor(bc[:, 0].min() + 0.5)), int(np.ceil(bc[:, 0].max() - 0.5)) + 1
    y_lo, y_hi = int(np.floor(bc[:, 1].min() + 0.5)), int(np.ceil(bc[:, 1].max() - 0.5)) + 1
    x_lo, y_lo = max(x_lo, 0), max(y_lo, 0)
    x_hi, y_hi = min(x_hi, shape[1]), min(y_hi, shape[0])
    if x_hi <= x_lo or y_hi <= y_lo:
        return None
    return slice(y_lo, y_hi), slice(x_lo, x_hi)


def segments_on_band(segmap: np.ndarray, affine, sl: tuple[slice, slice]) -> np.ndarray:
    """Detection segment id under each band pixel of ``sl`` (nearest detection pixel)."""
    a, t = affine
    yy, xx = np.mgrid[sl[0], sl[1]]
    ainv = np.linalg.inv(a)
    dx = ainv[0, 0] * (xx - t[0]) + ainv[0, 1] * (yy - t[1])
    dy = ainv[1, 0] * (xx - t[0]) + ainv[1, 1] * (yy - t[1])
    ix = np.clip(np.round(dx).astype(int), 0, segmap.shape[1] - 1)
    iy = np.clip(np.round(dy).astype(int), 0, segmap.shape[0] - 1)
    return segmap[iy, ix]


@dataclass
class SegmentFlux:
    """Flux of one detection segment summed over bands, before and after the
    neighbours' models are subtracted, and its white-noise variance."""

    data: float = 0.0
    residual: float = 0.0
    variance: float = 0.0

    @property
    def residual_snr(self) -> float:
        return self.residual / np.sqrt(self.variance) if self.variance > 0 else 0.0


def segment_flux(segmap, seg_id: int, bbox: tuple[slice, slice], bands, work, affines) -> SegmentFlux:
    """:class:`SegmentFlux` of segment ``seg_id`` (detection box ``bbox``) on
    every band: ``bands`` give data and weights, ``work`` the data minus the
    models subtracted so far."""
    out = SegmentFlux()
    for b in bands:
        sl = band_box(bbox, affines[b.band], b.shape)
        if sl is None:
            continue
        wht = np.asarray(b.wht[sl], float)
        m = (segments_on_band(segmap, affines[b.band], sl) == seg_id) & (wht > 0)
        if not m.any():
            continue
        out.data += float(np.sum(np.asarray(b.sci[sl], float)[m]))
        out.residual += float(np.sum(work[b.band][sl][m]))
        out.variance += float(np.sum(1.0 / wht[m]))
    return out


def is_explained(flux: SegmentFlux, snr_max: float, explained_min: float,
                 model_error: float = 0.0) -> bool:
    """True when the neighbours' models took at least ``explained_min`` of the
    segment's flux *and* what is left is consistent with zero: below
    ``snr_max`` sigma plus ``model_error`` times the light they took (a PSF
    model is never exact in its spikes and rings). A faint source alone keeps
    its row whatever its S/N."""
    if flux.data <= 0 or flux.variance <= 0:
        return False
    taken = flux.data - flux.residual
    if taken < explained_min * flux.data:
        return False
    return flux.residual < snr_max * np.sqrt(flux.variance) + model_error * taken


def prefer_point(chi2_galaxy: float, chi2_point: float, n_pix: int, extra_params: int,
                 rel_tolerance: float, snr: float) -> bool:
    """BIC choice between a galaxy fit and a point-source fit of the same
    pixels: the point wins unless the galaxy lowers chi2 by more than
    ``extra_params * ln(n_pix)``. For bright sources a PSF model is never
    perfect, so the galaxy must also gain more than ``rel_tolerance * snr**2``
    (a fraction of the source's own chi2 signal, ~S/N squared)."""
    if not (np.isfinite(chi2_point) and np.isfinite(chi2_galaxy)):
        return bool(np.isfinite(chi2_point) and not np.isfinite(chi2_galaxy))
    gain = chi2_point - chi2_galaxy
    snr2 = float(snr) ** 2 if np.isfinite(snr) else 0.0
    return bool(gain <= max(extra_params * np.log(max(n_pix, 2)), rel_tolerance * snr2))
