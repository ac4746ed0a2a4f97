"""Pixel cutouts of one tile window, as the readers produce them.

:class:`BandCutout` is made by :meth:`dja_sepp.io.field.Image.cutout` and
consumed by detection, the engines and the renderer; it lives here, with its
producer, so that reading images never imports the fitting code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.wcs import WCS

if TYPE_CHECKING:  # pragma: no cover
    from ..psf.base import PSF

__all__ = ["BandCutout"]


@dataclass
class BandCutout:
    """One band's pixels over one tile window (core + halo).

    Attributes
    ----------
    band : str
        Upper-case band name, e.g. ``"F200W"``; ``"DETECTION"`` for the
        detection image.
    sci : ndarray
        Science pixels (float32), shape ``(ny, nx)``.
    wht : ndarray
        Inverse-variance weight, same shape; 0 where there is no data.
    wcs : astropy.wcs.WCS
        Celestial WCS of the cutout: pixel (0, 0) is ``sci[0, 0]``.
    origin : tuple of int
        ``(y0, x0)``: 0-based position of ``sci[0, 0]`` in the full mosaic.
    pixel_scale : float
        Arcsec per pixel.
    zeropoint : float
        AB zero point of the pixel unit.
    psf : PSF or None
        PSF of the band (sampled on this band's pixels, see
        :class:`dja_sepp.psf.base.PSF`).
    wavelength : float or None
        Pivot wavelength in micron (used by wavelength-dependent priors).
    segmap : ndarray or None
        Detection cutouts only: sep segmentation map (0 = sky, k = source with
        ``SEGMENT_ID == k``).
    """

    band: str
    sci: np.ndarray
    wht: np.ndarray
    wcs: WCS
    origin: tuple[int, int] = (0, 0)
    pixel_scale: float = 0.04
    zeropoint: float = 28.9
    psf: "PSF | None" = None
    wavelength: float | None = None
    segmap: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.sci.shape)  # type: ignore[return-value]
