"""PSF per band: the PSF object used by engines and the ways to obtain it."""
from .base import PSF, ImagePSF
from .builder import build_psfs
from .stars import select_stars

__all__ = ["PSF", "ImagePSF", "load_psf", "build_psfs", "select_stars"]


def load_psf(path: str, band: str = "", pixel_scale: float | None = None) -> PSF:
    """Load a PSF file for ``band``: a PSFEx ``.psf`` or a FITS image with
    declared sampling."""
    if str(path).endswith(".psf"):
        from .psfex import PSFExPSF
        return PSFExPSF(path, band=band, pixel_scale=pixel_scale or 0.0)
    return ImagePSF.from_fits(path, band=band, pixel_scale=pixel_scale)
