"""Mosaic benchmark: throughput and peak memory of the model / residual mosaics.

Renders ``mosaic.zarr`` of finished runs again (``dja_sepp.pipeline.driver.mosaic_run``
on a fresh LocalCluster of single-threaded workers) and prints, per run: mosaic
pixels (all bands), chunks (tile cores x bands), catalog rows, wall time,
throughput (megapixels and chunks per second per worker) and the peak resident
memory of each worker and of the driver (which only writes the quick-look PNGs,
read with strides). Writes JSON.

Give runs of fields of different area (``--runs small big``), or let it make
them: ``--size S`` simulates and runs a crowded field of side S and one of side
2 S (4x the area) with ``benchmarks/pipeline.py``'s simulation, mosaics off,
then renders both. Memory per worker should not grow with the area: a task
holds one chunk of one band and the sources whose light reaches it.

Usage::

    python benchmarks/mosaic.py --size 20 --out bench_out/mosaic
    python benchmarks/mosaic.py --runs bench_out/pipeline/run other/run --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

__all__ = ["measure", "make_runs", "main"]

_SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "NUMBA_NUM_THREADS": "1"}


def measure(run_dir: Path, workers: int) -> dict:
    """Render the mosaics of ``run_dir`` again; wall, pixels, chunks, memory."""
    import numpy as np
    import zarr
    from astropy.table import Table
    from distributed import Client, LocalCluster

    from dja_sepp.pipeline.driver import mosaic_run
    from pipeline import worker_peak_rss_mb
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        (url,) = mosaic_run(str(run_dir), cluster=client, progress=False)
        wall = time.perf_counter() - t0
        rss = sorted(client.run(worker_peak_rss_mb).values())
    root = zarr.open_group(url, mode="r")
    bands = sorted(root.group_keys())
    pixels = sum(int(np.prod(root[b]["model"].shape)) for b in bands)
    chunks = sum(int(np.prod(root[b]["model"].cdata_shape)) for b in bands)
    rows = len(Table.read(run_dir / "catalog.fits"))
    return {"run": str(run_dir), "workers": workers, "bands": bands, "megapixels": pixels / 1e6,
            "chunks": chunks, "catalog_rows": rows, "wall_s": wall,
            "megapixels_per_s_per_worker": pixels / 1e6 / wall / workers,
            "chunks_per_s_per_worker": chunks / wall / workers,
            "peak_worker_rss_mb": rss, "driver_peak_rss_mb": worker_peak_rss_mb()}


def make_runs(out: Path, size: float, density: float, stars: float, seed: int) -> list[Path]:
    """Crowded fields of side ``size`` and ``2 size`` run without mosaics (PSFs built)."""
    from pipeline import one_run, simulate
    runs = []
    for side in (size, 2 * size):
        sim, tiling, _ = simulate(out / f"images_{side:g}", side, density, seed, stars, 1.25)
        run_dir = out / f"run_{side:g}"
        one_run(sim.images_dir, run_dir, 2, None, tiling)
        runs.append(run_dir)
    return runs


def _print(rows: list[dict]) -> None:
    print(f"{'run':40s} {'Mpix':>7s} {'chunks':>6s} {'rows':>5s} {'wall s':>7s} "
          f"{'Mpix/s/w':>8s} {'worker RSS MB':>14s} {'driver MB':>9s}")
    for r in rows:
        print(f"{r['run'][-40:]:40s} {r['megapixels']:7.1f} {r['chunks']:6d} {r['catalog_rows']:5d} "
              f"{r['wall_s']:7.1f} {r['megapixels_per_s_per_worker']:8.2f} "
              f"{max(r['peak_worker_rss_mb']):14.0f} {r['driver_peak_rss_mb']:9.0f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="*", default=None, help="finished run directories")
    ap.add_argument("--size", type=float, default=20.0, help="side of the smaller field made (arcsec)")
    ap.add_argument("--density", type=float, default=150.0)
    ap.add_argument("--stars", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="bench_out/mosaic")
    args = ap.parse_args(argv)
    os.environ.update(_SINGLE_THREAD)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in args.runs] if args.runs else make_runs(out, args.size, args.density,
                                                                     args.stars, args.seed)
    rows = [measure(r, args.workers) for r in runs]
    _print(rows)
    path = out / "mosaic.json"
    path.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
