"""The Dask pipeline: tiles -> fits -> merge (-> mosaics)."""
from .driver import RunResult, merge_run, run
from .tile_task import process_tile

__all__ = ["run", "RunResult", "merge_run", "process_tile"]
