"""Pipeline benchmark on a crowded, realistic simulated field, scored per *true* object.

Default (``--mode crowded``): simulate a demo-like field at realistic JWST density
(GalSim, :mod:`dja_sepp.sim`: ``--density`` galaxies per arcmin^2 to mag 28,
stars with six diffraction spikes of which some are bright, blends,
drizzle-like correlated noise, 5 bands on the 0.02"/0.04" grids, F150W blank
over 30 % of the field), run the whole pipeline (``dja_sepp.run`` on a
LocalCluster of single-threaded workers, PSFs built by the run unless
``--psf truth``), score the merged catalog against the truth
(:func:`dja_sepp.sim.score.score_catalog`) and print / write as JSON:

- rows per true object, purity (S/N > 5 rows that are a true object within
  0.15"), completeness (mag < 26), spike fragments, flux bias and scatter per band;
- core-seconds (workers x wall time of the whole run) per catalog row-band and
  per true object-band (issue 12's number to drive down), also from the tile
  tasks alone and from the rows' FIT_DURATION;
- timings: setup (incl. the PSF step), tile read / detect / fit / write
  (summed over tiles, core-s), tiles wall, merge; peak RSS per worker.

``--mode scaling`` keeps the older measurement: 1 and 2 workers on the same
field and 2 workers on twice the area (parallel efficiency, memory flat in area).

``--mode threads``: two cores on the busiest tiles of a run: one tile with
``fit.threads`` 1 and 2 and with ``fit.processes`` 2 (speedups of the
median of ``--repeat`` runs, identical catalogs, core-s), and two tiles at
once in two threads of one process or in two processes.

Usage::

    python benchmarks/pipeline.py                    # 60", 150/arcmin^2, 1 worker, built PSFs
    python benchmarks/pipeline.py --size 20 --psf truth --out bench_out/small
    python benchmarks/pipeline.py --mode scaling --size 40
    python benchmarks/pipeline.py --model sersic_rg4,B+D   # B+D cost next to Sersic
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

__all__ = ["worker_peak_rss_mb", "simulate", "one_run", "profile_tile", "crowded", "scaling", "threads", "main"]

# the driver (PSF step, merge, profiling) is single-threaded too, as the workers are:
# core-seconds = workers x wall only holds when no process uses more than one core
_SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "NUMBA_NUM_THREADS": "1"}

BANDS = ("F150W", "F200W", "F277W", "F356W", "F444W")


def worker_peak_rss_mb() -> float:
    """Resident-memory high-water mark of the calling process (MB; run on each worker).

    ``VmHWM``, not ``getrusage``: a spawned worker's ``ru_maxrss`` keeps the
    driver's resident size at the moment it was forked (Linux carries it over
    ``exec``), so it reads the driver's peak whenever that is the larger. Each
    tile task resets the mark when it starts, so after a run this is the peak
    since the worker's last tile began (see :func:`tile_memory`)."""
    from dja_sepp.sizing.probe import peak_rss_mb
    return peak_rss_mb()


def tile_memory(run_dir: Path) -> dict:
    """Exact per-tile peaks (``tiles/*/status.json``: each tile task resets its
    worker's high-water mark when it starts): median and max over tiles, the
    max per worker address, and the largest resident size a worker had before
    a tile (MB)."""
    import statistics
    status = [json.loads(f.read_text()) for f in Path(run_dir).glob("tiles/*/status.json")]
    peaks, per_worker, before = [], {}, []
    for st in status:
        res = st.get("resources") or {}
        if res.get("peak_rss_mb"):
            peaks.append(res["peak_rss_mb"])
            w = (st.get("attempt") or {}).get("worker")
            per_worker[w] = max(per_worker.get(w, 0.0), res["peak_rss_mb"])
        if res.get("rss_before_mb"):
            before.append(res["rss_before_mb"])
    return {"median": statistics.median(peaks) if peaks else float("nan"), "max": max(peaks, default=float("nan")),
            "per_worker": per_worker, "worker_rest_max": max(before, default=float("nan"))}


def simulate(out: Path, size: float, density: float, seed: int, stars_per_arcmin2: float,
             correlated_noise: float | None, bands=BANDS, bulge_disk_fraction: float = 0.25):
    """A crowded demo-like field (with galaxies on the tile borders) and its tiling.

    Stars: ``stars_per_arcmin2`` (at least 8, so the PSF step has >= 5 usable
    ones on small fields), a quarter of them (at least 1) bright (mag 19.5-21).
    """
    from dja_sepp.demo import border_positions, demo_tiling
    from dja_sepp.sim import simulate_field
    area = (size / 60.0) ** 2
    n_stars = max(8, int(round(stars_per_arcmin2 * area)))
    t0 = time.perf_counter()
    sim = simulate_field(out, field="bench", size_arcsec=size, bands=tuple(bands), density=density,
                         n_stars=n_stars, bright_stars=max(1, n_stars // 4), seed=seed,
                         extra_positions=border_positions(size), correlated_noise=correlated_noise,
                         bulge_disk_fraction=bulge_disk_fraction)
    return sim, demo_tiling(size), time.perf_counter() - t0


def one_run(images: Path, out: Path, workers: int, psfs: dict | None, tiling: dict,
            model: str | None = None, settings: dict | None = None) -> dict:
    """Run the whole pipeline on a fresh LocalCluster (``model``: the fitted
    model, default the configuration's; ``settings``: ``section__key`` overrides
    of the configuration); timings, memory, result."""
    from distributed import Client, LocalCluster

    from dja_sepp import run
    from dja_sepp.deploy.cluster import THREAD_ENV
    with LocalCluster(n_workers=workers, threads_per_worker=1, env=THREAD_ENV,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        result = run(images, out, config={"tiling": tiling, "mosaic": {"enabled": False}},
                     psfs=psfs, cluster=client, progress=False, models=[model] if model else None,
                     **(settings or {}))
        wall = time.perf_counter() - t0
        rss = client.run(worker_peak_rss_mb)
    tiles = tile_memory(Path(result.run_dir))
    t = result.timings
    tile_core_s = {s: t.get(f"tile_{s}", 0.0) for s in ("read", "detect", "fit", "write", "total")}
    return {"workers": workers, "wall": wall, "setup": t.get("setup", 0.0), "psf": t.get("psf", 0.0),
            "tiles_wall": t.get("tiles", 0.0), "merge": t.get("merge", 0.0),
            "tile_core_s": tile_core_s, "n_tiles": result.n_tiles, "failed": result.failed,
            "n_rows": result.merge.n_output if result.merge else 0,
            # a worker's peak over its tiles (the PSF step's tasks, before them, are not counted)
            "peak_worker_rss_mb": sorted(max(v, tiles["per_worker"].get(w, 0.0)) for w, v in rss.items()),
            "driver_peak_rss_mb": worker_peak_rss_mb(), "tile_peak_rss_mb": tiles,
            "complete": result.complete, "catalog": str(result.catalog_path)}


def _print_run(r: dict) -> None:
    c = r["tile_core_s"]
    print(f"run: {r['workers']} worker(s), {r['n_tiles']} tiles, wall {r['wall']:.1f} s = setup "
          f"{r['setup']:.1f} + PSF step {r['psf']:.1f} + tiles {r['tiles_wall']:.1f} + merge "
          f"{r['merge']:.1f} (+ rest)")
    print(f"tile tasks (core-s, summed): read {c['read']:.1f}  detect {c['detect']:.1f}  "
          f"fit {c['fit']:.1f}  write {c['write']:.1f}  total {c['total']:.1f}")
    t = r["tile_peak_rss_mb"]
    print(f"peak RSS per worker (MB): {', '.join(f'{m:.0f}' for m in r['peak_worker_rss_mb'])}; "
          f"driver {r['driver_peak_rss_mb']:.0f}; per tile median {t['median']:.0f}, max {t['max']:.0f} "
          f"(worker at rest before a tile: up to {t['worker_rest_max']:.0f})")
    if r["failed"]:
        print(f"FAILED tiles: {r['failed']}")


def profile_tile(images: Path, run_dir: Path, tiling: dict, out: Path, top: int = 25) -> dict:
    """cProfile the busiest tile of a finished run again, in this process.

    Writes ``out/tile.pstats`` (open with ``python -m pstats`` or snakeviz) and
    returns the ``top`` functions by own time and the ``top`` dja_sepp
    functions by cumulative time: where the fit time goes, whatever the engine.
    """
    import cProfile
    import pstats

    import yaml

    from dja_sepp.pipeline import process_tile
    from dja_sepp.pipeline.driver import field_from_config
    from dja_sepp.settings import load_config
    from dja_sepp.tiling import make_tiles
    used = yaml.safe_load((run_dir / "run.yaml").read_text())   # the run's own models and settings
    recorded = used.pop("run")
    cfg = load_config({**used, "tiling": tiling, "mosaic": {"enabled": False}})
    fld = field_from_config(str(images), cfg)
    grid = make_tiles(fld, tiling["tile_size"], tiling["overlap"], tiling["align"])
    psf_paths = {b: str(run_dir / p) if not Path(p).is_absolute() and "://" not in p else p
                 for b, p in recorded["psf_files"].items()}

    def n_sources(tile):
        status = run_dir / "tiles" / tile.id / "status.json"
        return json.loads(status.read_text()).get("n_sources", 0) if status.exists() else 0
    tile = max(grid.tiles, key=n_sources)
    prof = cProfile.Profile()
    prof.enable()
    status = process_tile(tile, fld, cfg, str(out / "run"), psf_paths)
    prof.disable()
    out.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(out / "tile.pstats")
    stats = pstats.Stats(prof).stats  # (file, line, func) -> (cc, nc, tottime, cumtime, callers)

    def rows(keys):
        return [{"function": f"{Path(k[0]).name}:{k[1]}:{k[2]}", "calls": stats[k][1],
                 "tottime": round(stats[k][2], 3), "cumtime": round(stats[k][3], 3)} for k in keys]
    own = sorted(stats, key=lambda k: -stats[k][2])[:top]
    ours = sorted((k for k in stats if "dja_sepp" in k[0]), key=lambda k: -stats[k][3])[:top]
    return {"tile": tile.id, "n_sources": status.get("n_sources"), "timings": status["timings"],
            "by_own_time": rows(own), "dja_sepp_by_cumulative_time": rows(ours)}


def _print_profile(p: dict) -> None:
    print(f"profile of tile {p['tile']} ({p['n_sources']} sources, "
          f"{p['timings'].get('total', 0):.1f} s under cProfile):")
    for title, key in (("own time", "by_own_time"), ("dja_sepp cumulative", "dja_sepp_by_cumulative_time")):
        print(f"  top by {title}:")
        for r in p[key][:15]:
            print(f"    {r['tottime']:8.2f} {r['cumtime']:8.2f} {r['calls']:>8}  {r['function']}")


def _settings(pairs) -> dict:
    """``section.key=value`` strings (YAML values) as ``run``'s ``section__key`` keywords."""
    import yaml
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {pair!r}: expected section.key=value")
        out[key.replace(".", "__")] = yaml.safe_load(value)
    return out


def crowded(args) -> dict:
    """Simulate, run, score: the default benchmark. Several ``--model`` (comma-separated) run
    one after the other on the same field, and their costs are printed side by side."""
    from astropy.table import Table
    out = Path(args.out)
    cn = args.correlated_noise or None
    sim, tiling, t_sim = simulate(out / "images", args.size, args.density, args.seed, args.stars, cn,
                                  args.bands.split(","), args.bulge_disk_fraction)
    if args.tile_size:  # e.g. the whole field as one 2' tile (memory of a DJA-sized tile)
        tiling = {**tiling, "tile_size": args.tile_size}
    truth = Table.read(sim.truth_path)
    print(f"simulated {args.size:g}\" x {args.size:g}\" ({len(truth)} true objects, "
          f"{int((truth['KIND'] == 'star').sum())} stars, correlated noise {cn}) in {t_sim:.0f} s")
    psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()} if args.psf == "truth" else None
    models = list(dict.fromkeys(args.model.split(","))) if args.model else [None]
    field = {"mode": "crowded", "size_arcsec": args.size, "density": args.density, "seed": args.seed,
             "psf": args.psf, "correlated_noise": cn, "noise_correlation": sim.noise_correlation,
             "bulge_disk_fraction": args.bulge_disk_fraction, "settings": args.set, "simulation_s": t_sim}
    if len(models) == 1:
        return {**field, **_crowded_model(args, sim, tiling, truth, psfs, models[0], out / "run")}
    by_model = {m: _crowded_model(args, sim, tiling, truth, psfs, m, out / f"run_{Path(m).stem}") for m in models}
    print("\ncore-s per true object-band    whole run  tile tasks  row fits   rows")
    for m, r in by_model.items():
        c = r["core_s_per_true_band"]
        print(f"{m:<28} {c['whole_run']:10.3f} {c['tile_tasks']:11.3f} {c['row_fits']:9.3f} {r['run']['n_rows']:6d}")
    return {**field, "models": by_model}


def _crowded_model(args, sim, tiling, truth, psfs, model, run_dir: Path) -> dict:
    """One run of ``model`` on the simulated field, scored against the truth."""
    from astropy.table import Table

    from dja_sepp.sim.score import format_score, score_bulge_disk, score_catalog
    if model:
        print(f"model {model}")
    r = one_run(sim.images_dir, run_dir, args.workers, psfs, tiling, model, _settings(args.set))
    _print_run(r)
    if not r["n_rows"]:
        raise SystemExit("the run produced no catalog rows")
    cat = Table.read(r["catalog"])
    # each worker holds as many cores as its tile task fits on (fit.threads or fit.processes)
    settings = _settings(args.set)
    cores = max(int(settings.get("fit__threads", 1)), int(settings.get("fit__processes", 1)))
    whole = score_catalog(cat, truth, core_seconds=r["wall"] * args.workers * cores)
    print(format_score(whole))
    tiles_only = score_catalog(cat, truth, core_seconds=r["tile_core_s"]["total"] * cores)
    fits_only = score_catalog(cat, truth)   # sum of the rows' FIT_DURATION
    print(f"core-s per true object-band: whole run {whole.core_s_per_true_band:.3f}, tile tasks "
          f"{tiles_only.core_s_per_true_band:.3f}, row fits {fits_only.core_s_per_true_band:.3f}")
    bd = None
    if any(c.startswith("B/T_") for c in cat.colnames):   # a bulge + disk model: its B/T against the truth's
        bd = score_bulge_disk(cat, truth)
        print(bd.format())
    prof = None
    if args.profile:
        prof = profile_tile(sim.images_dir, run_dir, tiling, run_dir.parent / f"profile_{run_dir.name}")
        _print_profile(prof)
    return {"model": model or "sersic_rg4", "profile": prof, "run": r, "score": whole.to_dict(),
            "bulge_disk": bd.to_dict() if bd else None,
            "core_s_per_true_band": {"whole_run": whole.core_s_per_true_band,
                                     "tile_tasks": tiles_only.core_s_per_true_band,
                                     "row_fits": fits_only.core_s_per_true_band},
            "core_s_per_row_band": {"whole_run": whole.core_s_per_row_band,
                                    "tile_tasks": tiles_only.core_s_per_row_band,
                                    "row_fits": fits_only.core_s_per_row_band}}


def scaling(args) -> dict:
    """1 -> 2 worker efficiency on one field, memory at twice the area (2 workers)."""
    out = Path(args.out)
    cn = args.correlated_noise or None
    sim1, tiling, _ = simulate(out / "images_1x", args.size, args.density, args.seed, args.stars, cn)
    sim2, _, _ = simulate(out / "images_2x", args.size * math.sqrt(2), args.density, args.seed,
                          args.stars, cn)
    if args.tile_size:  # many tiles per worker: what a real field has
        tiling = {**tiling, "tile_size": args.tile_size}
    rows = []
    for name, sim, workers in (("1x", sim1, 1), ("1x", sim1, 2), ("2x", sim2, 2)):
        psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()} if args.psf == "truth" else None
        # same tile size for both areas: twice the area is twice the tiles
        r = one_run(sim.images_dir, out / f"run_{name}_{workers}w", workers, psfs, tiling)
        r["field"] = name
        print(f"--- field {name}")
        _print_run(r)
        rows.append(r)
    eff = rows[0]["wall"] / (2 * rows[1]["wall"])
    rss = max(rows[2]["peak_worker_rss_mb"]) / max(rows[1]["peak_worker_rss_mb"])
    tile = rows[2]["tile_peak_rss_mb"]["median"] / rows[1]["tile_peak_rss_mb"]["median"]
    print(f"parallel efficiency 1->2 workers: {eff:.2f}; 2x / 1x area: peak worker RSS {rss:.2f}, "
          f"median tile peak {tile:.2f}")
    return {"mode": "scaling", "rows": rows, "parallel_efficiency_1_to_2": eff,
            "rss_ratio_2x_over_1x": rss, "tile_peak_ratio_2x_over_1x": tile}


def _tile_job(job) -> dict:
    """``process_tile`` of one tile (a job of :func:`threads`: runs in a
    thread or in a spawned process): wall seconds and the core-s of the tile
    task (its thread and its fit processes), timings of its steps."""
    from dja_sepp.deploy.env import tune_allocator
    from dja_sepp.pipeline import process_tile
    from dja_sepp.pipeline.driver import field_from_config
    from dja_sepp.settings import load_config
    from dja_sepp.tiling import make_tiles
    images, tiling, psf_paths, tile_id, out, fit = job
    tune_allocator()  # as every tile task does on a worker
    cfg = load_config({"tiling": tiling, "mosaic": {"enabled": False}, "fit": fit})
    fld = field_from_config(str(images), cfg)
    tile = next(t for t in make_tiles(fld, tiling["tile_size"], tiling["overlap"], tiling["align"]).tiles
                if t.id == tile_id)
    t0 = time.perf_counter()
    status = process_tile(tile, fld, cfg, str(out), psf_paths)
    return {"tile": tile_id, "wall": time.perf_counter() - t0, "cpu": status["resources"]["cpu_s"],
            "fit": status["timings"]["fit"], "timings": status["timings"], "n_sources": status.get("n_sources")}


def _same_catalogs(a: Path, b: Path) -> bool:
    """Every column but FIT_DURATION identical (NaN = NaN) in two tiles' catalogs."""
    import numpy as np
    from astropy.table import Table
    ta, tb = Table.read(a), Table.read(b)
    if ta.colnames != tb.colnames or len(ta) != len(tb):
        return False
    return all(np.array_equal(np.asarray(ta[c]), np.asarray(tb[c]), equal_nan=ta[c].dtype.kind == "f")
               for c in ta.colnames if c != "FIT_DURATION")


def threads(args) -> dict:
    """Two cores on tiles: one tile fitted on 1 and 2 threads (``fit.threads``),
    and two tiles at once in 2 threads of one process (a Dask worker of 2
    threads) or in 2 processes (2 single-threaded workers)."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    import yaml
    out = Path(args.out)
    sim, tiling, _ = simulate(out / "images", args.size, args.density, args.seed, args.stars,
                              args.correlated_noise or None, args.bands.split(","), args.bulge_disk_fraction)
    if args.tile_size:
        tiling = {**tiling, "tile_size": args.tile_size}
    psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()} if args.psf == "truth" else None
    r = one_run(sim.images_dir, out / "run", 1, psfs, tiling)  # the PSFs, and each tile's sources
    run_dir = out / "run"
    psf_paths = {b: str(run_dir / p) if not Path(p).is_absolute() and "://" not in p else p
                 for b, p in yaml.safe_load((run_dir / "run.yaml").read_text())["run"]["psf_files"].items()}
    counts = {d.name: json.loads((d / "status.json").read_text()).get("n_sources", 0)
              for d in (run_dir / "tiles").iterdir() if (d / "status.json").exists()}
    busiest = sorted(counts, key=lambda k: -counts[k])[:2]

    def job(tile_id, name, fit=None):
        return (sim.images_dir, tiling, psf_paths, tile_id, out / "threads" / name, fit or {})
    _tile_job(job(busiest[0], "warmup"))
    settings = {"1": {"threads": 1}, "2 threads": {"threads": 2}, "2 processes": {"processes": 2}}
    repeats: dict[str, list] = {k: [] for k in settings}
    for _ in range(max(1, args.repeat)):  # interleaved: a slower spell of the machine hits every setting
        for k, fit in settings.items():
            repeats[k].append(_tile_job(job(busiest[0], f"one_{k.replace(' ', '_')}", fit)))
    one = {k: {**sorted(runs, key=lambda r: r["wall"])[len(runs) // 2], "walls": [r["wall"] for r in runs]}
           for k, runs in repeats.items()}  # the median run of each
    same = {k: _same_catalogs(*(out / "threads" / f"one_{n.replace(' ', '_')}" / "tiles" / busiest[0] / "catalog.parquet"
                                for n in ("1", k))) for k in settings if k != "1"}
    t0 = time.perf_counter()
    serial = [_tile_job(job(t, f"serial_{t}")) for t in busiest]
    serial_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_tile_job, [job(t, f"threads_{t}") for t in busiest]))
    threads_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_tile_job, [job(t, f"procs_{t}") for t in busiest])
    procs_wall = time.perf_counter() - t0
    rows = {"one_tile": {"tile": busiest[0], "n_sources": one["1"]["n_sources"], "runs": one,
                         "speedup": {k: one["1"]["wall"] / one[k]["wall"] for k in settings if k != "1"},
                         "identical_catalogs": same},
            "two_tiles": {"tiles": busiest, "serial_wall_s": serial_wall, "two_threads_wall_s": threads_wall,
                          "two_processes_wall_s": procs_wall, "thread_speedup": serial_wall / threads_wall,
                          "process_speedup": serial_wall / procs_wall, "serial_tiles": serial}}
    o, t = rows["one_tile"], rows["two_tiles"]
    print(f"one tile ({o['tile']}, {o['n_sources']} sources):")
    print(f"{'fit on':<14}{'wall s':>8}{'fit s':>8}{'core-s':>8}{'speedup':>9}  same catalog")
    for k, run in one.items():
        print(f"{k:<14}{run['wall']:>8.1f}{run['fit']:>8.1f}{run['cpu']:>8.1f}"
              f"{o['speedup'].get(k, 1.0):>9.2f}  {same.get(k, '-')}")
    print(f"two tiles: one after the other {serial_wall:.1f} s; 2 threads of one process {threads_wall:.1f} s "
          f"(x{t['thread_speedup']:.2f}); 2 processes {procs_wall:.1f} s (x{t['process_speedup']:.2f})")
    return {"mode": "threads", "size_arcsec": args.size, "psf": args.psf, "run": r, **rows}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("crowded", "scaling", "threads"), default="crowded")
    ap.add_argument("--size", type=float, default=60.0, help="field side, arcsec")
    ap.add_argument("--density", type=float, default=150.0,
                    help="galaxies per arcmin^2 to mag 28")
    ap.add_argument("--stars", type=float, default=16.0,
                    help="stars per arcmin^2 (>= 8 in all; rich, so the PSF step finds >= 5 on 1 arcmin^2)")
    ap.add_argument("--correlated-noise", type=float, default=1.25,
                    help="drizzle drop width in output pixels (1.25 ~ pixfrac 0.8; 0 = white)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--bands", default=",".join(BANDS), help="comma-separated NIRCam bands")
    ap.add_argument("--model", default=None,
                    help="fitted model (default: the configuration's, sersic_rg4); several, comma-separated "
                         "(sersic_rg4,B+D), run one after the other and their costs side by side")
    ap.add_argument("--tile-size", type=float, default=None,
                    help="tile core side (arcsec; default: 2 x 2 tiles, 3 x 3 above 60\")")
    ap.add_argument("--psf", choices=("build", "truth"), default="build",
                    help="PSFs built by the run (default) or the simulator's true ones")
    ap.add_argument("--bulge-disk-fraction", type=float, default=0.25,
                    help="share of the galaxies drawn as a de Vaucouleurs bulge + exponential disk")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--profile", action="store_true",
                    help="then cProfile the busiest tile again in-process (top functions, tile.pstats)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="configuration override, e.g. fit.residual_detection=false (repeatable)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="--mode threads: runs of each one-tile setting (the median is reported)")
    ap.add_argument("--out", default="bench_out/pipeline")
    return ap


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    os.environ.update(_SINGLE_THREAD)  # before numpy is imported (imports are lazy below)
    summary = {"crowded": crowded, "scaling": scaling, "threads": threads}[args.mode](args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pipeline_{args.mode}.json"
    path.write_text(json.dumps(summary, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
