"""The PSF object every engine evaluates.

A :class:`PSF` gives, for a band, an odd-sized image centred on its central
pixel, sampled on the band's pixels divided by ``oversampling``. Its sum is
the fraction of a point source's *total* light that falls in the stamp
(``ee_fraction``, 1 when the stamp is taken to hold all of it): a model made
with it has total fluxes although the stamp misses the far wings.
Variable PSFs (PSFEx) override :meth:`PSF.stamp` to depend on position.

PSF files declare their own sampling: ``PIXSCALE`` (ours) or ``PIXELSCL``
(STPSF/WebbPSF), arcsec per stored sample; they are resampled to the band's
grid when it differs. A file without sampling is refused, never guessed.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..settings import default_config

__all__ = ["PSF", "ImagePSF", "read_sampling", "resample"]

log = logging.getLogger(__name__)

GIVEN: dict = default_config()["psf"]["given"]
_WARNED: set[str] = set()


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
    ee_fraction : float
        Fraction of a point source's total light inside the stamp.
    """

    band: str = ""
    pixel_scale: float = 0.0
    oversampling: int = 1
    ee_fraction: float = 1.0
    #: True when :meth:`stamp` depends on the position (PSFEx polynomials):
    #: the engines then evaluate it at each group's / source's position
    variable: bool = False

    def stamp(self, x: float | None = None, y: float | None = None,
              oversampling: int = 1) -> np.ndarray:
        """PSF image at mosaic position ``(x, y)`` (band pixels), summing to
        the fraction of a point source's total light inside it.

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
        PSF image (any normalisation; its shape is kept, its sum set to
        ``ee_fraction``).
    pixel_scale : float
        Arcsec per band pixel.
    oversampling : int
        Samples per band pixel of ``data``.
    band : str
        Band name.
    ee_fraction : float
        Fraction of a point source's total light inside the stamp.
    """

    def __init__(self, data: np.ndarray, pixel_scale: float, oversampling: int = 1,
                 band: str = "", ee_fraction: float = 1.0):
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] % 2 == 0 or data.shape[1] % 2 == 0:
            raise ValueError(f"PSF image of band {band!r} must be 2-D with odd sides, "
                             f"got shape {data.shape}")
        total = data.sum()
        if not np.isfinite(total) or total <= 0:
            raise ValueError(f"PSF image of band {band!r} has no positive flux")
        if not 0 < ee_fraction <= 1.0 + 1e-6:
            raise ValueError(f"PSF of band {band!r}: enclosed-energy fraction {ee_fraction} not in (0, 1]")
        self.data = data / total   # unit-sum shape; stamp() applies ee_fraction
        self.ee_fraction = float(ee_fraction)
        self.pixel_scale = float(pixel_scale)
        self.oversampling = int(oversampling)
        self.band = band

    def stamp(self, x=None, y=None, oversampling: int = 1) -> np.ndarray:
        if oversampling == self.oversampling:
            return self.data * self.ee_fraction
        if self.oversampling % oversampling:
            raise ValueError(f"cannot resample a PSF stored at oversampling "
                             f"{self.oversampling} to {oversampling}")
        return _bin_centred(self.data, self.oversampling // oversampling) * self.ee_fraction

    @classmethod
    def from_fits(cls, path: str | Path, band: str = "", pixel_scale: float | None = None,
                  psf_scale: float | None = None,
                  storage_options: dict | None = None) -> "ImagePSF":
        """Read a PSF FITS image at its declared sampling, on the band's grid.

        Parameters
        ----------
        path : str or Path
            FITS file (first HDU with data).
        band : str
            Band name (else the header's ``FILTER``).
        pixel_scale : float, optional
            Arcsec per pixel of the *band* (the target grid). The PSF is
            resampled onto it when its own sampling differs. None keeps the
            file's sampling (band pixel = ``OVERSAMP`` samples).
        psf_scale : float, optional
            Arcsec per stored sample, for files whose header does not say.
        storage_options : dict, optional
            fsspec options for a remote ``path`` (e.g. S3 credentials).

        Raises
        ------
        ValueError
            When the sampling is unknown, or coarser than the band's grid.
        """
        from ..io.cache import is_remote
        remote = is_remote(str(path))
        with fits.open(path, use_fsspec=remote,
                       fsspec_kwargs=(storage_options or None) if remote else None) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            hdr = hdu.header
            data = np.asarray(hdu.data, dtype=np.float64)
        sample = read_sampling(hdr, path, psf_scale)
        band = band or str(hdr.get("FILTER", ""))
        ee = float(hdr.get("EEFRAC", 1.0))
        if "EEFRAC" not in hdr:
            _warn_small(path, data, sample)
        odd = data.shape[0] % 2 == 1 and data.shape[1] % 2 == 1
        if pixel_scale is None:   # the file's own grid (ours: band pixel = OVERSAMP samples)
            os = int(hdr.get("OVERSAMP", 1)) if "PIXSCALE" in hdr and odd else 1
            return cls(data if odd else resample(data, 1.0), sample * os, os, band, ee)
        ratio = float(pixel_scale) / sample
        rtol = float(GIVEN["sampling_rtol"])
        if ratio < 1 - rtol:
            raise ValueError(f"{path}: PSF sampled at {sample:.4g}\"/sample is coarser than the band "
                             f"grid ({pixel_scale:.4g}\"); give a PSF sampled at or finer than the band")
        if abs(ratio - 1) <= rtol and odd:
            return cls(data, pixel_scale, 1, band, ee)
        log.info("%s: PSF resampled from %.4g\"/sample to the %.4g\" band grid", path, sample, pixel_scale)
        # flux-conserving: the energy fraction of the stamp is unchanged
        return cls(resample(data, max(ratio, 1.0)), pixel_scale, 1, band, ee)

    def to_fits(self, path: str | Path) -> None:
        """Write the unit-sum PSF with its sampling (``PIXSCALE`` is the
        arcsec size of one *stored* sample) and ``EEFRAC``."""
        fits.PrimaryHDU(self.data.astype(np.float32), header=self.header()).writeto(path, overwrite=True)

    def header(self) -> fits.Header:
        """FITS header cards describing the sampling and normalisation."""
        hdr = fits.Header()
        hdr["FILTER"] = self.band
        hdr["PIXSCALE"] = (self.pixel_scale / self.oversampling, "arcsec per PSF sample")
        hdr["OVERSAMP"] = (self.oversampling, "PSF samples per band pixel")
        if self.ee_fraction < 1.0:   # absent: the stamp is taken to hold all the light
            hdr["EEFRAC"] = (self.ee_fraction, "fraction of total light in this stamp")
        return hdr


def read_sampling(header: fits.Header, path, given: float | None = None) -> float:
    """Arcsec per stored sample of a PSF file.

    ``given`` wins (with a warning when the header disagrees); then
    ``PIXELSCL`` (STPSF/WebbPSF: arcsec per sample of *this* extension, its
    ``OVERSAMP``/``DET_SAMP`` describe how it was computed), then ``PIXSCALE``
    (ours: arcsec per sample).

    Raises
    ------
    ValueError
        Naming ``path`` when nothing says the sampling.
    """
    declared = header.get("PIXELSCL", header.get("PIXSCALE"))
    if given is not None:
        if declared is not None and abs(float(declared) / float(given) - 1) > 1e-3:
            log.warning("%s: header says %.4g\"/sample, using the given %.4g\"", path, declared, given)
        return float(given)
    if declared is None or not np.isfinite(float(declared)) or float(declared) <= 0:
        raise ValueError(f"{path}: PSF sampling unknown (no PIXSCALE or PIXELSCL in the header); "
                         f"give its scale in arcsec per sample")
    return float(declared)


def _warn_small(path, data: np.ndarray, sample: float) -> None:
    """Once per file: a stamp narrower than ``psf.given.min_width`` arcsec
    taken to hold all the light makes every flux low by its missing wings."""
    width = min(data.shape) * sample
    if width < float(GIVEN["min_width"]) and str(path) not in _WARNED:
        _WARNED.add(str(path))
        msg = (f"{path}: PSF stamp only {width:.2f}\" wide with no EEFRAC: taken as holding all the "
               f"light, its missing wings make fluxes low (JWST: ~10 % outside 0.7\")")
        log.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


def resample(data: np.ndarray, factor: float) -> np.ndarray:
    """Rebin ``data`` into pixels ``factor`` samples wide (``factor`` >= 1),
    centred on the array's centre, output sides odd.

    Flux-conserving: each output pixel is the difference of the image's
    cumulative sum at its edges, interpolated by a cubic spline through the
    cumulative sums at the sample edges (linear interpolation, i.e. samples
    as flat boxes, blurs the result: +1 % PSF-fit fluxes for 0.02" -> 0.04").
    """
    wy = _rebin_matrix(data.shape[0], factor)
    wx = _rebin_matrix(data.shape[1], factor)
    return wy @ data @ wx.T


def _rebin_matrix(n: int, factor: float) -> np.ndarray:
    """``W[p, i]``: share of input sample ``i`` in output pixel ``p``, output
    pixels centred on the input's centre."""
    from scipy.interpolate import CubicSpline
    m = int(np.ceil(n / factor))
    m += 1 - m % 2
    centre = (n - 1) / 2.0
    lo = centre + (np.arange(m) - (m - 1) / 2.0 - 0.5) * factor
    knots = np.arange(n + 1) - 0.5                  # sample edges
    cumulative = np.tril(np.ones((n + 1, n)), -1)   # C(knot j) = sum of samples < j
    spline = CubicSpline(knots, cumulative, axis=0)
    at = np.clip(np.r_[lo, lo[-1] + factor], knots[0], knots[-1])
    c = spline(at)
    return c[1:] - c[:-1]


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
