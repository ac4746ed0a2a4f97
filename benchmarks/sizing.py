"""Instance sizing benchmark (issue 16): does ``dja-sepp size`` predict a real run?

On a simulated crowded field (:func:`benchmarks.pipeline.simulate`: GalSim,
5 bands on 0.02"/0.04", stars with spikes, correlated noise; the simulator's
PSFs, so both runs skip the PSF step) cut into 3 x 3 tiles:

1. ``dja_sepp.sizing.size_field`` measures a sample of 3 tiles (chosen by
   detection density) with ``--workers`` local workers and predicts the wall
   time of the whole field on this machine (setup + worker warm-up + the
   field's tiles, predicted one by one, scheduled longest first);
2. the whole field is run (``dja_sepp.run``, same configuration, same number of
   workers, no mosaics) and its wall time and tile core-s are compared;
3. memory: the largest tile of a coarser tiling (``--large-factor`` x the tile
   side) is run on a worker that has run one tile of the run's tiling before (as
   a run's workers have), and its peak RSS is compared with the model's
   prediction (fitted on the small tiles only).

Prints a table and writes ``OUT/sizing_benchmark.json`` (and
``benchmarks/results/sizing_{size}arcsec.json`` with ``--record``). Timings depend on
the machine's load: run it on a quiet machine for numbers to quote.

Usage::

    python benchmarks/sizing.py --size 48 --out bench_out/sizing --record
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

_SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "NUMBA_NUM_THREADS": "1"}


def _tiling(size: float, per_axis: int = 3, align: int = 64, scale: float = 0.04) -> dict:
    n_pix = int(round(size / scale))
    core = int(math.ceil(n_pix / per_axis / align)) * align
    return {"tile_size": core * scale, "overlap": 3.0, "align": align}


def _simulate(out: Path, size: float, density: float, seed: int):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import simulate  # benchmarks/pipeline.py
    sim, _, t_sim = simulate(out, size, density, seed, 16.0, 1.25)
    return sim, t_sim


def large_tile_memory(images: Path, tiling: dict, factor: float, psfs: dict, model, work: Path) -> dict:
    """Peak RSS of the largest tile of a ``factor`` x coarser tiling, run alone
    on one fresh warmed-up worker, and the model's prediction for it."""
    from distributed import Client, LocalCluster

    from dja_sepp.deploy.cluster import THREAD_ENV
    from dja_sepp.io.fingerprint import inputs_key
    from dja_sepp.pipeline import process_tile
    from dja_sepp.pipeline.driver import field_from_config
    from dja_sepp.settings import load_config
    from dja_sepp.sizing.harness import warm_up
    from dja_sepp.sizing.probe import current_rss_mb
    from dja_sepp.sizing.sample import census, tile_features
    from dja_sepp.tiling import make_tiles
    big = dict(tiling, tile_size=tiling["tile_size"] * factor)
    cfg = load_config({"tiling": big, "mosaic": {"enabled": False}})
    fld = field_from_config(str(images), cfg)
    grid = make_tiles(fld, big["tile_size"], big["overlap"], big["align"])
    cfg["run"] = {"inputs_key": inputs_key(fld, psfs, cfg)}
    cen = census(fld, grid, cfg)
    feats = {f["tile"]: f for f in tile_features(cen, big["tile_size"], big["overlap"], big["align"])}
    tile = max(grid.tiles, key=lambda t: feats[t.id]["mpix"])
    with LocalCluster(n_workers=1, threads_per_worker=1, env=THREAD_ENV, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.run(warm_up, cfg["fit"]["models"][0], cfg["fit"])
        # as in a run, the worker has done a tile before (lazy imports, caches, allocator's heap)
        small_cfg = load_config({"tiling": tiling, "mosaic": {"enabled": False}})
        small_cfg["run"] = {"inputs_key": inputs_key(fld, psfs, small_cfg)}
        first = make_tiles(fld, tiling["tile_size"], tiling["overlap"], tiling["align"]).tiles[0]
        client.submit(process_tile, first, fld, small_cfg, str(work / "first"), psfs, None, pure=False).result()
        rest = list(client.run(current_rss_mb).values())[0]
        status = client.submit(process_tile, tile, fld, cfg, str(work), psfs, None, pure=False).result()
    f = feats[tile.id]
    predicted = float(model.peak_rss_mb([f])[0])
    measured = float(status["resources"]["peak_rss_mb"])
    return {"tile_size_arcsec": big["tile_size"], "tile": tile.id, "mpix": f["mpix"], "n_sources": f["n_sources"],
            "state": status["state"], "rss_rest_mb": rest, "measured_peak_rss_mb": measured,
            "predicted_peak_rss_mb": predicted, "error": predicted / measured - 1,
            "core_s": status["resources"]["cpu_s"]}


def full_run(images: Path, out: Path, tiling: dict, psfs: dict, workers: int) -> dict:
    """The whole field on ``workers`` local workers: wall time, tile core-s."""
    from distributed import Client, LocalCluster

    from dja_sepp import run
    from dja_sepp.deploy.cluster import THREAD_ENV
    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, env=THREAD_ENV, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        t1 = time.perf_counter()
        result = run(images, out, config={"tiling": tiling, "mosaic": {"enabled": False}}, psfs=psfs,
                     cluster=client, progress=False)
        wall = time.perf_counter() - t1
    statuses = [json.loads(p.read_text()) for p in sorted((out / "tiles").glob("*/status.json"))]
    return {"wall_s": wall, "cluster_start_s": t1 - t0, "timings": result.timings, "complete": result.complete,
            "n_rows": result.merge.n_output if result.merge else 0,
            "core_s": sum(s["resources"]["cpu_s"] for s in statuses),
            "tiles": {s["tile"]: {"n_sources": s["n_sources"], "core_s": s["resources"]["cpu_s"],
                                  "wall_s": s["resources"]["wall_s"],
                                  "peak_rss_mb": s["resources"]["peak_rss_mb"]} for s in statuses}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=float, default=48.0, help="field side, arcsec (3 x 3 tiles)")
    ap.add_argument("--density", type=float, default=120.0, help="galaxies per arcmin^2 to mag 28")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=3)
    ap.add_argument("--large-factor", type=float, default=2.0, help="side of the larger tile / the run's")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--out", default="bench_out/sizing")
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/sizing_{size}arcsec.json")
    args = ap.parse_args(argv)
    os.environ.update(_SINGLE_THREAD)
    from dja_sepp.sizing import size_field
    out = Path(args.out)
    for sub in ("sizing", "run", "large"):
        shutil.rmtree(out / sub, ignore_errors=True)
    sim, t_sim = _simulate(out / "images", args.size, args.density, args.seed)
    psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()}
    tiling = _tiling(args.size)
    print(f"simulated {args.size:g}\" field in {t_sim:.0f} s; tiles {tiling['tile_size']:.2f}\" (3 x 3)")
    t0 = time.perf_counter()
    sized = size_field(sim.images_dir, out / "sizing", psfs=psfs, sample=args.sample, progress=False,
                       config={"tiling": tiling, "sizing": {"workers": [args.workers]}})
    t_size = time.perf_counter() - t0
    print(sized.summary())
    here = sized.field["here"]
    run = full_run(sim.images_dir, out / "run", tiling, psfs, args.workers)
    mem = large_tile_memory(sim.images_dir, tiling, args.large_factor, psfs, sized.model, out / "large")
    rows = [("whole-field wall (s)", here["predicted_wall_s"], here["predicted_wall_s_err"], run["wall_s"]),
            # a run's workers are not warmed up: each one's first tile pays the warm-up
            ("tile core-s, summed (+ warm-ups)",
             sized.field["predicted_core_s"] + args.workers * sized.model.warmup_s,
             sized.field["predicted_core_s_err"], run["core_s"]),
            (f"peak RSS of a {mem['tile_size_arcsec']:.1f}\" tile (MB)", mem["predicted_peak_rss_mb"], None,
             mem["measured_peak_rss_mb"])]
    print(f"\n{'quantity':<34} {'predicted':>12} {'+-':>8} {'measured':>10} {'error':>8}")
    table = []
    for name, pred, err, meas in rows:
        e = pred / meas - 1
        table.append({"quantity": name, "predicted": pred, "predicted_err": err, "measured": meas, "error": e})
        print(f"{name:<34} {pred:12.1f} {err if err is not None else float('nan'):8.1f} {meas:10.1f} {e:+8.1%}")
    print(f"sizing took {t_size:.0f} s ({len(sized.measured)} tiles measured) against the run's "
          f"{run['wall_s']:.0f} s; load average {os.getloadavg()[0]:.1f}")
    summary = {"size_arcsec": args.size, "density": args.density, "seed": args.seed, "workers": args.workers,
               "tiling": tiling, "simulation_s": t_sim, "sizing_s": t_size, "table": table,
               "sizing_field": sized.field, "model": sized.model.to_dict(), "measured": sized.measured,
               "run": run, "large_tile": mem, "load_average_end": os.getloadavg()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sizing_benchmark.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"wrote {out / 'sizing_benchmark.json'}")
    if args.record:
        dest = Path(__file__).parent / "results" / f"sizing_{args.size:g}arcsec.json"
        dest.write_text(json.dumps(summary, indent=1, default=str))
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
