"""Former name of :mod:`dja_sepp.pipeline.driver` (the run driver), kept so
existing imports keep working."""
from .driver import (RunResult, _grid, _write_tiling, field_from_config, merge_run,  # noqa: F401
                     mosaic_run, rebuild_grid, resume, run)

__all__ = ["run", "resume", "RunResult", "field_from_config", "merge_run", "mosaic_run",
           "rebuild_grid"]
