"""Pipeline benchmark: where the wall time goes, parallel efficiency, worker memory.

Simulates demo fields (GalSim), runs the whole pipeline on a LocalCluster with
1 and 2 single-threaded workers, and prints/saves:

- wall time split into read / detect / fit / write (summed over tiles, scaled
  to wall time by the worker count) / merge / overhead;
- 1 -> 2 worker parallel efficiency = T1 / (2 T2);
- peak RSS of the worker processes for a field and one of twice the area.

Targets (issue #2): all but fitting <= 10% of wall time; efficiency >= 90%;
peak worker memory the same when the area doubles.

Usage: python benchmarks/pipeline.py [--size 40] [--galaxies 300] [--out bench_out/pipeline]
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def one_run(images: Path, out: Path, workers: int, psfs: dict, tiling: dict) -> dict:
    from distributed import Client, LocalCluster
    from dja_sepp import run
    from dja_sepp.deploy.cluster import THREAD_ENV
    with LocalCluster(n_workers=workers, threads_per_worker=1, env=THREAD_ENV,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        result = run(images, out, config={"tiling": tiling, "mosaic": {"enabled": False}},
                     psfs=psfs, cluster=client, progress=False)
        wall = time.perf_counter() - t0
        rss = client.run(worker_peak_rss_mb)
    t = result.timings
    stages = {s: t.get(f"tile_{s}", 0.0) / workers for s in ("read", "detect", "fit", "write")}
    stages["merge"] = t.get("merge", 0.0)
    stages["overhead"] = max(0.0, wall - sum(stages.values()))
    return {"workers": workers, "wall": wall, "stages": stages, "n_sources": result.merge.n_output,
            "peak_worker_rss_mb": max(rss.values()), "complete": result.complete}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=float, default=40.0)
    ap.add_argument("--galaxies", type=int, default=300)
    ap.add_argument("--out", default="bench_out/pipeline")
    args = ap.parse_args()
    from dja_sepp.demo import border_positions, demo_tiling
    from dja_sepp.sim import simulate_field
    out = Path(args.out)
    rows = []
    fields = {"1x": (args.size, args.galaxies),
              "2x": (args.size * 2 ** 0.5, 2 * args.galaxies)}
    sims = {}
    for name, (size, ngal) in fields.items():
        sims[name] = (simulate_field(out / f"images_{name}", field="bench", size_arcsec=size,
                                     n_galaxies=ngal, seed=2, extra_positions=border_positions(size)),
                      demo_tiling(args.size))  # same tile size: twice the area = twice the tiles
    for name, workers in (("1x", 1), ("1x", 2), ("2x", 2)):
        sim, tiling = sims[name]
        psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()}
        res = one_run(sim.images_dir, out / f"run_{name}_{workers}w", workers, psfs, tiling)
        res["field"] = name
        rows.append(res)
    t1 = rows[0]["wall"]
    t2 = rows[1]["wall"]
    summary = {"rows": rows, "parallel_efficiency_1_to_2": t1 / (2 * t2),
               "non_fit_fraction_1w": 1 - rows[0]["stages"]["fit"] / rows[0]["wall"],
               "non_fit_fraction_2w": 1 - rows[1]["stages"]["fit"] / rows[1]["wall"],
               "rss_ratio_2x_over_1x": rows[2]["peak_worker_rss_mb"] / rows[1]["peak_worker_rss_mb"]}
    print(f"{'field':>5} {'wkr':>3} {'wall s':>7} {'read':>6} {'detect':>6} {'fit':>7} {'write':>6} "
          f"{'merge':>6} {'ovh':>6} {'srcs':>5} {'RSS MB':>7}")
    for r in rows:
        s = r["stages"]
        print(f"{r['field']:>5} {r['workers']:>3} {r['wall']:7.1f} {s['read']:6.2f} {s['detect']:6.2f} "
              f"{s['fit']:7.2f} {s['write']:6.2f} {s['merge']:6.2f} {s['overhead']:6.2f} "
              f"{r['n_sources']:>5} {r['peak_worker_rss_mb']:7.0f}")
    print(f"parallel efficiency 1->2 workers: {summary['parallel_efficiency_1_to_2']:.2f}")
    print(f"non-fit fraction of wall time: {summary['non_fit_fraction_1w']:.2%} (1 worker), "
          f"{summary['non_fit_fraction_2w']:.2%} (2 workers)")
    print(f"peak worker RSS, 2x area / 1x area: {summary['rss_ratio_2x_over_1x']:.2f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
