"""dja_sepp: multi-band model fitting of whole DJA JWST fields on Dask.

The public API is small:

- :func:`run` fits a field (folder, URL or :class:`Field`) tile by tile on Dask
  and merges the catalog; its :class:`RunResult` has the catalog as an
  astropy Table (``result.catalog``) and ``result.summary()``;
- :class:`Field` / :func:`load_field` read DJA mosaics by window;
- :func:`make_tiles` cuts a field into tiles;
- :func:`load_config` resolves a run configuration;
- :func:`report` cross-matches a run with the DJA catalogs, flags every row
  and writes the morpho-phot table, figures and an HTML page
  (:mod:`dja_sepp.reporting`);
- :func:`size_field` measures a sample of a field's tiles and recommends an
  instance type, workers, tile size and instance count with predicted wall
  time and cost (:mod:`dja_sepp.sizing`).

The names are imported on first use, so ``dja-sepp --help`` and
``--version`` do not wait for astropy and Dask.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_WHERE = {"run": ".pipeline", "RunResult": ".pipeline", "Field": ".io.field",
          "load_field": ".io.field", "load_config": ".settings", "make_tiles": ".tiling",
          "TileGrid": ".tiling", "report": ".reporting", "ReportResult": ".reporting",
          "size_field": ".sizing", "SizingResult": ".sizing"}

__all__ = ["__version__", "run", "RunResult", "Field", "load_field", "make_tiles", "TileGrid",
           "load_config", "report", "ReportResult", "size_field", "SizingResult"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value   # later lookups skip this function
        return value
    raise AttributeError(f"module 'dja_sepp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
