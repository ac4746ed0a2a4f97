"""A tiny field with a few sources for the newcomer tests (issue 17).

``write_field``'s noise images (detection 0.04", F200W on 0.02", F444W on
0.04") with round Gaussian sources added at the same sky positions in every
image, so a run finds and fits real rows in a few seconds per tile.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from fieldfiles import gaussian_psf_args, write_field

#: Source centres in detection pixels (x, y) and peak S/N.
SOURCES = ((60.0, 50.0, 40.0), (150.0, 110.0, 25.0), (100.0, 80.0, 60.0), (180.0, 40.0, 30.0))


def write_tiny_field(folder: Path, bunit: str | None = "10*nJy") -> tuple[Path, list[str]]:
    """Images in ``folder/images`` (with ``BUNIT`` in every science header
    unless None) and Gaussian PSF files; returns the image folder and the
    ``--psf BAND=FILE`` arguments."""
    images = write_field(folder / "images")
    for path in sorted(images.glob("*_sci.fits")):
        with fits.open(path, mode="update") as hdul:
            data = hdul[0].data
            f = data.shape[0] // 160   # refinement of the band over the detection grid
            yy, xx = np.mgrid[:data.shape[0], :data.shape[1]]
            for x, y, peak in SOURCES:
                cx, cy = (x + 0.5) * f - 0.5, (y + 0.5) * f - 0.5
                data += peak * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (1.5 * f) ** 2))
            if bunit:
                hdul[0].header["BUNIT"] = bunit
    return images, gaussian_psf_args(folder)
