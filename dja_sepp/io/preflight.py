"""Checks of every input before the first tile: cheap, and naming the file.

A truncated mosaic or a broken PSF file used to be found inside the tiles:
every tile failed three times and a 0-row catalog was written. Here each
image is checked once on the driver (its header, the file size the header
announces, and a read of its first and last rows: a few kB, never the
mosaic) and each PSF is loaded as the tiles will load it.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from astropy.io import fits

from .cache import InputError, local_fits
from .fingerprint import hdu_span

__all__ = ["check_images", "check_psfs"]


def check_images(field: Any) -> None:
    """Every science and weight image of ``field`` is whole and readable.

    Raises
    ------
    InputError
        Naming the file: truncated data, or rows that cannot be read.
    """
    for image in (field.detection, *field.bands.values()):
        for path in (image.sci_path, image.wht_path):
            _check_image(path, image.cache_dir, image.storage_options)


def _check_image(path: str, cache_dir, storage_options) -> None:
    local = local_fits(path, cache_dir, storage_options)
    try:
        _, start, _ = hdu_span(local)
        with fits.open(local, memmap=True, lazy_load_hdus=True) as hdul:
            hdu = next(h for h in hdul if h.is_image and h.header.get("NAXIS", 0) == 2)
            ny, nx = hdu.header["NAXIS2"], hdu.header["NAXIS1"]
            need = start + abs(int(hdu.header["BITPIX"])) // 8 * nx * ny
            have = os.path.getsize(local)
            if have < need:
                raise InputError(f"{path}: truncated FITS file ({have} bytes, the header "
                                 f"announces {need}); copy it again")
            for rows in (slice(0, 1), slice(ny - 1, ny)):
                np.asarray(hdu.section[rows, :])
    except InputError:
        raise
    except Exception as exc:  # astropy raises many kinds on damaged files
        raise InputError(f"{path}: cannot read its pixels ({type(exc).__name__}: {exc})") from exc


def check_psfs(psf_paths: Mapping[str, str], field: Any) -> None:
    """Every PSF file loads on its band's grid and holds finite, positive light.

    Raises
    ------
    InputError
        Naming the PSF file and the band.
    """
    from ..psf import load_psf  # the PSF package is heavy: only when checking
    for band, path in psf_paths.items():
        if band not in field.bands:
            continue
        try:
            psf = load_psf(path, band=band, pixel_scale=field.bands[band].pixel_scale,
                           storage_options=field.bands[band].storage_options)
        except Exception as exc:
            raise InputError(f"{path}: not a usable PSF for band {band} "
                             f"({type(exc).__name__}: {exc})") from exc
        data = getattr(psf, "data", None)
        if data is not None and (not np.all(np.isfinite(data)) or not np.sum(data) > 0):
            raise InputError(f"{path}: PSF of band {band} has non-finite or no positive pixels")
