"""``dja-sepp size``: measure a sample of tiles under a sweep, fit, recommend.

:func:`size_field` prepares the field as a run does (configuration, images,
PSFs: given or built, the time counted as setup), takes the detection census
of the whole field (:mod:`.sample`), then for each setting of the sweep (tile
size x workers x threads, on the local machine, on a given scheduler, or on
one EC2 instance of each type asked) starts that cluster, runs the sample
tiles of that tile size with :func:`~dja_sepp.pipeline.process_tile` (the
run's own task, which records core-s, wall and peak RSS in its status), fits
the cost model (:mod:`.costmodel`), applies it to every tile of the field and
ranks the cluster choices (:mod:`.recommend`). Outputs in ``out``:
``sizing.json`` (contract in the README), ``sizing.md``, ``sizing.png``,
``sizing.yaml`` (the configuration used), ``psf/`` and ``measure/{setting}/``
(the sample tiles' outputs and, with ``performance_report``, distributed's
performance report of each setting).

EC2 settings ask for one instance per type (``minimum = maximum = 1``) with
the layout of the setting (:func:`ec2_request`), through the same
:func:`~dja_sepp.deploy.ec2.ec2_cluster` a run uses.
"""
from __future__ import annotations

import copy
import json
import os
import time
import uuid
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .costmodel import CostModel
from .prices import InstanceType, PriceTable, load_prices
from .sample import census, halo_reach, pick_sample, tile_features

__all__ = ["size_field", "SizingResult", "Setting", "plan_settings", "ec2_request", "warm_up"]


@dataclass
class Setting:
    """One point of the sweep.

    Attributes
    ----------
    machine : str
        ``local``, ``address`` or the EC2 instance type.
    tile_size : float
        Tile core side (arcsec).
    workers, threads : int
        Worker processes per machine and threads per worker.
    cluster : dict
        The ``cluster:`` section that starts it (``kind`` and its settings).
    """

    machine: str
    tile_size: float
    workers: int
    threads: int
    cluster: dict

    @property
    def label(self) -> str:
        """``local-t60-w2x1``: folder name under ``measure/``."""
        return f"{self.machine}-t{self.tile_size:g}-w{self.workers}x{self.threads}"


def ec2_request(cluster: Mapping[str, Any], inst: InstanceType, workers: int, threads: int,
                memory_fraction: float) -> dict:
    """The ``cluster.ec2`` settings that start one ``inst`` instance running
    ``workers`` worker processes of ``threads`` threads, each allowed its share
    of ``memory_fraction`` of the instance's memory."""
    per_worker = inst.memory_gib * memory_fraction / workers
    return {**(cluster.get("ec2") or {}), "worker_instance_type": inst.name,
            "workers_per_instance": int(workers), "worker_nthreads": int(threads),
            "worker_memory": f"{per_worker:.2f}GiB", "minimum": 1, "maximum": 1}


def plan_settings(config: Mapping[str, Any], cluster: str | None = None,
                  prices: PriceTable | None = None) -> list[Setting]:
    """The sweep: tile sizes x workers x threads, per machine.

    ``cluster`` (or ``cluster.kind``): ``local`` (workers default: one per
    core), a scheduler address (measured as it is: its own workers and
    threads), or ``ec2`` (one instance of each ``sizing.instance_types``,
    default ``cluster.ec2.worker_instance_type``; workers default: one per
    vCPU / threads).
    """
    s, c = config["sizing"], config["cluster"]
    sizes = [float(v) for v in s["tile_sizes"]] or [float(config["tiling"]["tile_size"])]
    threads = [int(t) for t in s["threads"]]
    kind = cluster or c["kind"]
    out = []
    if kind == "ec2":
        prices = prices or load_prices(s["prices"])
        names = s["instance_types"] or [(c.get("ec2") or {}).get("worker_instance_type", "c7i.4xlarge")]
        for inst in prices.select(names):
            for size in sizes:
                for t in threads:
                    for w in [int(v) for v in s["workers"]] or [max(1, inst.vcpu // t)]:
                        ec2 = ec2_request(c, inst, w, t, float(s["memory_fraction"]))
                        _check_ec2(ec2)  # ami, allowed_cidr...: refused before any work
                        out.append(Setting(inst.name, size, w, t, {**c, "kind": "ec2", "ec2": ec2}))
        return out
    if kind not in ("local", "address") and not (isinstance(kind, str) and ":" in kind):
        raise ValueError(f"dja-sepp size runs on local, ec2 or a scheduler address, not {kind!r}")
    if kind != "local":  # an existing scheduler: measured with the workers it has
        address = c["address"] if kind == "address" else kind
        return [Setting("address", size, 0, 0, {**c, "kind": "address", "address": address})
                for size in sizes]
    workers = [int(v) for v in s["workers"]] or [int(c["n_workers"] or os.cpu_count() or 1)]
    return [Setting("local", size, w, t, {**c, "kind": "local", "n_workers": w, "threads_per_worker": t})
            for size in sizes for w in workers for t in threads]


def _check_ec2(settings: Mapping[str, Any]) -> None:
    from ..deploy.ec2 import _settings
    _settings(settings)


@dataclass
class SizingResult:
    """What :func:`size_field` wrote and found.

    Attributes
    ----------
    out : str
        The sizing folder.
    json_path, md_path, png_path : str
        ``sizing.json``, ``sizing.md``, ``sizing.png``.
    measured : list of dict
        One row per sampled tile and setting.
    model : CostModel
    field : dict
        The whole field (``n_sources``, ``n_bands``, ``predicted_core_s`` ...).
    recommendations : list of dict
        Best first.
    """

    out: str
    json_path: str
    md_path: str
    png_path: str
    measured: list[dict]
    model: CostModel
    field: dict
    recommendations: list[dict] = dc_field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the console."""
        f = self.field
        lines = [f"sizing {self.out}: {len(self.measured)} tile measurement(s); field {f['n_sources']} "
                 f"sources x {f['n_bands']} bands, {f['n_tiles']} tiles: predicted "
                 f"{f['predicted_core_s']:.0f} core-s ({_err(f['predicted_core_s_err'])}) on {self.model.machine}"]
        here = f.get("here")
        if here:
            lines.append(f"  here ({here['workers']} worker(s) x {here['threads']} thread(s)): predicted wall "
                         f"{here['predicted_wall_s']:.0f} s ({_err(here['predicted_wall_s_err'])})")
        from .recommend import leading
        for i, r in enumerate(leading(self.recommendations, 3)):
            lines.append(f"  {'best' if i == 0 else 'next'}: {r['n_instances']} x {r['instance_type']} "
                         f"({r['workers']} workers x {r['threads']} threads, {r['tile_size_arcsec']:g}\" tiles): "
                         f"{r['predicted_wall_h']:.2f} h, ${r['predicted_cost_usd']:.2f}")
        lines.append(f"  table {self.md_path}, plot {self.png_path}")
        return "\n".join(lines)


def _err(v) -> str:
    return "± unknown" if v is None else f"± {v:.0f}"


def size_field(images, out, models: Sequence[str] | str | None = None, cluster: str | None = None,
               config=None, psfs: Mapping[str, str] | None = None, sample: int | None = None,
               target_hours: float | None = None, storage_options: dict | None = None,
               progress: bool = True, performance_report: bool = False, **overrides) -> SizingResult:
    """Measure a sample of a field's tiles, fit the cost model, recommend.

    In a script, call it under ``if __name__ == "__main__":`` (local workers
    import the script again).

    Parameters
    ----------
    images : str or Path
        Folder or URL of DJA-named mosaics.
    out : str or Path
        Local folder for the sizing outputs.
    models : str or sequence of str, optional
        Models fitted (``fit.models``).
    cluster : str, optional
        ``local`` (default), ``ec2`` or a scheduler address.
    config : path or mapping, optional
        Run configuration (its ``sizing:`` section sets the sweep).
    psfs : mapping, optional
        band -> PSF file; other bands get a PSF built by the PSF step.
    sample : int, optional
        Tiles measured per setting (``sizing.sample``).
    target_hours : float, optional
        Wall time wanted for the whole field (``sizing.target_hours``).
    storage_options : dict, optional
        fsspec options for remote images.
    progress : bool
        Show a progress bar per setting.
    performance_report : bool
        Save distributed's performance report of each setting in its folder.
    **overrides
        Configuration overrides as ``section__key=value``.
    """
    from ..io.fingerprint import inputs_key
    from ..io.preflight import check_images, check_psfs
    from ..io.store import RunStore
    from ..pipeline.driver import (_check_models, _given_psfs, _grid, _resolve_psfs,
                                   field_from_config)
    from ..settings import dump_config, load_config
    t0 = time.perf_counter()
    if models:
        overrides["fit__models"] = [models] if isinstance(models, str) else list(models)
    if sample is not None:
        overrides["sizing__sample"] = int(sample)
    if target_hours is not None:
        overrides["sizing__target_hours"] = float(target_hours)
    overrides.setdefault("mosaic__enabled", False)
    cfg = load_config(config, **overrides)
    prices = load_prices(cfg["sizing"]["prices"])  # a bad table stops before any work
    out = Path(out).expanduser().resolve()
    store = RunStore(str(out))
    store.check_writable()
    fld = field_from_config(images, cfg, storage_options)
    _check_models(cfg)
    grid = _grid(fld, cfg)
    check_images(fld)
    given = _given_psfs(cfg, psfs)
    check_psfs(given, fld)
    settings = plan_settings(cfg, cluster, prices)
    psf_paths = _resolve_psfs(fld, grid, cfg, store, given)
    cfg["run"] = {"inputs_key": inputs_key(fld, psf_paths, cfg), "psf_files": psf_paths}
    portable = copy.deepcopy(cfg)
    portable["cluster"]["worker_env"] = {}  # may hold secrets: never written
    store.write_text("sizing.yaml", dump_config(portable))
    setup_s = time.perf_counter() - t0

    t = cfg["tiling"]
    rows: list[dict] = []
    box: dict = {"census": None}  # the field's detection census, taken on the first cluster
    for setting in settings:
        rows += _measure(setting, fld, cfg, psf_paths, out, box, grid, storage_options, progress,
                         performance_report)
    cen = box["census"]
    model = CostModel.fit(rows)
    here = next((s for s in settings if s.machine in ("local", "address")), None)
    if here is not None:  # a run merges on its client: timed on this machine
        model = model.with_merge(*_time_merge(here, fld, cfg, out, rows))
    sizes = sorted({s.tile_size for s in settings})
    halo = (float(cfg["fit"]["overlap_min_snr"]), halo_reach(cen, cfg["fit"]))
    tiles_by_size = {size: tile_features(cen, size, t["overlap"], t["align"], *halo) for size in sizes}
    base = float(t["tile_size"]) if float(t["tile_size"]) in tiles_by_size else sizes[0]
    field = _field_summary(fld, cen, model, tiles_by_size[base], base, rows, setup_s)
    measured_types = [s.machine for s in settings if s.cluster["kind"] == "ec2"]
    threads = sorted({int(r["threads"]) for r in rows if r.get("threads")}) or [1]  # as measured
    from .recommend import recommend, write_markdown, write_plot
    recs = recommend(model, tiles_by_size, prices, cfg["sizing"], setup_s, threads, measured_types)
    result = {"measured": rows, "model": model.to_dict(), "field": field, "recommendations": recs,
              "prices": prices.describe(), "market": cfg["sizing"]["market"],
              "target_hours": cfg["sizing"]["target_hours"],
              "settings": [{"machine": s.machine, "tile_size_arcsec": s.tile_size, "workers": s.workers,
                            "threads": s.threads, "cluster": _public(s.cluster)} for s in settings],
              "census": {"n_sources": cen.n_sources, "core_s": round(cen.seconds, 2)}}
    (out / "sizing.json").write_text(json.dumps(result, indent=1, default=_json))
    write_markdown(out / "sizing.md", result, top=int(cfg["sizing"]["recommendations"]))
    write_plot(out / "sizing.png", recs, top=int(cfg["sizing"]["recommendations"]))
    return SizingResult(str(out), str(out / "sizing.json"), str(out / "sizing.md"), str(out / "sizing.png"),
                        rows, model, field, recs)


def _json(value):
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _public(cluster: Mapping[str, Any]) -> dict:
    """A cluster section without worker environment values (they may be secrets)."""
    return {k: v for k, v in cluster.items() if k != "worker_env"}


def _measure(setting: Setting, fld, cfg, psf_paths, out: Path, box: dict, base_grid,
             storage_options, progress, performance_report) -> list[dict]:
    """Run the sample tiles of one setting on its own cluster; one row per tile."""
    from ..pipeline.execute import client_for, tile_key
    from ..pipeline.tile_task import process_tile
    from ..tiling import make_tiles
    t = cfg["tiling"]
    scfg = copy.deepcopy(cfg)
    scfg["tiling"]["tile_size"] = setting.tile_size
    scfg["cluster"] = setting.cluster
    folder = out / "measure" / setting.label
    folder.mkdir(parents=True, exist_ok=True)
    _carry_stars(out, folder)
    with client_for(None, scfg) as client:
        if box["census"] is None:  # the field's detection census, once, on the first cluster
            box["census"] = census(fld, base_grid, cfg, client)
        feats = {f["tile"]: f for f in tile_features(box["census"], setting.tile_size, t["overlap"], t["align"],
                                                     float(cfg["fit"]["overlap_min_snr"]),
                                                     halo_reach(box["census"], cfg["fit"]))}
        ids = pick_sample(list(feats.values()), int(cfg["sizing"]["sample"]))
        grid = make_tiles(fld, setting.tile_size, t["overlap"], t["align"])
        tiles = [tile for tile in grid.tiles if tile.id in ids]
        workers, threads = _layout(client, setting)
        # once per worker, as a run's first tile pays it
        warm = client.run(warm_up, cfg["fit"]["models"][0], cfg["fit"])
        from .probe import current_rss_mb
        rest = sorted(client.run(current_rss_mb).values())
        report = _report(folder, performance_report)
        token = uuid.uuid4().hex[:8]
        with report:
            t0 = time.perf_counter()
            futures = [client.submit(process_tile, tile, fld, scfg, str(folder), psf_paths, storage_options,
                                     key=tile_key(tile.id, token), pure=False) for tile in tiles]
            statuses = _gather(futures, progress, setting.label)
            batch = time.perf_counter() - t0
        after = max(client.run(current_rss_mb).values(), default=None)  # at rest after real tiles
    rows = []
    for tile, st in zip(tiles, statuses):
        f, res = feats.get(tile.id, {}), st.get("resources") or {}
        n_bands = int(st.get("n_bands", f.get("n_bands", 0)))
        n_sources = int(st.get("n_sources", f.get("n_sources", 0)))
        n_fitted = n_sources + int(f.get("n_fitted", 0)) - int(f.get("n_sources", 0))  # + its halo's bright ones
        mpix = f.get("mpix", 0.0) * _band_share(f, n_bands)
        rows.append({"setting": setting.label, "machine": setting.machine,
                     "tile_size_arcsec": setting.tile_size, "workers": workers, "threads": threads,
                     "tile": tile.id, "state": st.get("state", "failed"),
                     "n_sources": n_sources, "n_bands": n_bands, "source_bands": n_sources * n_bands,
                     "n_fitted": n_fitted, "fitted_bands": n_fitted * n_bands,
                     "mpix": round(mpix, 4), "density": round(f.get("density", 0.0), 2),
                     "core_s": res.get("cpu_s", 0.0), "wall_s": res.get("wall_s", 0.0),
                     "peak_rss_mb": res.get("peak_rss_mb", 0.0), "rss_before_mb": res.get("rss_before_mb", 0.0),
                     "peak_exact": res.get("peak_exact", False), "batch_wall_s": round(batch, 3),
                     "rss_base_mb": round(rest[len(rest) // 2], 2) if rest else None,
                     "rss_after_mb": round(after, 2) if after else None,
                     "warmup_s": round(float(sorted(warm.values())[len(warm) // 2]), 3) if warm else 0.0,
                     "reason": st.get("reason")})
    return rows


def _time_merge(setting: Setting, fld, cfg, out: Path, rows: Sequence[dict]) -> tuple[list, float]:
    """The run's merge timed on one setting's sampled tiles: the one with the
    fewest sources alone (cold: a run's client pays these first-use costs
    too), then warm: that one again, the one with the most, and all of them.
    Returns ``(tiles, rows, seconds)``, cold first, and the catalog rows per
    detected source. The sample's catalog is left in the setting's folder."""
    from dataclasses import replace

    from ..io.store import RunStore
    from ..pipeline.driver import merge_run
    from ..tiling import make_tiles
    mine = sorted((r for r in rows if r.get("setting") == setting.label and r["state"] == "ok"),
                  key=lambda r: r["n_sources"])
    if not mine:
        return [], 1.0
    scfg = copy.deepcopy(cfg)
    scfg["tiling"]["tile_size"] = setting.tile_size
    t = scfg["tiling"]
    grid = make_tiles(fld, setting.tile_size, t["overlap"], t["align"])
    by_id = grid.by_id()
    store = RunStore(str(out / "measure" / setting.label))
    timings = []
    for subset in (mine[:1], mine[:1], mine[-1:], mine):
        t0 = time.perf_counter()
        merged = merge_run(store, replace(grid, tiles=[by_id[r["tile"]] for r in subset]), scfg).merge
        timings.append((len(subset), merged.n_output if merged else 0, time.perf_counter() - t0))
    sources = sum(r["n_sources"] for r in mine)
    return timings, (timings[-1][1] / sources if sources else 1.0)


def warm_up(model: str = "sersic_rg4", options: Mapping[str, Any] | None = None) -> float:
    """Ready a worker as its first tile would (run on every worker before the
    sample): import what a tile task uses, measure the noise correlation and
    detect and fit (both passes, galaxy and point) one synthetic source in two
    bands on the 0.04" and 0.02" grids: every cached numba kernel and lazy
    import a tile needs is loaded. Returns the seconds taken; the tasks
    measured then cost what a worker's later tiles cost, and the warm-up is
    counted once per worker (``warmup_s``)."""
    t0 = time.perf_counter()
    import numpy as np
    from ..fit.base import get_engine
    from ..pipeline.tile_task import _band_noise
    det, cuts = _synthetic_cutouts()
    try:
        from ..detect import detect_sources
        sources, det.segmap = detect_sources(det, {"thresh": 5.0, "back_size": 64})
        sources["IN_CORE"] = np.ones(len(sources), bool)
        for cut in cuts:
            _band_noise(cut, det)
        get_engine("builtin").fit(sources, det, cuts, model, dict(options or {}))
    except Exception:  # a warm-up that fails costs nothing: the tiles report their own errors
        pass
    return time.perf_counter() - t0


def _synthetic_cutouts():
    """A detection cutout and two band cutouts (0.04" and 0.02") of one noisy
    Gaussian source, for :func:`warm_up`."""
    import numpy as np
    from astropy.wcs import WCS
    from ..fit.base import BandCutout
    from ..psf.base import ImagePSF

    def cutout(name, scale, factor, wavelength):
        n = 64 * factor
        yy, xx = np.mgrid[:n, :n] / factor
        img = (40.0 / factor ** 2 * np.exp(-((xx - 31.6) ** 2 + (yy - 32.2) ** 2) / 8.0)
               + np.random.default_rng(factor).normal(0, 1.0 / factor, (n, n))).astype(np.float32)
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval, wcs.wcs.cdelt = [53.0, -27.0], [-scale / 3600, scale / 3600]
        wcs.wcs.crpix = [32.0 * factor + 0.5 * (1 - factor) + 1.0] * 2
        psf = ImagePSF(np.exp(-(np.mgrid[-7 * factor:7 * factor + 1, -7 * factor:7 * factor + 1] ** 2).sum(0)
                              / (4.0 * factor ** 2)), scale, band=name)
        return BandCutout(name, img, np.full_like(img, factor ** 2), wcs, pixel_scale=scale,
                          psf=None if wavelength is None else psf, wavelength=wavelength)
    det = cutout("DETECTION", 0.04, 1, None)
    return det, [cutout("F444W", 0.04, 1, 4.4), cutout("F150W", 0.02, 2, 1.5)]


def _band_share(feature: Mapping[str, Any], n_bands: int) -> float:
    """Correction of a census tile's pixel count when the task used fewer
    bands than the census saw (bands blank over the halo only): 1 otherwise."""
    return 1.0 if not feature or n_bands >= feature.get("n_bands", 0) else \
        (1 + n_bands) / (1 + feature["n_bands"])


def _layout(client, setting: Setting) -> tuple[int, int]:
    """Workers per machine and threads per worker the cluster really has."""
    if setting.workers and setting.threads:
        return setting.workers, setting.threads
    info = client.scheduler_info().get("workers", {})
    threads = sorted(w.get("nthreads", 1) for w in info.values()) or [1]
    return max(1, len(info)), int(threads[len(threads) // 2])


def _report(folder: Path, wanted: bool):
    from contextlib import nullcontext
    if not wanted:
        return nullcontext()
    from distributed import performance_report
    return performance_report(filename=str(folder / "performance_report.html"))


def _gather(futures, progress: bool, label: str) -> list[dict]:
    """Statuses of the futures (a task that died is a failed status)."""
    import sys
    from distributed import as_completed
    from tqdm.auto import tqdm
    done = {}
    with tqdm(total=len(futures), desc=f"size {label}", unit="tile", disable=not progress,
              file=sys.stderr) as bar:
        for fut in as_completed(futures):
            try:
                done[fut.key] = fut.result()
            except Exception as exc:  # KilledWorker...: the tile failed, the sizing goes on
                done[fut.key] = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            bar.update(1)
    return [done[f.key] for f in futures]


def _carry_stars(out: Path, folder: Path) -> None:
    """The PSF stars (``psf/stars.fits``) where the tile tasks look for them,
    so they are fitted as points as in a run."""
    import shutil
    src = out / "psf" / "stars.fits"
    if src.exists():
        (folder / "psf").mkdir(exist_ok=True)
        shutil.copyfile(src, folder / "psf" / "stars.fits")


def _field_summary(fld, cen, model: CostModel, tiles, size: float, rows, setup_s: float) -> dict:
    """``sizing.json``'s ``field``: the whole field at the base tile size."""
    from .costmodel import makespan
    total, err = model.total_core_s(tiles)
    n_bands = len(fld.bands)
    src_bands = sum(t["source_bands"] for t in tiles)
    field = {"name": fld.name, "n_sources": cen.n_sources, "n_bands": n_bands, "n_tiles": len(tiles),
             "tile_size_arcsec": size, "machine": model.machine,
             "predicted_core_s": round(total, 2), "predicted_core_s_err": None if err != err else round(err, 2),
             "predicted_core_s_per_source_band": round(total / src_bands, 5) if src_bands else None,
             "predicted_peak_rss_mb": round(float(model.peak_rss_mb(tiles).max()), 1) if tiles else None}
    here = [r for r in rows if r["tile_size_arcsec"] == size and r["machine"] in ("local", "address")]
    if here:  # the machine measured, with the layout measured there
        workers, threads = int(here[0]["workers"]), int(here[0]["threads"])
        per_tile = model.core_s(tiles) * model.factor(here[0]["machine"], workers, threads)
        tiles_wall = model.warmup_s + makespan(per_tile, workers * threads)
        merge = model.merge_s(len(tiles), cen.n_sources)
        wall = setup_s + tiles_wall + merge
        rel = model.relative_error(tiles)
        field["here"] = {"workers": workers, "threads": threads, "setup_s": round(setup_s, 2),
                         "warmup_s": round(model.warmup_s, 2),
                         "predicted_tiles_wall_s": round(tiles_wall, 2),
                         "predicted_merge_s": round(merge, 2),
                         "predicted_wall_s": round(wall, 2),
                         "predicted_wall_s_err": None if rel != rel else round(tiles_wall * rel, 2)}
    return field
