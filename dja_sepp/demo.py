"""``dja-sepp demo``: simulate a small JWST-like field and run the whole pipeline.

The simulated field (GalSim, :mod:`dja_sepp.sim`) is written as DJA-named
FITS files in ``OUT/images``, its truth in ``OUT/truth.fits``, and the run in
``OUT/run``. The tiling is 2 x 2 (or 3 x 3 for larger fields) and the
simulator places galaxies exactly on core borders and corners, so the demo
shows ownership and merging at work. The PSFs are built from the field's
stars, as in a run on real images (``psf="truth"``: the simulator's PSFs).
The demo ends with the report (:mod:`dja_sepp.reporting`) against
DJA-format catalogs made from the truth, and with its catalog scored against
the truth (:func:`compare_with_truth`).
"""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from .pipeline import RunResult, run
from .tiling import grid_geometry

__all__ = ["run_demo", "demo_report", "compare_with_truth", "demo_stars", "demo_tiling", "border_positions"]

DET_SCALE = 0.04  # arcsec, DJA long-wave / detection grid
ALIGN = 64


def demo_tiling(size: float) -> dict:
    """Tiling settings giving 2 x 2 tiles (3 x 3 above 60") on a ``size``" field."""
    n_pix = int(round(size / DET_SCALE))
    per_axis = 2 if size <= 60 else 3
    core = int(math.ceil(n_pix / per_axis / ALIGN)) * ALIGN
    return {"tile_size": core * DET_SCALE, "overlap": 3.0, "align": ALIGN}


def demo_stars(size: float) -> int:
    """Stars of a ``size``" demo field: 20 on the default 32" field, more on
    smaller ones, so that every band (F150W is blank over 30 % of the width)
    keeps enough isolated, bright stars for the PSF step (at least
    ``psf.stars.min_stars``; 20 stars on a 20" field left 4 in F150W)."""
    return min(60, max(20, int(math.ceil(20 * (32.0 / size) ** 1.5))))


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
             psf: str = "build", progress: bool = True, with_report: bool = True,
             compare: bool = True, show_summary: bool = False, **overrides) -> RunResult:
    """Simulate a field into ``out/images`` and run the pipeline into ``out/run``.

    Parameters
    ----------
    psf : {"build", "truth"}
        Build the PSFs from the field's stars with the PSF step, as a run on
        real images does (default), or use the simulator's true PSFs.
    with_report : bool
        End with :func:`demo_report`: DJA-format catalogs from the truth and
        the report (``out/run/report/index.html``).
    compare : bool
        End with the catalog against the simulation's truth
        (:func:`compare_with_truth`: printed, ``out/truth_comparison.png``
        and ``.json``).
    show_summary : bool
        Print the run's summary before the comparison (the command line).
    """
    if psf not in ("build", "truth"):
        raise ValueError(f"psf must be 'build' or 'truth', not {psf!r}")
    from .sim import simulate_field
    out = Path(out)
    images = out / "images"
    print(f"dja-sepp demo: simulating a {size:.0f}\" x {size:.0f}\" field with {n_galaxies} "
          f"galaxies into {images}", file=sys.stderr)
    sim = simulate_field(images, field="demo", size_arcsec=size, n_galaxies=n_galaxies,
                         seed=seed, extra_positions=border_positions(size),
                         n_stars=demo_stars(size))
    shutil.copyfile(sim.truth_path, out / "truth.fits")
    config = {"tiling": demo_tiling(size)}
    if workers:
        config["cluster"] = {"n_workers": workers}
    psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()} if psf == "truth" else None
    result = run(images, out / "run", models=models, config=config, psfs=psfs,
                 progress=progress, **overrides)
    print(f"dja-sepp demo: images {images}\n  truth {out / 'truth.fits'}\n"
          f"  run {out / 'run'} (catalog {result.catalog_path})", file=sys.stderr)
    if show_summary:
        print(result.summary())
    if with_report and result.catalog_path:
        try:
            demo_report(out, result.run_dir, sim.truth_path, sim.bands, seed)
        except Exception as exc:  # the run and its comparison with the truth stand without it
            print(f"dja-sepp demo: the report step failed ({type(exc).__name__}: {exc}); "
                  f"redo it with dja-sepp report {result.run_dir}", file=sys.stderr)
    if compare and result.catalog_path:
        _, text = compare_with_truth(result.catalog_path, out / "truth.fits", out,
                                     psf_note="PSFs built by the run" if psf == "build"
                                     else "the simulator's true PSFs (--truth-psf)")
        print(text)
    return result


def compare_with_truth(catalog, truth, out_dir, psf_note: str = "") -> tuple[Any, str]:
    """The demo's catalog against its truth (:func:`dja_sepp.sim.score.score_catalog`):
    a few printed lines (completeness, purity, magnitude offsets per band)
    and ``out_dir/truth_comparison.png`` / ``.json``; returns ``(score, text)``."""
    import json
    from .sim.score import score_catalog
    out_dir = Path(out_dir)
    score = score_catalog(catalog, truth)
    ref = score.reference_band
    lines = [f"dja-sepp demo: the catalog against the simulation's truth"
             + (f" ({psf_note})" if psf_note else "") + ":",
             f"  {score.n_rows} rows, {score.n_true} true objects, {score.n_matched} matched one to "
             f"one within 0.15\"",
             f"  completeness {score.completeness:.3f}: true objects brighter than "
             f"{score.mag_limit:g} mag in {ref} that have a row ({score.n_complete_eligible})",
             f"  purity {score.purity:.3f}: rows with S/N > 5 in {ref} that are true objects "
             f"({score.n_snr5})",
             "  magnitude offsets, measured - true, median (robust scatter, rows):",
             f"  {'band':>6}  {'S/N > 50':>22}  {'20 < S/N <= 50':>22}"]
    for band, bs in score.bands.items():
        def cell(m, sc, n):
            return f"{m:+.3f} ({sc:.3f}, {n})" if n else "-"
        lines.append(f"  {band:>6}  {cell(bs.dmag_median_hi, bs.dmag_scatter_hi, bs.n_hi):>22}  "
                     f"{cell(bs.dmag_median_mid, bs.dmag_scatter_mid, bs.n_mid):>22}")
    png = _comparison_figure(catalog, truth, score, out_dir / "truth_comparison.png")
    (out_dir / "truth_comparison.json").write_text(json.dumps(score.to_dict(), indent=1, default=float))
    lines.append(f"  figure {png}")
    return score, "\n".join(lines)


def _comparison_figure(catalog, truth, score, path: Path) -> Path:
    """Measured - true magnitude against true magnitude per band, and the
    fraction of true objects with a row per magnitude bin."""
    import numpy as np
    from astropy.table import Table
    from matplotlib.figure import Figure
    from .sim.score import _column, _positions, match_one_to_one
    cat = catalog if isinstance(catalog, Table) else Table.read(catalog)
    tru = truth if isinstance(truth, Table) else Table.read(truth)
    ra, dec = _positions(cat, True)
    rows, trues, _ = match_one_to_one(ra, dec, _column(tru, "RA"), _column(tru, "DEC"), 0.15)
    bands = list(score.bands)
    fig = Figure(figsize=(4 * (len(bands) + 1), 3.6))
    axes = fig.subplots(1, len(bands) + 1, squeeze=False)[0]
    for ax, band in zip(axes, bands):
        true_mag = _column(tru, f"MAG_{band}")[trues]
        with np.errstate(invalid="ignore", divide="ignore"):
            dmag = -2.5 * np.log10(_column(cat, f"FLUX_MODEL_{band}")[rows]
                                   / _column(tru, f"FLUX_{band}")[trues])
        ax.scatter(true_mag, dmag, s=6, alpha=0.6)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylim(-1, 1)
        ax.set_xlabel(f"true {band} [AB mag]")
        ax.set_ylabel("measured - true [mag]")
        ax.set_title(band)
    ref = score.reference_band
    mag = _column(tru, f"MAG_{ref}")
    found = np.zeros(len(tru), bool)
    found[trues] = True
    edges = np.arange(np.floor(np.nanmin(mag)), np.ceil(np.nanmax(mag)) + 0.5, 0.5)
    n_all, _ = np.histogram(mag, edges)
    n_found, _ = np.histogram(mag[found], edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        axes[-1].step(edges[:-1], n_found / n_all, where="post")
    axes[-1].set_ylim(0, 1.05)
    axes[-1].set_xlabel(f"true {ref} [AB mag]")
    axes[-1].set_ylabel("fraction with a catalog row")
    axes[-1].set_title(f"completeness {score.completeness:.2f}, purity {score.purity:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


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
