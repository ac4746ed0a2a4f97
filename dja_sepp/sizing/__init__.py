"""Instance sizing (``dja-sepp size``): measure a representative sample of
tiles under a sweep of tile size, workers and threads, fit a cost model with
its uncertainty, apply it to the whole field and recommend an instance type,
workers x threads, tile size and instance count with predicted wall time and
cost.

Data flow, one module each: :mod:`.probe` (what a tile task costs) ->
:mod:`.sample` (detection census of the field, representative tiles) ->
:mod:`.harness` (the sweep on a cluster) -> :mod:`.costmodel` (time and
memory models) -> :mod:`.prices` (the EC2 price table) -> :mod:`.recommend`
(ranking, ``sizing.md`` / ``sizing.json`` / ``sizing.png``).
"""
from __future__ import annotations

__all__ = ["size_field", "SizingResult", "CostModel", "load_prices", "recommend"]

_WHERE = {"size_field": "harness", "SizingResult": "harness", "CostModel": "costmodel",
          "load_prices": "prices", "recommend": "recommend"}


def __getattr__(name: str):
    """Names imported on first use (the tile task imports :mod:`.probe` only)."""
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
