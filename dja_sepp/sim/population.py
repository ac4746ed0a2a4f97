"""Truth populations for simulated fields: a crowded, JWST-like sky.

:func:`crowded_population` draws galaxies at a given surface density down to a
limiting magnitude, with number counts rising towards faint magnitudes
(``dN/dm ~ 10^(slope m)``), half-light radii shrinking with magnitude, Sérsic
indices larger for bright galaxies, close companions (blends), and stars of
which some are bright (mag 19.5-21: their diffraction spikes and Airy rings
are what fragments a detection). The numbers are rough JWST deep-field values
(e.g. ~150 galaxies per arcmin^2 to mag 28 in F277W, r_e ~0.3" at mag 22 and
~0.09" at mag 28), meant to make a pipeline work as hard as on a real mosaic,
not to be a survey model.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..bands import pivot_wavelength

__all__ = ["crowded_population", "add_band_fluxes", "TRUTH_COLUMNS", "count_magnitudes"]

#: per-object truth columns (before the per-band ones), in order
TRUTH_COLUMNS = ["KIND", "X_DET", "Y_DET", "MAG_REF", "RE", "N", "Q", "ANGLE", "BETA", "BT0",
                 "RE_BULGE", "RE_DISK", "Q_B", "Q_D"]
_ZEROPOINT = 28.90
_DET_SCALE = 0.04


def add_band_fluxes(truth: Table, bands) -> Table:
    """Add ``FLUX_{band}``, ``MAG_{band}`` (power-law colour ``BETA`` around
    3 um, 10 nJy units) and ``BT_{band}`` (bulges redder) to ``truth``."""
    for band in bands:
        lam = pivot_wavelength(band)
        flux = 10 ** (-0.4 * (truth["MAG_REF"] - _ZEROPOINT)) * (lam / 3.0) ** truth["BETA"]
        truth[f"FLUX_{band}"] = flux
        truth[f"MAG_{band}"] = -2.5 * np.log10(flux) + _ZEROPOINT
        truth[f"BT_{band}"] = np.clip(truth["BT0"] * (lam / 2.0) ** 0.3, 0, 1)
    return truth


def count_magnitudes(rng: np.random.Generator, n: int, bright: float, faint: float,
                     slope: float = 0.3) -> np.ndarray:
    """``n`` magnitudes in [bright, faint] with ``dN/dm ~ 10^(slope m)``
    (inverse transform of the cumulative counts)."""
    lo, hi = 10 ** (slope * bright), 10 ** (slope * faint)
    return np.log10(lo + rng.random(n) * (hi - lo)) / slope


def _galaxies(rng, n, n_pix, mag_limit, bd_fraction, blend_fraction, margin) -> dict:
    mag = count_magnitudes(rng, n, 20.0, mag_limit)
    x, y = rng.uniform(margin, n_pix - margin, (2, n))
    # close companions (blends): a fraction go 0.3-0.8" from another galaxy
    comp = rng.random(n) < blend_fraction
    host = rng.integers(0, n, n)
    sep, pa = rng.uniform(0.3, 0.8, n) / _DET_SCALE, rng.uniform(0, 2 * np.pi, n)
    x = np.where(comp, np.clip(x[host] + sep * np.cos(pa), margin, n_pix - margin), x)
    y = np.where(comp, np.clip(y[host] + sep * np.sin(pa), margin, n_pix - margin), y)
    # sizes shrink ~0.09 dex per mag; 0.2 dex scatter
    re = np.clip(10 ** (np.log10(0.30) - 0.09 * (mag - 22.0) + rng.normal(0, 0.2, n)), 0.04, 1.5)
    n_sersic = np.clip(np.exp(rng.normal(np.log(1.2 + 0.4 * np.clip(24.0 - mag, 0, None)), 0.4, n)),
                       0.5, 6.0)
    q = rng.uniform(0.2, 1.0, n)
    # bulges are resolved only in brighter galaxies
    bd = (mag < 25.0) & (rng.random(n) < bd_fraction)
    bt0, re_b, q_b = rng.uniform(0.1, 0.7, n), re * rng.uniform(0.2, 0.5, n), rng.uniform(0.6, 1.0, n)
    nan = np.full(n, np.nan)
    return {"KIND": np.where(bd, "bulge+disk", "sersic"), "X_DET": x, "Y_DET": y, "MAG_REF": mag,
            "RE": re, "N": np.where(bd, np.nan, n_sersic), "Q": q, "ANGLE": rng.uniform(0, 180, n),
            "BETA": rng.normal(0.3, 0.6, n), "BT0": np.where(bd, bt0, nan),
            "RE_BULGE": np.where(bd, re_b, nan), "RE_DISK": np.where(bd, re, nan),
            "Q_B": np.where(bd, q_b, nan), "Q_D": np.where(bd, q, nan)}


def _stars(rng, n, n_bright, n_pix, margin) -> dict:
    mag = np.concatenate([rng.uniform(19.5, 21.0, n_bright), rng.uniform(21.0, 26.0, n - n_bright)])
    x, y = rng.uniform(margin, n_pix - margin, (2, n))
    nan = np.full(n, np.nan)
    return {"KIND": np.full(n, "star"), "X_DET": x, "Y_DET": y, "MAG_REF": mag, "RE": np.zeros(n),
            "N": nan, "Q": np.ones(n), "ANGLE": np.zeros(n), "BETA": rng.normal(0.0, 0.3, n),
            "BT0": nan, "RE_BULGE": nan, "RE_DISK": nan, "Q_B": nan, "Q_D": nan}


def _extra(rng, positions) -> dict:
    """Mid-bright Sérsic galaxies exactly at given positions (tile borders)."""
    n = len(positions)
    xy = np.asarray(positions, float).reshape(n, 2)
    nan = np.full(n, np.nan)
    return {"KIND": np.full(n, "sersic"), "X_DET": xy[:, 0], "Y_DET": xy[:, 1],
            "MAG_REF": rng.uniform(22.5, 24.5, n), "RE": rng.uniform(0.08, 0.25, n),
            "N": rng.uniform(0.5, 4.0, n), "Q": rng.uniform(0.3, 1.0, n),
            "ANGLE": rng.uniform(0, 180, n), "BETA": rng.normal(0.3, 0.6, n), "BT0": nan,
            "RE_BULGE": nan, "RE_DISK": nan, "Q_B": nan, "Q_D": nan}


def crowded_population(rng: np.random.Generator, n_pix: int, bands, *, density: float = 150.0,
                       mag_limit: float = 28.0, n_stars: int = 8, bright_stars: int = 2,
                       extra_positions=(), bulge_disk_fraction: float = 0.25,
                       blend_fraction: float = 0.1, margin: int = 8) -> Table:
    """Truth table of a crowded field on an ``n_pix`` square detection grid.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_pix : int
        Side of the detection grid (0.04" pixels); positions are 0-based.
    bands : sequence of str
        Bands that get ``FLUX_``/``MAG_``/``BT_`` columns.
    density : float
        Galaxies per arcmin^2 brighter than ``mag_limit`` (reference magnitude
        ``MAG_REF``, ~F277W-F356W).
    n_stars, bright_stars : int
        Stars in all; the first ``bright_stars`` have mag 19.5-21, the others 21-26.
    extra_positions : sequence of (x, y)
        Galaxies placed exactly there (e.g. tile borders), mag 22.5-24.5.

    Returns
    -------
    astropy.table.Table
        Columns :data:`TRUTH_COLUMNS` + per band ``FLUX_``, ``MAG_``, ``BT_``.
    """
    area = (n_pix * _DET_SCALE / 60.0) ** 2
    n_gal = int(round(density * area))
    parts = [_galaxies(rng, n_gal, n_pix, mag_limit, bulge_disk_fraction, blend_fraction, margin),
             _extra(rng, list(extra_positions)),
             _stars(rng, n_stars, min(bright_stars, n_stars), n_pix, margin)]
    cols = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in TRUTH_COLUMNS}
    truth = Table([cols[k] for k in TRUTH_COLUMNS], names=TRUTH_COLUMNS,
                  dtype=["U10"] + [float] * (len(TRUTH_COLUMNS) - 1))
    return add_band_fluxes(truth, bands)
