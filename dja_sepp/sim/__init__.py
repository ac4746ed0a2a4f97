"""GalSim simulations of DJA-like fields (needs the ``sim`` extra: galsim), and
scoring of catalogs against their truth (:mod:`dja_sepp.sim.score`, no galsim)."""
from .field import SimulatedField, field_wcs, simulate_field
from .psf import psf_image, psf_model
from .score import Score, format_score, score_catalog

__all__ = ["simulate_field", "SimulatedField", "field_wcs", "psf_model", "psf_image",
           "score_catalog", "format_score", "Score"]
