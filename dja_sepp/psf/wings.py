"""The light beyond each band's reach, shared between bands in units of wavelength.

Far from the core a diffraction-limited PSF is the pupil's diffraction
pattern: at wavelength ``lam`` its surface brightness is ``g(r / lam) / lam^2``
for one pupil (rings, spikes and the aberrations' halo all scale with ``lam``;
jitter and pixels only shape the core). So the share of the light beyond
radius ``r`` in one band is the share beyond ``r * lam_a / lam`` in another.

A band's own tail comes from a wing model extrapolated beyond where its stars
stop being measurable (:mod:`dja_sepp.psf.energy`). The modulation of the
wing by rings and spikes makes that extrapolation uncertain to 30-100 %
(+-0.01-0.03 of the total on JWST-like PSFs) when the reach is short in units
of ``lam / D``, as it is in the long-wave bands. The band whose stars are
measured furthest in those units (the *anchor*, usually the shortest band)
has measured the other bands' tails directly: each band keeps its own curve
within its reach and takes the light beyond it from the anchor's curve at
the scaled radius.
"""
from __future__ import annotations

import logging
from typing import Mapping

from .energy import EnergyCurve

__all__ = ["share_tails"]

log = logging.getLogger(__name__)


def _scaled_reach(curve: EnergyCurve, wavelength: float) -> float:
    """The reach in arcsec per micron of wavelength (units of ``lam / D``
    up to a constant)."""
    return curve.reach * curve.pixel_scale / wavelength


def share_tails(curves: Mapping[str, EnergyCurve],
                wavelengths: Mapping[str, float | None]) -> dict[str, EnergyCurve]:
    """Each band's curve with the light beyond its reach taken from the
    anchor band (the one measured furthest in units of wavelength).

    Parameters
    ----------
    curves : mapping
        Band -> its measured :class:`~dja_sepp.psf.energy.EnergyCurve`.
    wavelengths : mapping
        Band -> pivot wavelength (micron); bands without one keep their own tail.

    Returns
    -------
    dict
        Band -> curve (the anchor's and unknown bands' unchanged).
    """
    known = {b: c for b, c in curves.items() if wavelengths.get(b)}
    if len(known) < 2:
        return dict(curves)
    anchor = max(known, key=lambda b: _scaled_reach(known[b], wavelengths[b]))
    ref, lam_ref = known[anchor], wavelengths[anchor]
    out = dict(curves)
    for band, curve in known.items():
        if band == anchor:
            continue
        radius = curve.reach * curve.pixel_scale * lam_ref / wavelengths[band] / ref.pixel_scale
        out[band] = curve.with_tail(1.0 - ref.at(radius), anchor)
        log.info("PSF %s: light beyond %.2f\" %.4f from %s (own wing model: %.4f)", band,
                 curve.reach * curve.pixel_scale, out[band].tail, anchor, curve.tail)
    return out
