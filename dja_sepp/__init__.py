"""dja_sepp: multi-band model fitting of whole DJA JWST fields on Dask.

The public API is small:

- :func:`run` fits a field (folder, URL or :class:`Field`) tile by tile on Dask
  and merges the catalog;
- :class:`Field` / :func:`load_field` read DJA mosaics by window;
- :func:`make_tiles` cuts a field into tiles;
- :func:`load_config` resolves a run configuration.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .io.field import Field, load_field
from .pipeline import RunResult, run
from .settings import load_config
from .tiling import TileGrid, make_tiles

__all__ = ["__version__", "run", "RunResult", "Field", "load_field", "make_tiles", "TileGrid",
           "load_config"]
