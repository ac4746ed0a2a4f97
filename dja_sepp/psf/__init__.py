"""PSF per band: the PSF object used by engines and the ways to obtain it."""
from .base import PSF, ImagePSF

__all__ = ["PSF", "ImagePSF", "load_psf"]


def load_psf(path: str, band: str = "", pixel_scale: float | None = None) -> PSF:
    """Load a PSF file (FITS image with declared sampling) for ``band``."""
    return ImagePSF.from_fits(path, band=band, pixel_scale=pixel_scale)
