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
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import Table

from ..io.cutout import BandCutout  # re-exported: made by io, consumed by every engine

__all__ = ["BandCutout", "Engine", "get_engine", "ENGINES", "engine_for", "check_engines"]


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
            raised. An engine that detects again on the residual of its
            models (``fit.residual_detection``) appends one row per source
            it found and puts their detection rows in
            ``meta["RESIDUAL_SOURCES"]`` and the segmentation with their
            segments in ``meta["RESIDUAL_SEGMAP"]``.
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
    "sourcextractor++": "dja_sepp.fit.sepp:SeppEngine",
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


def engine_for(fit: Mapping[str, Any], model: str) -> str:
    """The engine that fits ``model``: ``fit.model_engines[model]``, else ``fit.engine``."""
    return str((fit.get("model_engines") or {}).get(model) or fit.get("engine") or "builtin")


def check_engines(fit: Mapping[str, Any]) -> None:
    """Fail before any tile work when an engine of the run cannot run here.

    Raises
    ------
    ValueError
        An unknown engine, or one whose executable is missing (its message
        names it, e.g. ``sourcextractor++``).
    """
    for name in sorted({engine_for(fit, m) for m in fit.get("models") or []} | {engine_for(fit, "")}):
        engine = get_engine(name)
        check = getattr(engine, "check_available", None)
        if check is not None:
            check(fit)
