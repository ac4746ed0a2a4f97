"""``dja-sepp demo``: simulate a small JWST-like field and run the whole pipeline.

The simulated field (GalSim, :mod:`dja_sepp.sim`) is written as DJA-named
FITS files in ``OUT/images``, its truth in ``OUT/truth.fits``, and the run in
``OUT/run``. The tiling is 2 x 2 (or 3 x 3 for larger fields) and the
simulator places galaxies exactly on core borders and corners, so the demo
shows ownership and merging at work. The demo ends with the report
(:mod:`dja_sepp.reporting`) against DJA-format catalogs made from the truth.
"""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .pipeline import RunResult, run
from .tiling import grid_geometry

__all__ = ["run_demo", "demo_report", "demo_tiling", "border_positions"]

DET_SCALE = 0.04  # arcsec, DJA long-wave / detection grid
ALIGN = 64


def demo_tiling(size: float) -> dict:
    """Tiling settings giving 2 x 2 tiles (3 x 3 above 60") on a ``size``" field."""
    n_pix = int(round(size / DET_SCALE))
    per_axis = 2 if size <= 60 else 3
    core = int(math.ceil(n_pix / per_axis / ALIGN)) * ALIGN
    return {"tile_size": core * DET_SCALE, "overlap": 3.0, "align": ALIGN}


def border_positions(size: float) -> list[tuple[float, float]]:
    """Detection-grid positions exactly on core borders and corners."""
    tiling = demo_tiling(size)
    n_pix = int(round(size / DET_SCALE))
    core, _, nrows, ncols = grid_geometry((n_pix, n_pix), DET_SCALE, tiling["tile_size"],
                                          tiling["overlap"], tiling["align"])
    edges = [k * core - 0.5 for k in range(1, max(nrows, ncols))]
    out = []
    for e in edges:
        out += [(e, 0.3 * n_pix), (0.7 * n_pix, e)]  # on a border
        for f in edges:
            out.append((e, f))                       # on a corner
    return out


def run_demo(out: str | Path, size: float = 32.0, n_galaxies: int = 200, seed: int = 1,
             workers: int | None = None, models: Sequence[str] | None = None,
             psf: str = "truth", progress: bool = True, with_report: bool = True,
             **overrides) -> RunResult:
    """Simulate a field into ``out/images`` and run the pipeline into ``out/run``.

    Parameters
    ----------
    psf : {"truth", "build"}
        Use the simulator's true PSFs (default), or build them from the
        field's stars with the PSF step (needs :mod:`dja_sepp.psf` builders).
    with_report : bool
        End with :func:`demo_report`: DJA-format catalogs from the truth and
        the report (``out/run/report/index.html``).
    """
    from .sim import simulate_field
    out = Path(out)
    images = out / "images"
    print(f"dja-sepp demo: simulating a {size:.0f}\" x {size:.0f}\" field with {n_galaxies} "
          f"galaxies into {images}", file=sys.stderr)
    sim = simulate_field(images, field="demo", size_arcsec=size, n_galaxies=n_galaxies,
                         seed=seed, extra_positions=border_positions(size))
    shutil.copyfile(sim.truth_path, out / "truth.fits")
    config = {"tiling": demo_tiling(size)}
    if workers:
        config["cluster"] = {"n_workers": workers}
    psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()} if psf == "truth" else None
    result = run(images, out / "run", models=models, config=config, psfs=psfs,
                 progress=progress, **overrides)
    print(f"dja-sepp demo: images {images}\n  truth {out / 'truth.fits'}\n"
          f"  run {out / 'run'} (catalog {result.catalog_path})", file=sys.stderr)
    if with_report and result.catalog_path:
        demo_report(out, result.run_dir, sim.truth_path, sim.bands, seed)
    return result


def demo_report(out: Path, run_dir: str, truth_path, bands, seed: int = 1):
    """DJA-format catalogs written from the truth (made-up photo-z and
    rest-frame colours, :mod:`dja_sepp.sim.dja`) into ``out/dja``, then the
    report of the run (``run_dir/report/index.html``)."""
    from .reporting import report
    from .sim.dja import write_dja_catalogs
    phot, zout = write_dja_catalogs(truth_path, Path(out) / "dja", "demo", bands=list(bands),
                                    seed=seed)
    rep = report(str(run_dir), str(phot), str(zout))
    print(f"dja-sepp demo: report {rep.index} (DJA-format catalogs made from the truth: "
          f"{phot.parent})", file=sys.stderr)
    return rep
