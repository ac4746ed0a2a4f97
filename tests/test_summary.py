"""The closing summary: times per stage, rows, flag counts, failures, dropped
bands and where every output is (issue 17)."""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from dja_sepp.fit.flags import FitFlag
from dja_sepp.merge import MergeStats
from dja_sepp.pipeline.driver import _dropped
from dja_sepp.pipeline.result import RunResult, flag_counts


def test_flag_counts_and_dropped_bands():
    cat = Table({"FLAGS": np.array([0, 0, 2, 2 | 32768, 512], np.int32)})
    assert flag_counts(cat) == {"clean": 2, "BLENDED": 2, "AT_BOUND": 1, "PARTIAL_COVERAGE": 1}
    tiles = [{"F150W": "zero weight everywhere"}, {}, {"F150W": "all pixels zero", "F090W": "x"}]
    assert _dropped(tiles) == {"F090W": [1, "x"], "F150W": [2, "zero weight everywhere"]}


def test_summary_lists_times_rows_flags_failures_bands_and_outputs():
    stats = MergeStats(**{f: 0 for f in MergeStats.__dataclass_fields__})
    stats.n_output = 152
    result = RunResult("/r", "/r/catalog.fits", 4, 3, 0, {"r01c01": "MemoryError: too big"},
                       merge=stats,
                       timings={"setup": 2.0, "psf": 61.0, "tiles": 300.0, "merge": 1.0,
                                "mosaic": 95.0, "total": 460.0},
                       flag_counts={"clean": 120, "BLENDED": 12, "PARTIAL_COVERAGE": 8},
                       dropped_bands={"F150W": [2, "zero weight everywhere"]},
                       outputs={"catalog (sersic_rg4)": "/r/catalog.fits (+ .parquet)",
                                "model / residual mosaics": "/r/mosaic.zarr",
                                "this summary": "/r/summary.json"})
    text = result.summary()
    assert "INCOMPLETE: 1 tile(s) failed" in text and "failed r01c01: MemoryError" in text
    assert "152 sources" in text
    assert "FLAGS == 0: 120 rows" in text and "BLENDED 12" in text and "PARTIAL_COVERAGE 8" in text
    assert "F150W over 2 of 4 tiles (zero weight everywhere)" in text
    assert "setup 2 s, psf 61 s, tiles 300 s, merge 1 s, mosaic 95 s, total 460 s" in text
    lines = text.splitlines()
    start = lines.index("outputs:")
    assert [line.split()[-1] for line in lines[start + 1:]] == [
        ".parquet)", "/r/mosaic.zarr", "/r/summary.json"]
    assert str(int(FitFlag.PARTIAL_COVERAGE)) == "32768"
