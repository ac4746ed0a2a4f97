"""DJA-format catalogs written from a simulated field's truth.

DJA's photometric catalog (``{field}-fix_phot_apcorr.fits``: ``id, ra, dec,
{f}_tot_1`` in micro-Jansky, ``flux_auto, fluxerr_auto, kron_radius,
z_spec``) and its photo-z table (``zout``: ``id, z_phot, mass, restU, restV,
restJ``) are made from the truth table of :func:`~dja_sepp.sim.simulate_field`
(or any table with ``RA``, ``DEC`` and ``FLUX_{BAND}`` in 10 nJy), so the
report can be exercised end to end on a simulated field. Redshifts, masses
and rest-frame colours are made up: bulge-dominated or high-n galaxies get
quiescent UVJ colours, the others star-forming ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.table import Table

__all__ = ["dja_catalogs_from_truth", "write_dja_catalogs"]

#: 10 nJy image units to micro-Jansky.
TO_UJY = 0.01


def _col(truth: Table, name: str, default=np.nan) -> np.ndarray:
    if name not in truth.colnames:
        return np.full(len(truth), default, dtype=float)
    col = truth[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(col, dtype=float)


def dja_catalogs_from_truth(truth: Table, bands: Sequence[str] | None = None, seed: int = 0,
                            jitter: float = 0.02, depth: float = 28.9,
                            n_extra: int = 0, extent: tuple | None = None
                            ) -> tuple[Table, Table]:
    """DJA-like phot and zout tables of the truth's sources.

    Parameters
    ----------
    truth : Table
        ``RA``, ``DEC`` (deg) and ``FLUX_{BAND}`` (10 nJy) per source;
        ``N``, ``BT0``, ``KIND`` used for made-up colours when present.
    bands : sequence of str, optional
        Bands to write as ``{band}_tot_1`` (default: every ``FLUX_*`` column).
    seed : int
        Random seed of the noise, position jitter and made-up columns.
    jitter : float
        Arcsec, rms offset of DJA positions from the truth.
    depth : float
        5-sigma depth (AB) of ``flux_auto``'s made-up error.
    n_extra : int
        Extra DJA-only sources at random positions inside ``extent``
        (``(ra_min, ra_max, dec_min, dec_max)``; default: the truth's).

    Returns
    -------
    (Table, Table)
        phot and zout, rows in the same order, ``id`` 1..N.
    """
    rng = np.random.default_rng(seed)
    n = len(truth)
    if bands is None:
        bands = [c[5:] for c in truth.colnames if c.startswith("FLUX_") and not c.endswith("_err")]
    ra, dec = _col(truth, "RA"), _col(truth, "DEC")
    if n_extra:
        lo_ra, hi_ra, lo_dec, hi_dec = extent or (ra.min(), ra.max(), dec.min(), dec.max())
        ra = np.concatenate([ra, rng.uniform(lo_ra, hi_ra, n_extra)])
        dec = np.concatenate([dec, rng.uniform(lo_dec, hi_dec, n_extra)])
    total = n + n_extra
    cosd = np.cos(np.radians(dec))
    ra = ra + rng.normal(0, jitter, total) / 3600.0 / cosd
    dec = dec + rng.normal(0, jitter, total) / 3600.0
    phot = Table()
    phot["id"] = np.arange(1, total + 1)
    phot["ra"], phot["dec"] = ra, dec
    sigma_ujy = 10 ** (-0.4 * (depth - 23.9)) / 5.0
    fluxes = []
    for band in bands:
        flux = np.concatenate([_col(truth, f"FLUX_{band.upper()}") * TO_UJY,
                               10 ** (-0.4 * (rng.uniform(26, 29, n_extra) - 23.9))])
        noisy = flux + rng.normal(0, sigma_ujy, total)
        phot[f"{band.lower()}_tot_1"] = noisy
        phot[f"{band.lower()}_etot_1"] = np.full(total, sigma_ujy)
        fluxes.append(flux)
    det = np.nanmean(np.array(fluxes), axis=0) if fluxes else np.ones(total)
    phot["flux_auto"] = det + rng.normal(0, sigma_ujy, total)
    phot["fluxerr_auto"] = np.full(total, sigma_ujy)
    phot["kron_radius"] = np.full(total, 3.5)
    phot["z_spec"] = np.full(total, -1.0)
    z = np.clip(rng.lognormal(np.log(1.6), 0.55, total), 0.05, 8.0)
    spec = rng.random(total) < 0.1
    phot["z_spec"][spec] = z[spec] + rng.normal(0, 0.01, spec.sum())
    sersic_n = np.concatenate([_col(truth, "N"), np.full(n_extra, np.nan)])
    bt = np.concatenate([_col(truth, "BT0"), np.full(n_extra, np.nan)])
    quiescent = (np.nan_to_num(sersic_n) > 2.5) | (np.nan_to_num(bt) > 0.5)
    vj = np.where(quiescent, rng.normal(1.1, 0.15, total), rng.uniform(0.0, 1.6, total))
    uv = np.where(quiescent, rng.normal(1.8, 0.12, total), 0.3 + 0.6 * vj + rng.normal(0, 0.12, total))
    zout = Table()
    zout["id"] = phot["id"]
    zout["z_phot"] = z
    zout["mass"] = 10 ** rng.uniform(8.0, 11.0, total)
    zout["restV"] = np.ones(total)
    zout["restU"] = 10 ** (-0.4 * uv)
    zout["restJ"] = 10 ** (0.4 * vj)
    return phot, zout


def write_dja_catalogs(truth: Table | str | Path, out_dir: str | Path, field: str,
                       **kwargs) -> tuple[Path, Path]:
    """Write ``{field}-fix_phot_apcorr.fits`` and ``{field}_zout.fits`` into
    ``out_dir`` from the truth (a Table or its FITS file); returns their paths.
    Keyword arguments go to :func:`dja_catalogs_from_truth`."""
    if not isinstance(truth, Table):
        truth = Table.read(truth)
    phot, zout = dja_catalogs_from_truth(truth, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phot_path, zout_path = out / f"{field}-fix_phot_apcorr.fits", out / f"{field}_zout.fits"
    phot.write(phot_path, overwrite=True)
    zout.write(zout_path, overwrite=True)
    return phot_path, zout_path
