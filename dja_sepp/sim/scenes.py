"""Small multi-band GalSim scenes with known truth (grids of isolated galaxies),
for engine tests, accuracy benchmarks and peer comparisons."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..bands import pivot_wavelength
from ..io.cutout import BandCutout
from ..psf.base import ImagePSF
from .field import field_wcs, render_sources
from .psf import psf_image, psf_model, psf_share
from .score import robust_scatter  # one definition (re-exported here for older callers)

__all__ = ["Scene", "galaxy_grid", "bulge_disk_grid", "make_scene", "detect_and_match", "robust_scatter"]

DET_SCALE = 0.04


@dataclass
class Scene:
    truth: Table
    detection: BandCutout
    bands: list


def galaxy_grid(rng, nrows: int, ncols: int, spacing: int, bands, kind: str = "sersic",
                flux_range=(30.0, 600.0)) -> Table:
    """Isolated galaxies on a grid (detection pixels), random shapes and fluxes."""
    n = nrows * ncols
    yy, xx = np.mgrid[0:nrows, 0:ncols]
    t = Table()
    t["KIND"] = [kind] * n
    t["X_DET"] = (xx.ravel() + 0.5) * spacing + rng.uniform(-0.5, 0.5, n)
    t["Y_DET"] = (yy.ravel() + 0.5) * spacing + rng.uniform(-0.5, 0.5, n)
    t["N"] = rng.uniform(0.7, 5.0, n)
    t["RE"] = rng.uniform(0.08, 0.3, n)          # arcsec, semi-major
    t["Q"] = rng.uniform(0.3, 0.95, n)
    t["ANGLE"] = rng.uniform(0, 180, n)
    t["RE_DISK"] = rng.uniform(0.25, 0.45, n)
    t["RE_BULGE"] = t["RE_DISK"] * rng.uniform(0.2, 0.4, n)
    t["Q_D"] = rng.uniform(0.3, 0.9, n)
    t["Q_B"] = rng.uniform(0.7, 1.0, n)
    total = np.exp(rng.uniform(*np.log(flux_range), n))
    bt = rng.uniform(0.15, 0.7, n)
    for k, band in enumerate(bands):
        colour = 10 ** (-0.4 * rng.normal(0, 0.15, n)) * (1 + 0.2 * k)
        t[f"FLUX_{band}"] = total * colour
        t[f"BT_{band}"] = np.clip(bt * (1 + 0.15 * k), 0, 1)   # redder bulges
    return t


def bulge_disk_grid(rng, nrows: int, ncols: int, spacing: int, bands, mag_range=(21.0, 25.0)) -> Table:
    """Bulge + disk galaxies drawn as :func:`dja_sepp.sim.field.simulate_field`
    draws them (disk r_e 0.06-0.35" x 10^(0.12 (25 - mag)), at most 0.6";
    bulge r_e 0.2-0.5 x the disk's, so many bulges are barely resolved; q_d
    0.2-1, q_b 0.6-1; B/T0 0.1-0.7 and ``BT_{band} = BT0 (lambda / 2 um)^0.3``),
    on a grid of ``spacing`` detection pixels; magnitudes uniform in ``mag_range``."""
    n = nrows * ncols
    yy, xx = np.mgrid[0:nrows, 0:ncols]
    t = Table()
    t["KIND"] = ["bulge+disk"] * n
    t["X_DET"] = (xx.ravel() + 0.5) * spacing + rng.uniform(-0.5, 0.5, n)
    t["Y_DET"] = (yy.ravel() + 0.5) * spacing + rng.uniform(-0.5, 0.5, n)
    mag = rng.uniform(*mag_range, n)
    re = np.clip(10 ** (rng.uniform(np.log10(0.06), np.log10(0.35), n) + 0.12 * (25 - mag)), 0.05, 0.6)
    t["MAG_REF"], t["RE"], t["RE_DISK"] = mag, re, re
    t["RE_BULGE"] = re * rng.uniform(0.2, 0.5, n)
    t["Q"] = t["Q_D"] = rng.uniform(0.2, 1.0, n)
    t["Q_B"] = rng.uniform(0.6, 1.0, n)
    t["ANGLE"] = rng.uniform(0, 180, n)
    t["BETA"] = rng.normal(0.3, 0.6, n)
    t["BT0"] = rng.uniform(0.1, 0.7, n)
    t["N"] = np.full(n, np.nan)
    for b in bands:
        lam = pivot_wavelength(b)
        t[f"FLUX_{b}"] = 10 ** (-0.4 * (mag - 28.9)) * (lam / 3.0) ** t["BETA"]
        t[f"BT_{b}"] = np.clip(t["BT0"] * (lam / 2.0) ** 0.3, 0, 1)
    return t


def make_scene(truth: Table, shape, bands: dict, sigma: float, seed: int) -> Scene:
    """Render ``truth`` into ``bands`` (band -> grid factor, 1 = 0.04", 2 = 0.02"),
    add Gaussian noise, and build the detection image from the 0.04" bands."""
    rng = np.random.default_rng(seed)
    cutouts, det_sum, det_w = [], np.zeros(shape), 0.0
    for band, factor in bands.items():
        scale = DET_SCALE / factor
        bshape = (shape[0] * factor, shape[1] * factor)
        image = render_sources(truth, band, bshape, scale, factor, psf_model(band))
        s = sigma / factor            # same surface-brightness depth on either grid
        sci = image + rng.normal(0, s, bshape)
        wht = np.full(bshape, 1 / s**2)
        size = 301 if factor == 1 else 401
        psf = ImagePSF(psf_image(band, scale, size=size), scale, band=band, ee_fraction=psf_share(band, scale, size))
        cutouts.append(BandCutout(band, sci.astype(np.float32), wht.astype(np.float32),
                                  field_wcs(shape, DET_SCALE, factor), pixel_scale=scale,
                                  psf=psf, wavelength=pivot_wavelength(band)))
        if factor == 1:
            det_sum, det_w = det_sum + sci, det_w + 1
    det = det_sum / det_w
    detection = BandCutout("DETECTION", det.astype(np.float32),
                           np.full(shape, det_w / sigma**2, np.float32),
                           field_wcs(shape, DET_SCALE), pixel_scale=DET_SCALE)
    return Scene(truth, detection, cutouts)


def detect_and_match(scene: Scene, config: dict, radius: float = 2.0):
    """Detect on the scene, keep the detection nearest each truth source."""
    from ..detect import detect_sources
    sources, segmap = detect_sources(scene.detection, config)
    scene.detection.segmap = segmap
    sources["IN_CORE"] = np.ones(len(sources), bool)
    dx = np.asarray(sources["x"])[None, :] - np.asarray(scene.truth["X_DET"])[:, None]
    dy = np.asarray(sources["y"])[None, :] - np.asarray(scene.truth["Y_DET"])[:, None]
    d = np.hypot(dx, dy)
    nearest = np.argmin(d, axis=1)
    found = d[np.arange(len(d)), nearest] < radius
    return sources, nearest, found
