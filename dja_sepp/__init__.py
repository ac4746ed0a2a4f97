"""dja_sepp: multi-band model fitting of whole DJA JWST fields on Dask."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
