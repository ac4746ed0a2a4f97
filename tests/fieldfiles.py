"""Tiny DJA-named FITS files for io/tiling tests (noise only, TAN WCS)."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

DET_SCALE = 0.04


def tan_wcs(shape, scale_arcsec, crval=(53.16, -27.78)) -> WCS:
    """A north-up TAN WCS whose pixel edges align for any integer refinement."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    # CRPIX at the centre of the field, expressed so that pixel edges coincide:
    # a band refined by f has crpix_f = (crpix_det - 0.5) * f + 0.5.
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cd = np.array([[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]])
    return w


def write_image(path: Path, data: np.ndarray, wcs: WCS | None, band: str | None,
                gz: bool = False) -> Path:
    hdr = wcs.to_header() if wcs is not None else fits.Header()
    if band:
        hdr["FILTER"] = band
    out = Path(str(path) + (".gz" if gz else ""))
    if gz:
        tmp = Path(str(path) + ".tmp")
        fits.PrimaryHDU(data.astype(np.float32), header=hdr).writeto(tmp, overwrite=True)
        with open(tmp, "rb") as src, gzip.open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.unlink()
    else:
        fits.PrimaryHDU(data.astype(np.float32), header=hdr).writeto(out, overwrite=True)
    return out


def write_field(folder: Path, det_shape=(160, 224), bands=(("F200W", 2), ("F444W", 1)),
                field="tst", gz=False, seed=0, blank_region=None) -> Path:
    """Noise images for a detection image and bands refined by their factor."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    det_wcs = tan_wcs(det_shape, DET_SCALE)
    write_image(folder / f"{field}-ir_drc_sci.fits", rng.normal(0, 1, det_shape), det_wcs, "DET", gz)
    write_image(folder / f"{field}-ir_drc_wht.fits", np.ones(det_shape), det_wcs, "DET", gz)
    for band, f in bands:
        shape = (det_shape[0] * f, det_shape[1] * f)
        w = tan_wcs(shape, DET_SCALE / f)
        w.wcs.crpix = [(det_wcs.wcs.crpix[0] - 0.5) * f + 0.5, (det_wcs.wcs.crpix[1] - 0.5) * f + 0.5]
        sci = rng.normal(0, 1, shape)
        wht = np.ones(shape)
        if blank_region is not None and band == blank_region[0]:
            ys, xs = blank_region[1]
            sci[ys, xs] = 0
            wht[ys, xs] = 0
        stem = f"{field}-{band.lower()}-clear_drc"
        write_image(folder / f"{stem}_sci.fits", sci, w, band, gz)
        write_image(folder / f"{stem}_wht.fits", wht, w, band, gz)
    return folder


def gaussian_psf_args(folder: Path, bands=(("F200W", 0.02), ("F444W", 0.04))) -> list[str]:
    """Unit-sum-declared Gaussian PSF files for ``write_field``'s bands, as
    ``--psf BAND=PATH`` command-line arguments (runs that need no PSF step)."""
    yy, xx = np.mgrid[-12:13, -12:13]
    args = []
    for band, scale in bands:
        hdu = fits.PrimaryHDU(np.exp(-(xx ** 2 + yy ** 2) / 8.0).astype(np.float32))
        hdu.header["PIXSCALE"], hdu.header["EEFRAC"] = scale, 1.0
        hdu.writeto(folder / f"{band}.fits")
        args += ["--psf", f"{band}={folder / f'{band}.fits'}"]
    return args
