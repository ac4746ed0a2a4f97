"""The engine contract: what a fitting engine receives and must return.

Every engine (the built-in one, SourceXtractor++) implements :class:`Engine`.
Nothing downstream of the fit step knows which engine ran: the tile task
hands an engine the detected sources and the tile's cutouts, and gets back
one table row per source with the model's columns (see ``DESIGN.md``).

Conventions shared by all engines
---------------------------------
* Pixel coordinates are 0-based (numpy) inside cutouts; FITS 1-based only in
  catalog columns named ``*_IMAGE``.
* The shape of a source is defined on the detection grid (its WCS) and is
  shared by all bands; each band sees it through its own WCS, grid and PSF.
* ``ANGLE`` is in degrees, counter-clockwise from the +x axis of the detection
  image (SExtractor's ``THETA_IMAGE`` convention); ``RADIUS`` is the semi-major
  half-light radius in arcsec.
* Fluxes are in the images' pixel units (DJA: 10 nJy, AB zero point 28.90).
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

if TYPE_CHECKING:  # pragma: no cover
    from ..psf.base import PSF

__all__ = ["BandCutout", "Engine", "get_engine", "ENGINES"]


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


class Engine(abc.ABC):
    """A fitting engine.

    Subclasses set :attr:`name` and implement :meth:`fit` and :meth:`render`.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def fit(
        self,
        sources: Table,
        detection: BandCutout,
        bands: Sequence[BandCutout],
        model: str,
        options: Mapping[str, Any] | None = None,
    ) -> Table:
        """Fit ``model`` to every row of ``sources``.

        Parameters
        ----------
        sources : Table
            Detection catalog of the tile (see :mod:`dja_sepp.detect` for the
            columns; ``x``/``y`` are 0-based in the detection cutout).
        detection : BandCutout
            The detection image cutout, with ``segmap``.
        bands : sequence of BandCutout
            Measurement bands (blank bands already dropped), each with a PSF.
        model : str
            Name of a model definition (``config/models/{model}.yaml``) or a
            path to a YAML file.
        options : mapping, optional
            Engine options from the run configuration (``fit:`` section).

        Returns
        -------
        Table
            One row per input source, same order, with the model's output
            columns (``RA_MODEL``, ``FLUX_MODEL_{BAND}``, ... each with
            ``_err``) and diagnostics ``CHI2_REDUCED, N_ITER, STOP_REASON,
            FLAGS, FIT_DURATION``. A source that fails is flagged, never
            raised.
        """

    @abc.abstractmethod
    def render(self, catalog: Table, grid: BandCutout, model: str) -> np.ndarray:
        """Render the PSF-convolved models of ``catalog`` rows onto ``grid``.

        Uses only catalog columns (world coordinates, ``RADIUS`` etc.), so a
        merged catalog renders onto any band window (mosaic step). ``grid.sci``
        gives only the shape; ``grid.wcs``, ``grid.psf`` and ``grid.band`` are
        used. Returns a float32 image of ``grid.shape``.
        """


#: name -> "module:Class"; engines are imported lazily so optional ones cost
#: nothing when unused.
ENGINES: dict[str, str] = {
    "builtin": "dja_sepp.fit.engine:BuiltinEngine",
}


def get_engine(name: str = "builtin", **kwargs: Any) -> Engine:
    """Instantiate the engine registered as ``name``."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(
            f"unknown fitting engine {name!r}; choose one of {sorted(ENGINES)}"
        ) from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)
