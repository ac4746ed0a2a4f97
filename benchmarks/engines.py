"""Side by side: the built-in engine and SourceXtractor++ on the same simulated field and cluster.

Simulates a field with :func:`dja_sepp.sim.simulate_field` (GalSim; ``--bands`` on their JWST grids,
galaxies on the tile borders, a few stars), runs the whole pipeline (``dja_sepp.run``: tiles, merge,
mosaics unless ``--no-mosaic``) once per engine on one LocalCluster of single-threaded workers with the
same PSFs (the simulator's, ``--psf truth``, or built by each run), and prints / writes as JSON:

- cost per fitted source-band: CPU seconds of the tile tasks (their thread plus SE++'s own process; holds on a
  loaded machine) and wall seconds of the tile fit stage (summed over tiles; every worker and SE++ run
  single-threaded), whole-run wall time, and the ratios SE++ / built-in;
- accuracy against the truth (:func:`dja_sepp.sim.score.score_catalog`): per band median and scatter of
  measured - true magnitude at S/N > 50, r_e and n biases of single-Sersic galaxies, completeness, purity;
- agreement of the two catalogs (rows of the same detection, galaxy model in both, S/N > 50): median |dmag|
  per band, median and scatter of RADIUS ratio and SERSIC difference;
- merge checks: duplicates removed by the safety net (``N_DUPL``), rows per run.

Usage (needs ``sourcextractor++`` on PATH)::

    python benchmarks/engines.py --size 24 --galaxies 80 --workers 2 --out bench_out/engines
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

__all__ = ["simulate", "run_engine", "agreement", "main"]

ENGINES = ("builtin", "sourcextractor++")


def simulate(out: Path, size: float, n_galaxies: int, bands, seed: int) -> tuple[dict, dict]:
    """The field (galaxies on tile borders, 2 stars) and its 2 x 2 tiling; a
    field simulated before in ``out`` with the same settings is reused."""
    from dja_sepp.demo import border_positions, demo_tiling
    from dja_sepp.sim import simulate_field
    record = out / "sim.json"
    settings = {"size": size, "n_galaxies": n_galaxies, "bands": list(bands), "seed": seed}
    if record.exists() and json.loads(record.read_text())["settings"] == settings:
        return json.loads(record.read_text())["sim"], demo_tiling(size)
    sim = simulate_field(out, field="eng", size_arcsec=size, bands=tuple(bands), n_galaxies=n_galaxies,
                         n_stars=2, seed=seed, blank=None, extra_positions=border_positions(size))
    info = {"images_dir": str(sim.images_dir), "truth_path": str(sim.truth_path),
            "psf_paths": {b: str(p) for b, p in sim.psf_paths.items()}}
    record.write_text(json.dumps({"settings": settings, "sim": info}))
    return info, demo_tiling(size)


def run_engine(engine: str, images: Path, out: Path, client, psfs, tiling: dict, mosaic: bool) -> dict:
    """One pipeline run with ``engine``; cost and merge numbers."""
    from astropy.io import fits

    from dja_sepp import run
    t0 = time.perf_counter()
    result = run(images, out, config={"tiling": tiling, "mosaic": {"enabled": mosaic},
                                      "fit": {"engine": engine}},
                 psfs=psfs, cluster=client, progress=False)
    wall = time.perf_counter() - t0
    cat_path = Path(result.catalog_path)
    header = fits.getheader(cat_path, 1)
    catalog = result.catalog
    bands = [c[len("FLUX_MODEL_"):] for c in catalog.colnames
             if c.startswith("FLUX_MODEL_") and not c.endswith("_err") and c.count("_") == 2]
    fitted = int(np.count_nonzero(np.isfinite(np.asarray(catalog["RA_MODEL"], float))))
    fit_s = float(result.timings.get("tile_fit", math.nan))
    # CPU seconds of the tile tasks (their thread, and SE++'s own process): load-independent
    statuses = [json.loads(p.read_text()) for p in (out / "tiles").glob("*/status.json")]
    cpu = sum(float((s.get("resources") or {}).get("cpu_s", 0.0)) for s in statuses)
    per = max(1, fitted * len(bands))
    return {"engine": engine, "wall": wall, "tile_fit_core_s": fit_s, "tile_cpu_s": cpu, "n_rows": len(catalog),
            "n_fitted": fitted, "bands": bands, "cpu_s_per_source_band": cpu / per,
            "core_s_per_source_band": fit_s / per,
            "complete": result.complete, "failed": result.failed, "n_dupl": int(header.get("N_DUPL", -1)),
            "mosaic": str(result.mosaic_path) if result.mosaic_path else None, "catalog": str(cat_path)}


def agreement(cat_a, cat_b, bands, model: str = "sersic_rg4", snr_min: float = 50.0) -> dict:
    """Rows of the same detection (same RA, DEC), both with the galaxy model and
    S/N > ``snr_min`` in the reddest band: how far the two engines' fits are apart."""
    key_a = {(round(float(r), 7), round(float(d), 7)): i for i, (r, d) in enumerate(zip(cat_a["RA"], cat_a["DEC"]))}
    pairs = [(key_a[k], j) for j, k in enumerate((round(float(r), 7), round(float(d), 7))
                                                 for r, d in zip(cat_b["RA"], cat_b["DEC"])) if k in key_a]
    ia, ib = (np.array(x, int) for x in zip(*pairs)) if pairs else (np.zeros(0, int), np.zeros(0, int))
    ref = bands[-1]

    def col(cat, name, idx):
        return np.asarray(cat[name], float)[idx]

    snr = col(cat_a, f"FLUX_MODEL_{ref}", ia) / col(cat_a, f"FLUX_MODEL_{ref}_err", ia)
    # (FITS string columns come back as bytes)
    good = (snr > snr_min) & (np.asarray(cat_a["MODEL"]).astype(str)[ia] == model) \
        & (np.asarray(cat_b["MODEL"]).astype(str)[ib] == model)
    good &= np.isfinite(col(cat_b, "RADIUS", ib))
    ia, ib = ia[good], ib[good]
    out = {"n": int(len(ia)), "dmag_abs_median": {}, "dmag_median": {}}
    for b in bands:
        d = col(cat_b, f"MAG_MODEL_{b}", ib) - col(cat_a, f"MAG_MODEL_{b}", ia)
        d = d[np.isfinite(d)]
        out["dmag_abs_median"][b] = float(np.median(np.abs(d))) if len(d) else math.nan
        out["dmag_median"][b] = float(np.median(d)) if len(d) else math.nan
    ratio = col(cat_b, "RADIUS", ib) / col(cat_a, "RADIUS", ia)
    dn = col(cat_b, "SERSIC", ib) - col(cat_a, "SERSIC", ia)
    mad = lambda x: float(1.4826 * np.median(np.abs(x - np.median(x)))) if len(x) else math.nan  # noqa: E731
    out.update(re_ratio_median=float(np.median(ratio)) if len(ratio) else math.nan, re_ratio_scatter=mad(ratio),
               n_diff_median=float(np.median(dn)) if len(dn) else math.nan, n_diff_scatter=mad(dn))
    return out


def _score(catalog_path: str, truth: Path) -> dict:
    from dja_sepp.sim.score import score_catalog
    s = score_catalog(catalog_path, truth).to_dict()
    return {k: s[k] for k in ("n_rows", "n_true", "purity", "completeness", "re_bias", "n_bias", "n_shape")} | {
        "dmag_hi": {b: (v["dmag_median_hi"], v["dmag_scatter_hi"], v["n_hi"]) for b, v in s["bands"].items()}}


def _table(runs: dict, scores: dict, agree: dict) -> str:
    b, s = runs["builtin"], runs["sourcextractor++"]
    lines = ["| engine | CPU s / source-band (tile tasks) | fit-stage wall s / source-band | run wall s | rows | N_DUPL | "
             "dmag vs truth S/N > 50 (median, scatter) per band | r_e bias, n bias vs truth |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ENGINES:
        r, sc = runs[name], scores[name]
        dm = ", ".join(f"{band} {v[0]:+.3f} / {v[1]:.3f} ({v[2]})" for band, v in sc["dmag_hi"].items())
        lines.append(f"| {name} | {r['cpu_s_per_source_band']:.3f} | {r['core_s_per_source_band']:.3f} | "
                     f"{r['wall']:.0f} | {r['n_rows']} | "
                     f"{r['n_dupl']} | {dm} | {sc['re_bias']:+.3f}, {sc['n_bias']:+.2f} |")
    lines.append("")
    lines.append(f"cost ratio SE++ / built-in: {s['cpu_s_per_source_band'] / b['cpu_s_per_source_band']:.1f}x "
                 f"(CPU), {s['core_s_per_source_band'] / b['core_s_per_source_band']:.1f}x (fit-stage wall), "
                 f"{s['wall'] / b['wall']:.1f}x (whole run)")
    lines.append(f"agreement on {agree['n']} S/N > 50 galaxies: median |dmag| "
                 + ", ".join(f"{k} {v:.3f}" for k, v in agree["dmag_abs_median"].items())
                 + f"; r_e ratio {agree['re_ratio_median']:.3f} (scatter {agree['re_ratio_scatter']:.3f}), "
                   f"n difference {agree['n_diff_median']:+.2f} (scatter {agree['n_diff_scatter']:.2f})")
    return "\n".join(lines)


def one_tile(out: Path, size: float, n_galaxies: int, bands, seed: int, model: str = "sersic_rg4") -> dict:
    """Both engines in this process on one tile (the whole field, truth PSFs,
    our detection): CPU seconds per fitted source-band, accuracy against the
    truth and agreement (``--mode tile``; no Dask, so it fits a busy machine)."""
    from astropy.table import hstack

    from dja_sepp.fit.base import get_engine
    from dja_sepp.settings import default_config
    from dja_sepp.sim import simulate_field
    from dja_sepp.sim.field import whole_field
    sim = simulate_field(out, field="one", size_arcsec=size, bands=tuple(bands), n_galaxies=n_galaxies,
                         n_stars=0, seed=seed, blank=None, gzip=False)
    cfg = default_config()
    sources, det, cuts = whole_field(sim, cfg["detection"])
    catalogs, cost = {}, {}
    for engine in ENGINES:
        t0 = time.process_time()
        fitted = get_engine(engine).fit(sources, det, cuts, model, cfg["fit"])
        cpu = time.process_time() - t0 + float(fitted.meta.pop("HELPER_CPU", 0.0))
        keep = [c for c in sources.colnames if c not in fitted.colnames]
        catalogs[engine] = hstack([sources[keep], fitted])
        n = int(np.count_nonzero(np.isfinite(np.asarray(fitted["RA_MODEL"], float))))
        cost[engine] = {"cpu_s": cpu, "n_fitted": n, "cpu_s_per_source_band": cpu / max(1, n * len(cuts))}
        catalogs[engine].write(out / f"catalog_{engine.replace('+', 'p')}.fits", overwrite=True)
    names = [c.band for c in cuts]
    from dja_sepp.sim.score import score_catalog
    scores = {e: score_catalog(c, sim.truth_path, reference_band=names[-1]).to_dict() for e, c in catalogs.items()}
    agree = agreement(catalogs["builtin"], catalogs["sourcextractor++"], names, model)
    return {"cost": cost, "agreement": agree, "n_sources": len(sources),
            "scores": {e: {k: s[k] for k in ("re_bias", "n_bias", "n_shape")}
                       | {"dmag_hi": {b: (v["dmag_median_hi"], v["dmag_scatter_hi"], v["n_hi"])
                                      for b, v in s["bands"].items()}} for e, s in scores.items()}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=float, default=24.0, help="field side, arcsec")
    p.add_argument("--galaxies", type=int, default=80)
    p.add_argument("--bands", default="F200W,F277W,F444W")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--psf", choices=("truth", "built"), default="truth")
    p.add_argument("--no-mosaic", action="store_true")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help="engines to run now (the others' results are read from an earlier run in --out)")
    p.add_argument("--out", default="bench_out/engines")
    p.add_argument("--mode", choices=("pipeline", "tile"), default="pipeline",
                   help="pipeline: both engines through dja_sepp.run; tile: one tile in this process")
    args = p.parse_args(argv)
    if args.mode == "tile":
        result = one_tile(Path(args.out), args.size, args.galaxies, args.bands.split(","), args.seed)
        Path(args.out, "one_tile.json").write_text(json.dumps(result, indent=1, default=float))
        print(json.dumps(result, indent=1, default=float))
        return result
    from distributed import Client, LocalCluster

    from dja_sepp.deploy.cluster import THREAD_ENV
    from dja_sepp.fit.sepp import find_executable
    todo = [e for e in args.engines.split(",") if e]
    if "sourcextractor++" in todo:
        find_executable()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim, tiling = simulate(out / "images", args.size, args.galaxies, args.bands.split(","), args.seed)
    psfs = sim["psf_paths"] if args.psf == "truth" else None
    saved = out / "runs.json"
    runs = json.loads(saved.read_text()) if saved.exists() else {}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, env=THREAD_ENV,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for engine in todo:
            runs[engine] = run_engine(engine, Path(sim["images_dir"]), out / engine.replace("+", "p"), client,
                                      psfs, tiling, not args.no_mosaic)
            earlier = json.loads(saved.read_text()) if saved.exists() else {}  # another engine's run
            runs = {**earlier, engine: runs[engine]}
            saved.write_text(json.dumps(runs, indent=1, default=str))
    if not all(e in runs for e in ENGINES):
        print(json.dumps(runs, indent=1, default=str))
        return runs
    from astropy.table import Table
    scores = {e: _score(r["catalog"], sim["truth_path"]) for e, r in runs.items()}
    bands = runs["builtin"]["bands"]
    agree = agreement(Table.read(runs["builtin"]["catalog"]), Table.read(runs["sourcextractor++"]["catalog"]), bands)
    result = {"args": vars(args), "runs": runs, "scores": scores, "agreement": agree,
              "table": _table(runs, scores, agree)}
    (out / "engines.json").write_text(json.dumps(result, indent=1, default=float))
    print(result["table"])
    return result


if __name__ == "__main__":
    main()
