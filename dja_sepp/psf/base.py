"""The PSF object every engine evaluates.

A :class:`PSF` gives, for a band, a normalised, odd-sized image centred on its
central pixel, sampled on the band's pixels divided by ``oversampling``.
Variable PSFs (PSFEx) override :meth:`PSF.stamp` to depend on position.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = ["PSF", "ImagePSF"]


class PSF:
    """Base class: a PSF of one band.

    Attributes
    ----------
    band : str
        Band name.
    pixel_scale : float
        Arcsec per pixel of the *band's* grid (not of the oversampled stamp).
    oversampling : int
        Samples per band pixel of the stored model.
    """

    band: str = ""
    pixel_scale: float = 0.0
    oversampling: int = 1

    def stamp(self, x: float | None = None, y: float | None = None,
              oversampling: int = 1) -> np.ndarray:
        """Normalised PSF image at mosaic position ``(x, y)`` (band pixels).

        Parameters
        ----------
        x, y : float, optional
            0-based position on the band mosaic; ignored by constant PSFs.
        oversampling : int
            Samples per band pixel wanted (1 = native band pixels).
        """
        raise NotImplementedError

    @property
    def fwhm_arcsec(self) -> float:
        """FWHM from the area of the half-maximum region of the native stamp."""
        img = self.stamp(oversampling=1)
        npix = np.count_nonzero(img >= 0.5 * img.max())
        return float(2.0 * np.sqrt(npix / np.pi) * self.pixel_scale)


class ImagePSF(PSF):
    """A constant PSF stored as an image.

    Parameters
    ----------
    data : ndarray
        PSF image (any normalisation; it is normalised to unit sum).
    pixel_scale : float
        Arcsec per band pixel.
    oversampling : int
        Samples per band pixel of ``data``.
    band : str
        Band name.
    """

    def __init__(self, data: np.ndarray, pixel_scale: float, oversampling: int = 1,
                 band: str = ""):
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] % 2 == 0 or data.shape[1] % 2 == 0:
            raise ValueError(f"PSF image of band {band!r} must be 2-D with odd sides, "
                             f"got shape {data.shape}")
        total = data.sum()
        if not np.isfinite(total) or total <= 0:
            raise ValueError(f"PSF image of band {band!r} has no positive flux")
        self.data = data / total
        self.pixel_scale = float(pixel_scale)
        self.oversampling = int(oversampling)
        self.band = band

    def stamp(self, x=None, y=None, oversampling: int = 1) -> np.ndarray:
        if oversampling == self.oversampling:
            return self.data
        if self.oversampling % oversampling:
            raise ValueError(f"cannot resample a PSF stored at oversampling "
                             f"{self.oversampling} to {oversampling}")
        return _bin_centred(self.data, self.oversampling // oversampling)

    @classmethod
    def from_fits(cls, path: str | Path, band: str = "", pixel_scale: float | None = None,
                  oversampling: int | None = None) -> "ImagePSF":
        """Read a PSF FITS image; sampling from the header (``PIXSCALE``,
        ``OVERSAMP``) unless given."""
        with fits.open(path) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            hdr = hdu.header
            data = np.asarray(hdu.data, dtype=np.float64)
        if oversampling is None:
            oversampling = int(hdr.get("OVERSAMP", 1))
        if pixel_scale is None:
            if "PIXSCALE" not in hdr:
                raise ValueError(f"{path}: PSF header has no PIXSCALE; give pixel_scale")
            pixel_scale = float(hdr["PIXSCALE"]) * oversampling
        return cls(data, pixel_scale, oversampling, band or str(hdr.get("FILTER", "")))

    def to_fits(self, path: str | Path) -> None:
        """Write the PSF with its sampling in the header (``PIXSCALE`` is the
        arcsec size of one *stored* sample)."""
        hdr = fits.Header()
        hdr["FILTER"] = self.band
        hdr["PIXSCALE"] = (self.pixel_scale / self.oversampling, "arcsec per PSF sample")
        hdr["OVERSAMP"] = (self.oversampling, "PSF samples per band pixel")
        fits.PrimaryHDU(self.data.astype(np.float32), header=hdr).writeto(path, overwrite=True)


def _bin_centred(data: np.ndarray, factor: int) -> np.ndarray:
    """Bin an odd oversampled image by an integer factor keeping it centred
    (pads symmetrically so the central sample stays central)."""
    if factor == 1:
        return data
    ny, nx = data.shape
    out_n = []
    pads = []
    for n in (ny, nx):
        m = int(np.ceil(n / factor))
        if m % 2 == 0:
            m += 1
        out_n.append(m)
        total = m * factor - n
        pads.append((total // 2, total - total // 2))
    padded = np.pad(data, pads)
    binned = padded.reshape(out_n[0], factor, out_n[1], factor).sum(axis=(1, 3))
    return binned / binned.sum()
