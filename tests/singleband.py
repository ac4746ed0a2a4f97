"""One-band, one-galaxy fits through the whole engine (detection, then the
fit of every source with one wide window), for peer and truth comparisons."""
from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from dja_sepp.detect import detect_sources
from dja_sepp.fit.base import BandCutout, get_engine


def fit_image(img, wht, model: str, *, scale: float, crval, crpix, band: str, psf, wavelength: float,
              options: dict | None = None):
    """Detect and fit ``img`` (inverse-variance ``wht``) with ``model``
    (``options``: ``fit`` settings on top of one wide window, one pass);
    returns the sources and the catalog rows (one per source)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix = list(crval), list(crpix)
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    wht = np.asarray(wht, np.float32)
    cut = BandCutout(band, img.astype(np.float32), wht, wcs, pixel_scale=scale, psf=psf,
                     wavelength=wavelength)
    det = BandCutout("DETECTION", img.astype(np.float32), wht, wcs, pixel_scale=scale)
    sources, det.segmap = detect_sources(det, {"thresh": 5.0, "deblend_cont": 1.0, "back_size": 256})
    sources["IN_CORE"] = np.ones(len(sources), bool)
    return sources, get_engine("builtin").fit(sources, det, [cut], model,
                                              {"window_min": 400, "passes": 1, **(options or {})})
