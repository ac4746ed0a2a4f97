"""PSF per band: the PSF object used by engines and the ways to obtain it."""
from .base import PSF, ImagePSF
from .builder import build_psfs
from .stars import select_stars

__all__ = ["PSF", "ImagePSF", "load_psf", "build_psfs", "select_stars"]


def load_psf(path: str, band: str = "", pixel_scale: float | None = None,
             psf_scale: float | None = None, storage_options: dict | None = None) -> PSF:
    """Load a PSF file for ``band`` on the band's grid.

    Parameters
    ----------
    path : str
        PSFEx ``.psf`` or FITS image whose header declares its sampling
        (``PIXSCALE`` or STPSF's ``PIXELSCL``, arcsec per sample).
    band : str
        Band name.
    pixel_scale : float, optional
        Arcsec per pixel of the band: the grid the PSF is resampled onto
        (never taken as the PSF's own sampling).
    psf_scale : float, optional
        Arcsec per stored sample, for FITS files whose header does not say.
    storage_options : dict, optional
        fsspec options for a remote ``path``.
    """
    if str(path).endswith(".psf"):
        from .psfex import PSFExPSF
        return PSFExPSF(path, band=band, pixel_scale=pixel_scale or 0.0, storage_options=storage_options)
    return ImagePSF.from_fits(path, band=band, pixel_scale=pixel_scale, psf_scale=psf_scale,
                              storage_options=storage_options)
