"""GalSim simulations of DJA-like fields (needs the ``sim`` extra: galsim)."""
from .field import SimulatedField, field_wcs, simulate_field
from .psf import psf_image, psf_model

__all__ = ["simulate_field", "SimulatedField", "field_wcs", "psf_model", "psf_image"]
