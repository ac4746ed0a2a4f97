"""One tile, start to finish: read its window, detect, fit, write.

:func:`process_tile` is what each Dask task runs. It writes the tile's
catalog(s) and ``status.json`` atomically into the run directory and returns
the status dict; a failure inside is recorded (reason, traceback, timings),
so the driver can retry, escalate or report it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Mapping

import numpy as np
from astropy.table import Table, hstack, vstack

from .. import __version__
from ..deploy.env import tune_allocator
from ..fit.base import BandCutout, engine_for, get_engine
from ..fit.coverage import apply_coverage
from ..fit.flags import FitFlag
from ..io.field import Field
from ..io.store import RunStore
from ..progress import task_progress
from ..sizing.probe import probe
from ..tiling import Tile

__all__ = ["process_tile", "tile_input_hash", "catalog_name", "rejected_name", "blank_reason"]

# Columns of the detection table kept in catalogs (the rest is working data).
_DROP_DETECTION = ("x", "y", "XMIN", "XMAX", "YMIN", "YMAX")


def catalog_name(model: str, primary: bool) -> str:
    """File name of a model's catalog: ``catalog`` for the primary model."""
    return "catalog" if primary else f"catalog_{model}"


def rejected_name(model: str, primary: bool) -> str:
    """File name of the rows rejected for a model's catalog (``catalog_rejected``)."""
    return f"{catalog_name(model, primary)}_rejected"


def tile_input_hash(tile: Tile, field: Field, config: Mapping[str, Any],
                    psf_paths: Mapping[str, str]) -> str:
    """Hash of everything that determines a tile's result: its windows and the
    contents of the inputs, PSFs, code and configuration
    (:func:`~dja_sepp.io.fingerprint.inputs_key`, computed once per run by the
    driver and passed in ``config["run"]["inputs_key"]``)."""
    key = (config.get("run") or {}).get("inputs_key")
    if not key:
        from ..io.fingerprint import inputs_key
        key = inputs_key(field, psf_paths, config)
    parts = {
        "tile": [tile.id, [(s.start, s.stop) for s in tile.core],
                 [(s.start, s.stop) for s in tile.halo]],
        "inputs": key,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def blank_reason(cut: BandCutout) -> str | None:
    """Why a band cannot be used over a tile, or None if it can."""
    valid = cut.wht > 0
    if not valid.any():
        return "zero weight everywhere"
    if not np.any(cut.sci[valid] != 0):
        return "all pixels zero"
    return None


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def process_tile(tile: Tile, field: Field, config: Mapping[str, Any], out: str,
                 psf_paths: Mapping[str, str], storage_options: dict | None = None) -> dict:
    """Detect and fit every source owned by ``tile``; write its outputs.

    Returns
    -------
    dict
        The status written to ``tiles/{tile_id}/status.json``: ``state``
        (``ok``/``failed``), ``reason``, ``traceback``, ``timings`` (s),
        ``n_sources``, ``n_bands``, ``dropped_bands``, ``input_hash``, versions,
        ``resources`` (:func:`dja_sepp.sizing.probe.probe`'s ``cpu_s``,
        ``wall_s``, ``rss_before_mb``, ``peak_rss_mb``, with the task's
        helpers added: ``cpu_s`` holds the CPU of its fit threads or
        processes or SE++ (``thread_cpu_s``: its own thread's), ``peak_rss_mb``
        its fit processes' own memory (``own_peak_rss_mb``: the worker's)), ``attempt``
        (the ``worker``, task ``key`` and ``pid`` that ran it).
    """
    from ..settings import use_model_dirs
    use_model_dirs(config["fit"].get("model_dirs"))  # this worker finds the run's own models
    tune_allocator()
    store = RunStore(out, storage_options)
    timings: dict[str, float] = {}
    status: dict[str, Any] = {
        "tile": tile.id, "state": "failed", "reason": None, "timings": timings,
        "input_hash": tile_input_hash(tile, field, config, psf_paths),
        "versions": {"dja_sepp": __version__, "python": platform.python_version(),
                     "engine": config["fit"]["engine"]},
        "host": platform.node(), "started": time.time(),
    }
    start = time.perf_counter()
    # core-s of this task's thread, wall and peak memory (dja-sepp size fits its cost model on them)
    with probe() as resources:
        marker = _mark_running(store, tile)
        status["attempt"] = {k: marker[k] for k in ("worker", "key", "pid")}
        try:
            # sources fitted, sent to the driver's progress bar (dja_sepp.progress)
            with task_progress(expected_calls=len(config["fit"]["models"])):
                _run_tile(tile, field, config, store, psf_paths, timings, status)
            status["state"] = "ok"
        except Exception as exc:  # recorded, never lost: the driver decides what next
            status["reason"] = f"{type(exc).__name__}: {exc}"
            status["traceback"] = traceback.format_exc()
    timings["total"] = time.perf_counter() - start
    # the task's own processes and threads (SE++, fit.processes, fit.threads) worked for it too
    resources["thread_cpu_s"] = resources["cpu_s"]
    resources["cpu_s"] = round(resources["cpu_s"] + timings.get("helper_cpu", 0.0), 4)
    if "helper_mb" in status:  # the fit processes' own memory adds to the worker's (an upper bound)
        resources["own_peak_rss_mb"] = resources["peak_rss_mb"]
        resources["peak_rss_mb"] = round(resources["peak_rss_mb"] + status.pop("helper_mb"), 2)
    status["resources"] = resources
    store.write_json(f"tiles/{tile.id}/status.json", status)
    store.remove(f"tiles/{tile.id}/running.json")  # the attempt is over: status.json says how
    return status


def _mark_running(store: RunStore, tile: Tile) -> dict:
    """``tiles/{id}/running.json``: when and where this attempt started, so
    the driver can stop it at its time limit (see :mod:`.execute`); removed
    when the attempt ends (``status.json`` keeps its worker and task key)."""
    marker = {"started": time.time(), "worker": None, "key": None, "host": platform.node(),
              "pid": os.getpid()}
    try:
        from distributed import get_worker
        worker = get_worker()
        marker.update(worker=worker.address, key=str(worker.get_current_task()))
    except (ImportError, ValueError):
        pass  # run outside a distributed worker
    store.write_json(f"tiles/{tile.id}/running.json", marker)
    return marker


def _debug_memory_hog(tile: Tile, config: Mapping[str, Any]) -> None:
    """Test hook ``debug.needs_resource: {tile_id: NAME}``: the tile fails with
    MemoryError on workers without resource NAME (exercises escalation)."""
    need = (config.get("debug") or {}).get("needs_resource", {}).get(tile.id)
    if not need:
        return
    from distributed import get_worker
    if need not in (get_worker().state.total_resources or {}):
        raise MemoryError(f"tile {tile.id} needs a worker with resource {need} (debug hook)")


def _run_tile(tile: Tile, field: Field, config: Mapping[str, Any], store: RunStore,
              psf_paths: Mapping[str, str], timings: dict, status: dict) -> None:
    from ..detect import detect_sources  # heavy import only inside workers
    from ..psf import load_psf

    debug_sleep = float((config.get("debug") or {}).get("sleep", {}).get(tile.id, 0))
    with _timed(timings, "read"):
        det = field.detection.cutout(tile.halo)
    with _timed(timings, "detect"):
        sources, segmap, rejected = detect_sources(det, config["detection"], return_rejected=True)
        det.segmap = segmap
        ys, xs = tile.halo
        for table in (sources, rejected):
            table["IN_CORE"] = tile.in_core(np.asarray(table["x"]) + xs.start,
                                            np.asarray(table["y"]) + ys.start)
        _mark_psf_stars(sources, store)
    status["n_detected"] = len(sources)
    status["n_sources"] = int(np.count_nonzero(sources["IN_CORE"]))
    status["n_rejected_detections"] = int(np.count_nonzero(rejected["IN_CORE"]))
    bands, dropped = [], {}
    with _timed(timings, "read"):
        for name, image in field.bands.items():
            psf = load_psf(psf_paths[name], band=name, pixel_scale=image.pixel_scale,
                           storage_options=image.storage_options) if name in psf_paths else None
            cut = image.cutout(tile.halo_on(image.factor), psf=psf)
            reason = blank_reason(cut)
            if reason:
                dropped[name] = reason
                continue
            if psf is None:
                raise ValueError(f"band {name}: no PSF given or built")
            bands.append(cut)
    status["dropped_bands"] = dropped
    status["n_bands"] = len(bands)
    with _timed(timings, "noise"):
        noise = {"DETECTION": float(sources.meta.get("NOISECOR", 1.0))}
        if config["detection"].get("noise_correlation", True):
            # the cores the fits get (fit.threads or fit.processes) measure the bands at once
            # (numpy's medians release the GIL: x1.6 on 2 threads)
            cores = max(int(config["fit"]["threads"]), int(config["fit"]["processes"]))
            if cores > 1 and len(bands) > 1:
                with ThreadPoolExecutor(min(cores, len(bands)), thread_name_prefix="dja-sepp-noise") as pool:
                    measured = list(pool.map(lambda cut: _timed_cpu(_band_noise, cut, det), bands))
                noise.update((cut.band, value) for cut, (value, _) in zip(bands, measured))
                timings["helper_cpu"] = timings.get("helper_cpu", 0.0) + sum(cpu for _, cpu in measured)
            else:
                noise.update({cut.band: _band_noise(cut, det) for cut in bands})
    status["noise_correlation"] = noise
    if dropped:
        status["warnings"] = [f"band {b} dropped over tile {tile.id}: {r}" for b, r in dropped.items()]
    if debug_sleep:  # test hook: simulate a stalled tile (see tests of timeouts)
        time.sleep(debug_sleep)
    _debug_memory_hog(tile, config)
    models = list(config["fit"]["models"])
    # how the detections were made, for the engine's detection on the residual of its models
    det.meta["detection"] = config["detection"]
    det.meta["core"] = tuple(slice(c.start - h.start, c.stop - h.start) for c, h in zip(tile.core, tile.halo))
    det.meta["noise_correlation"] = noise
    options = dict(config["fit"])
    for i, model in enumerate(models):
        with _timed(timings, "fit"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                engine = get_engine(engine_for(config["fit"], model))  # per model (fit.model_engines)
                fitted = engine.fit(sources, det, bands, model, options=options)
        found = fitted.meta.pop("RESIDUAL_SOURCES", None)
        segmap = fitted.meta.pop("RESIDUAL_SEGMAP", None)
        if found is not None:  # sources found on the residual: rows of every model's catalog
            sources = vstack([sources, found], metadata_conflicts="silent")
            det.segmap = segmap
            status["n_residual_sources"] = int(np.count_nonzero(found["IN_CORE"]))
        options["residual_detection"] = False  # the next models fit the same sources
        child_cpu = fitted.meta.pop("HELPER_CPU", None)  # an engine's own processes or threads (SE++,
        if child_cpu is not None:                      # fit.processes, fit.threads): not in this thread's CPU
            timings["helper_cpu"] = timings.get("helper_cpu", 0.0) + float(child_cpu)
        helper_mb = fitted.meta.pop("HELPER_MB", None)  # fit processes' own memory
        if helper_mb is not None:
            status["helper_mb"] = max(status.get("helper_mb", 0.0), float(helper_mb))
        with _timed(timings, "write"):
            # sources on the edge of a band's coverage: flagged, fluxes NaN below fit.min_coverage
            apply_coverage(fitted, sources, det, bands, config["fit"])
            for name in dropped:  # blank over the whole tile
                fitted[f"COVERAGE_{name}"] = np.zeros(len(fitted), np.float32)
            _scale_flux_errors(fitted, noise)
            table = _tile_catalog(sources, fitted, tile, dropped)
            explained = (np.asarray(table["FLAGS"]) & int(FitFlag.EXPLAINED)) > 0
            store.write_table(f"tiles/{tile.id}/{catalog_name(model, i == 0)}.parquet", table[~explained])
            store.write_table(f"tiles/{tile.id}/{rejected_name(model, i == 0)}.parquet",
                              _rejected_rows(rejected, table[explained], tile))


def _mark_psf_stars(sources: Table, store: RunStore, radius: float = 0.1) -> None:
    """``PSF_STAR``: the detection is one of the stars the PSF step selected
    (``psf/stars.fits``, within ``radius`` arcsec); it is fitted as a point."""
    sources["PSF_STAR"] = np.zeros(len(sources), bool)
    if not len(sources) or not store.exists("psf/stars.fits"):
        return
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    stars = store.read_table("psf/stars.fits")
    if not len(stars):
        return
    cat = SkyCoord(np.asarray(sources["RA"], float) * u.deg, np.asarray(sources["DEC"], float) * u.deg)
    ref = SkyCoord(np.asarray(stars["RA"], float) * u.deg, np.asarray(stars["DEC"], float) * u.deg)
    _, sep, _ = cat.match_to_catalog_sky(ref)
    sources["PSF_STAR"] = sep.arcsec < radius


def _timed_cpu(func, *args):
    """``func(*args)`` and the CPU seconds of the calling thread it took."""
    cpu = time.thread_time()
    return func(*args), time.thread_time() - cpu


def _band_noise(cut: BandCutout, det: BandCutout, side: int = 1024) -> float:
    """Correlated-noise factor of one band cutout (central ``side`` square,
    sources of the detection segmentation masked)."""
    from ..detect.noise import noise_correlation
    from ..fit.engine import band_affine
    from ..fit.triage import segments_on_band
    sl = tuple(slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + min(n, side)) for n in cut.shape)
    seg = segments_on_band(det.segmap, band_affine(det, cut), sl)
    return noise_correlation(cut.sci[sl], cut.wht[sl], seg > 0)


def _scale_flux_errors(fitted: Table, noise: Mapping[str, float]) -> None:
    """Model flux, magnitude and B/T errors of each band times its noise factor."""
    for band, factor in noise.items():
        for col in fitted.colnames:
            if col.endswith(f"_{band}_err") and col.startswith(("FLUX_MODEL", "MAG_MODEL", "B/T")):
                fitted[col] *= factor


def _rejected_rows(rejected: Table, explained: Table, tile: Tile) -> Table:
    """Detections this tile's core owns that are not in its catalog, with why:
    removed by detection (``core_threshold``, ``cleaned``) or explained by a
    brighter neighbour's model (``explained_by_neighbour``, with its fit columns)."""
    keep = [c for c in rejected.colnames if c not in _DROP_DETECTION]
    det = rejected[keep][np.asarray(rejected["IN_CORE"], bool)]
    det.remove_column("IN_CORE")
    det["TILE_ID"] = np.array([tile.id] * len(det), dtype="U16")
    explained = explained.copy()
    explained["REJECT_REASON"] = np.array(["explained_by_neighbour"] * len(explained), dtype="U24")
    explained["MERGED_INTO"] = np.zeros(len(explained), dtype=np.int32)
    out = vstack([det, explained], join_type="outer", metadata_conflicts="silent") \
        if len(explained) else det
    out.meta.clear()
    return out


def _tile_catalog(sources: Table, fitted: Table, tile: Tile, dropped: Mapping[str, str]) -> Table:
    """Detection columns + model columns for the rows this tile owns."""
    if len(fitted) != len(sources):
        raise RuntimeError(f"engine returned {len(fitted)} rows for {len(sources)} sources")
    keep = [c for c in sources.colnames if c not in _DROP_DETECTION]
    clash = set(keep) & set(fitted.colnames)
    det = sources[[c for c in keep if c not in clash]]
    table = hstack([det, fitted], join_type="exact", metadata_conflicts="silent")
    table = table[np.asarray(table["IN_CORE"], dtype=bool)]
    table.remove_column("IN_CORE")
    table["TILE_ID"] = np.array([tile.id] * len(table), dtype="U16")
    table.meta["TILE_ID"] = tile.id
    table.meta["DROPPED"] = ",".join(f"{b}" for b in dropped)
    return table
