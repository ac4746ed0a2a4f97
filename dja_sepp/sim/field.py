"""Simulated DJA-like fields: GalSim galaxies and stars on aligned 0.02"/0.04" grids.

Files are written exactly as DJA names them, with TAN WCS, ``FILTER`` and
10 nJy pixels (AB zero point 28.90), so the whole pipeline runs on them as on
real mosaics; the truth is saved beside them.
"""
from __future__ import annotations

import gzip as gzip_module
import shutil
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Sequence

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..bands import is_short_wave, native_pixel_scale
from ..psf.base import ImagePSF
from .noise import correlated_normal, noise_correlation_factor
from .population import add_band_fluxes, crowded_population
from .psf import psf_image, psf_model, psf_share

__all__ = ["SimulatedField", "simulate_field", "whole_field", "field_wcs", "render_sources", "ZEROPOINT",
           "DET_SCALE"]

ZEROPOINT = 28.90
DET_SCALE = 0.04
_DETECTION_BANDS = ("F277W", "F356W", "F444W")


@dataclass
class SimulatedField:
    """Where a simulated field was written and what it holds.

    ``sigma`` is each band's per-pixel noise sigma (the weight map's, at the
    deepest column); ``noise_correlation`` the factor by which the noise of a
    sum over a large aperture exceeds the white-noise prediction from the
    weights (1.0 for white noise, see :mod:`dja_sepp.sim.noise`).
    """

    images_dir: Path
    truth_path: Path
    psf_paths: dict[str, Path]
    bands: tuple[str, ...]
    field: str
    shape: tuple[int, int]
    sigma: dict[str, float]
    noise_correlation: dict[str, float] = dc_field(default_factory=dict)


def field_wcs(shape: tuple[int, int], scale: float, factor: int = 1,
              crval: tuple[float, float] = (53.16, -27.78)) -> WCS:
    """North-up TAN WCS of the detection grid refined by ``factor``; pixel
    edges of all factors coincide."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    det_crpix = np.array([shape[1] / 2 + 0.5, shape[0] / 2 + 0.5])
    w.wcs.crpix = list((det_crpix - 0.5) * factor + 0.5)
    s = scale / factor / 3600.0
    w.wcs.cd = np.array([[-s, 0.0], [0.0, s]])
    return w


def _population(rng, n_gal, n_star, n_pix, extra, bd_fraction, blend_fraction, bands):
    """Truth table of galaxies and stars on the detection grid (0-based)."""
    rows = []
    margin = 8
    for i in range(n_gal + len(extra)):
        if i >= n_gal:
            x, y = extra[i - n_gal]
            mag = rng.uniform(22.5, 24.5)
            re = rng.uniform(0.08, 0.25)
        elif rows and rng.random() < blend_fraction:  # a companion of an earlier galaxy
            host = rows[rng.integers(len(rows))]
            sep, pa = rng.uniform(0.3, 0.6) / DET_SCALE, rng.uniform(0, 2 * np.pi)
            x = np.clip(host["X_DET"] + sep * np.cos(pa), margin, n_pix - margin)
            y = np.clip(host["Y_DET"] + sep * np.sin(pa), margin, n_pix - margin)
            mag = rng.uniform(22.0, 27.0)
            re = 10 ** rng.uniform(np.log10(0.06), np.log10(0.5))
        else:
            x, y = rng.uniform(margin, n_pix - margin, 2)
            mag = 21.0 + 6.5 * rng.random() ** 0.6  # more faint than bright
            re = 10 ** (rng.uniform(np.log10(0.06), np.log10(0.35)) + 0.12 * (25 - mag))
        kind = "bulge+disk" if (i < n_gal and rng.random() < bd_fraction) else "sersic"
        q = rng.uniform(0.2, 1.0)
        row = {"KIND": kind, "X_DET": float(x), "Y_DET": float(y), "MAG_REF": mag,
               "RE": float(np.clip(re, 0.05, 1.2)), "N": float(rng.uniform(0.5, 6.0)), "Q": q,
               "ANGLE": float(rng.uniform(0, 180)), "BETA": float(rng.normal(0.3, 0.6)),
               "BT0": np.nan, "RE_BULGE": np.nan, "RE_DISK": np.nan, "Q_B": np.nan, "Q_D": np.nan}
        if kind == "bulge+disk":
            row.update(N=np.nan, BT0=rng.uniform(0.1, 0.7), RE_DISK=row["RE"],
                       RE_BULGE=row["RE"] * rng.uniform(0.2, 0.5), Q_D=q, Q_B=rng.uniform(0.6, 1.0))
        rows.append(row)
    for _ in range(n_star):
        x, y = rng.uniform(margin, n_pix - margin, 2)
        rows.append({"KIND": "star", "X_DET": float(x), "Y_DET": float(y),
                     "MAG_REF": rng.uniform(19.5, 25.0), "RE": 0.0, "N": np.nan, "Q": 1.0,
                     "ANGLE": 0.0, "BETA": float(rng.normal(0.0, 0.3)), "BT0": np.nan,
                     "RE_BULGE": np.nan, "RE_DISK": np.nan, "Q_B": np.nan, "Q_D": np.nan})
    names = ["KIND", "X_DET", "Y_DET", "MAG_REF", "RE", "N", "Q", "ANGLE", "BETA", "BT0",
             "RE_BULGE", "RE_DISK", "Q_B", "Q_D"]
    truth = Table(rows=[[r[k] for k in names] for r in rows], names=names,
                  dtype=["U10"] + [float] * (len(names) - 1))
    return add_band_fluxes(truth, bands)


def _galsim_object(row, band):
    import galsim
    flux = float(row[f"FLUX_{band}"])
    beta = float(row["ANGLE"]) * galsim.degrees
    if row["KIND"] == "star":
        return galsim.DeltaFunction(flux=flux)
    if row["KIND"] == "bulge+disk":
        bt = float(row[f"BT_{band}"])
        # semi-major half-light radii: the circularised radius is a sqrt(q)
        disk = galsim.Exponential(half_light_radius=row["RE_DISK"] * np.sqrt(row["Q_D"]),
                                  flux=flux * (1 - bt)).shear(q=row["Q_D"], beta=beta)
        bulge = galsim.DeVaucouleurs(half_light_radius=row["RE_BULGE"] * np.sqrt(row["Q_B"]),
                                     flux=flux * bt).shear(q=row["Q_B"], beta=beta)
        return galsim.Add(disk, bulge)
    return galsim.Sersic(n=float(row["N"]), half_light_radius=row["RE"] * np.sqrt(row["Q"]),
                         flux=flux).shear(q=row["Q"], beta=beta)


def render_sources(truth, band, shape, scale, factor, psf):
    """Noise-free image of the ``truth`` sources in one band (each drawn on a
    stamp), on the detection grid refined by ``factor`` (pixel scale
    ``scale``). ``truth`` columns: KIND (sersic|bulge+disk|star), X_DET, Y_DET
    (0-based detection pixels), RE / RE_BULGE / RE_DISK (semi-major, arcsec),
    N, Q / Q_B / Q_D, ANGLE (deg), FLUX_{band}, BT_{band}. Stamps hold
    >= 99.9 % of a star's light (spikes included) even at 0.02"."""
    import galsim
    image = galsim.ImageF(shape[1], shape[0], scale=scale)
    for row in truth:
        obj = galsim.Convolve(_galsim_object(row, band), psf)
        # twice GalSim's good size: the spikes and Airy wings carry a few % of the flux
        size = int(np.clip(2 * obj.getGoodImageSize(scale), 64, 512))
        xb = (row["X_DET"] + 0.5) * factor - 0.5 + 1.0  # galsim images are 1-based
        yb = (row["Y_DET"] + 0.5) * factor - 0.5 + 1.0
        ix, iy = int(round(xb)), int(round(yb))
        bounds = galsim.BoundsI(ix - size // 2, ix + size // 2, iy - size // 2, iy + size // 2)
        bounds = bounds & image.bounds
        if not bounds.isDefined():
            continue
        obj.drawImage(image=image[bounds], center=galsim.PositionD(xb, yb), add_to_image=True)
    return image.array.astype(np.float64)


def _noise_sigma(band: str, depth: float, scale: float) -> float:
    """Per-pixel sigma giving a 5-sigma point-source depth of ``depth`` AB."""
    psf = psf_image(band, scale, size=41)
    neff = 1.0 / np.sum(psf ** 2)  # noise-equivalent area in pixels
    return 10 ** (-0.4 * (depth - ZEROPOINT)) / (5.0 * np.sqrt(neff))


def _write(path: Path, data: np.ndarray, wcs: WCS, band: str, gz: bool) -> Path:
    hdr = wcs.to_header()
    hdr["FILTER"] = band
    hdr["BUNIT"] = "10*nJy"
    hdr["ZP"] = (ZEROPOINT, "AB zero point of the pixel unit")
    hdu = fits.PrimaryHDU(data.astype(np.float32), header=hdr)
    if not gz:
        hdu.writeto(path, overwrite=True)
        return path
    tmp = path.with_name(path.name + ".tmp")
    hdu.writeto(tmp, overwrite=True)
    out = path.with_name(path.name + ".gz")
    with open(tmp, "rb") as src, gzip_module.open(out, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    tmp.unlink()
    return out


def simulate_field(out_dir: str | Path, *, field: str = "demo", size_arcsec: float = 40.0,
                   bands: Sequence[str] = ("F150W", "F200W", "F277W", "F356W", "F444W"),
                   n_galaxies: int = 300, n_stars: int = 20, seed: int = 1,
                   extra_positions: Sequence[tuple[float, float]] = (),
                   blank: tuple[str, float] | None = ("F150W", 0.3), depth: float = 28.9,
                   gzip: bool = True, noise: bool = True, bulge_disk_fraction: float = 0.25,
                   blend_fraction: float = 0.1, density: float | None = None,
                   mag_limit: float = 28.0, bright_stars: int = 0,
                   correlated_noise: float | None = None) -> SimulatedField:
    """Simulate a JWST-like field and write it with DJA file names.

    Parameters
    ----------
    out_dir : path
        Folder for the images, ``truth.fits`` and ``psf_truth/{band}.fits``.
    size_arcsec : float
        Side of the square field.
    bands : sequence of str
        NIRCam bands; short-wave ones go on the 0.02" grid, the rest on 0.04".
    extra_positions : sequence of (x, y)
        Detection-grid positions (0-based) that get a galaxy exactly there.
    blank : (band, fraction) or None
        That band has no data (sci = wht = 0) left of ``fraction`` of the width.
    depth : float
        5-sigma point-source depth (AB) of every band.
    noise : bool
        Add Gaussian noise (False gives exact images for tests).
    density : float, optional
        Crowded, realistic sky instead of ``n_galaxies``: galaxies per
        arcmin^2 down to ``mag_limit``, number counts rising to faint mags,
        sizes shrinking with mag, blends, ``n_stars`` stars of which
        ``bright_stars`` have mag 19.5-21
        (:func:`dja_sepp.sim.population.crowded_population`; e.g. 150 to
        mag 28 is a JWST deep field).
    mag_limit : float
        With ``density``: faintest galaxy magnitude (reference band, ~F277W).
    bright_stars : int
        With ``density``: how many of the stars are bright (spikes, rings).
    correlated_noise : float, optional
        Drizzle-like correlated noise: white noise convolved with a square
        drop of this width in output pixels (1.25 ~ pixfrac 0.8, 1.5 ~
        pixfrac 1), rescaled so the per-pixel sigma still equals the weight
        map's; sums over large apertures are then noisier than the weights
        predict by ``SimulatedField.noise_correlation[band]``
        (:mod:`dja_sepp.sim.noise`). ``None``: white noise.

    Returns
    -------
    SimulatedField
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bands = tuple(b.upper() for b in bands)
    n_pix = int(round(size_arcsec / DET_SCALE))
    det_shape = (n_pix, n_pix)
    if density is None:
        truth = _population(rng, n_galaxies, n_stars, n_pix, list(extra_positions),
                            bulge_disk_fraction, blend_fraction, bands)
    else:
        truth = crowded_population(rng, n_pix, bands, density=density, mag_limit=mag_limit,
                                   n_stars=n_stars, bright_stars=bright_stars,
                                   extra_positions=list(extra_positions),
                                   bulge_disk_fraction=bulge_disk_fraction,
                                   blend_fraction=blend_fraction)
    det_bands = [b for b in bands if b in _DETECTION_BANDS] or [b for b in bands if not is_short_wave(b)]
    if not det_bands:
        raise ValueError("a simulated field needs at least one long-wave band for the detection image")
    det_num = np.zeros(det_shape)
    det_wht = np.zeros(det_shape)
    psf_paths, sigmas = {}, {}
    (out / "psf_truth").mkdir(exist_ok=True)
    for band in bands:
        scale = native_pixel_scale(band)
        factor = int(round(DET_SCALE / scale))
        shape = (n_pix * factor, n_pix * factor)
        psf = psf_model(band)
        image = render_sources(truth, band, shape, scale, factor, psf)
        sigma0 = _noise_sigma(band, depth, scale)
        # mild depth variation across the field, as in real mosaics
        sigma = sigma0 * (1.0 + 0.2 * np.linspace(0, 1, shape[1]))[None, :] * np.ones((shape[0], 1))
        if noise:
            image = image + correlated_normal(rng, shape, correlated_noise) * sigma
        wht = 1.0 / sigma ** 2
        if blank is not None and band == blank[0].upper():
            cols = int(round(blank[1] * shape[1]))
            image[:, :cols] = 0.0
            wht[:, :cols] = 0.0
        wcs = field_wcs(det_shape, DET_SCALE, factor)
        stem = f"{field}-{band.lower()}-clear_drc"
        _write(out / f"{stem}_sci.fits", image, wcs, band, gzip)
        _write(out / f"{stem}_wht.fits", wht, wcs, band, gzip)
        if band in det_bands:
            det_num += image * wht
            det_wht += wht
        sigmas[band] = float(sigma0)
        psf_path = out / "psf_truth" / f"{band}.fits"
        # 301 px: >= 99% of the light (an 81 px stamp holds only 94%; see tests)
        ImagePSF(psf_image(band, scale, size=301), scale, 1, band,
                 ee_fraction=psf_share(band, scale, 301)).to_fits(psf_path)
        psf_paths[band] = psf_path
    det_sci = np.divide(det_num, det_wht, out=np.zeros(det_shape), where=det_wht > 0)
    det_wcs = field_wcs(det_shape, DET_SCALE, 1)
    _write(out / f"{field}-ir_drc_sci.fits", det_sci, det_wcs, "DET", gzip)
    _write(out / f"{field}-ir_drc_wht.fits", det_wht, det_wcs, "DET", gzip)
    ncor = {b: noise_correlation_factor(correlated_noise if noise else None) for b in bands}
    # 8-character FITS keys (NC_F277W): aperture-noise factor over the white prediction
    truth.meta.update({f"NC_{b}"[:8]: v for b, v in ncor.items()})
    truth_path = _write_truth(truth, det_wcs, out / "truth.fits", bands)
    return SimulatedField(out, truth_path, psf_paths, bands, field, det_shape, sigmas, ncor)


def _write_truth(truth: Table, wcs: WCS, path: Path, bands) -> Path:
    ra, dec = wcs.pixel_to_world_values(truth["X_DET"], truth["Y_DET"])
    truth.add_column(np.arange(1, len(truth) + 1), name="ID", index=0)
    truth["RA"] = np.asarray(ra) * u.deg
    truth["DEC"] = np.asarray(dec) * u.deg
    # north-up, east-left grid: a major axis at ANGLE from +x points to
    # east = -cos(ANGLE), north = sin(ANGLE)
    ang = np.radians(truth["ANGLE"])
    truth["ANGLE_WORLD"] = np.degrees(np.arctan2(-np.cos(ang), np.sin(ang))) % 180.0
    for name, unit in (("RE", u.arcsec), ("RE_BULGE", u.arcsec), ("RE_DISK", u.arcsec),
                       ("ANGLE", u.deg), ("ANGLE_WORLD", u.deg), ("X_DET", u.pix), ("Y_DET", u.pix)):
        truth[name].unit = unit
    for band in bands:
        truth[f"MAG_{band}"].unit = u.mag
    truth.meta["ZP"] = ZEROPOINT
    truth.write(path, overwrite=True)
    return path


def whole_field(sim: SimulatedField, detection: dict | None = None):
    """A simulated field as one tile: our detections on the whole detection
    image (every one owned, ``IN_CORE``), the detection cutout with its
    segmentation, and each band's whole cutout with the simulator's true PSF.

    Returns ``(sources, detection_cutout, band_cutouts)``, what an engine's
    ``fit`` takes (engine comparisons, reference outputs).
    """
    from ..detect import detect_sources
    from ..io.field import Field
    from ..psf import load_psf
    from ..settings import default_config
    field = Field.from_directory(sim.images_dir, field=sim.field)
    ny, nx = field.detection.shape
    det = field.detection.cutout((slice(0, ny), slice(0, nx)))
    sources, det.segmap = detect_sources(det, detection or default_config()["detection"])
    sources["IN_CORE"] = np.ones(len(sources), bool)
    bands = [image.cutout((slice(0, ny * image.factor), slice(0, nx * image.factor)),
                          psf=load_psf(str(sim.psf_paths[b]), band=b, pixel_scale=image.pixel_scale))
             for b, image in field.bands.items()]
    return sources, det, bands
