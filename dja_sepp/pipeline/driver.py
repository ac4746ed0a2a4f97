"""The run driver: field -> tiles -> one Dask task per tile -> merge.

The driver holds no pixels: it reads headers, submits one task per tile
(workers read their own windows), waits with a progress bar, and merges the
small tile catalogs. A rerun skips tiles whose ``status.json`` is ok with the
same input key (contents of the inputs, code and configuration), so an
interrupted run resumes where it stopped; a rerun in a directory that holds a
run works beside it and replaces it only when not worse (:mod:`.runstate`).
Everything is checked (configuration, images, PSF files) before the first
tile.
"""
from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import Table

from ..io.cache import is_remote
from ..io.field import Field
from ..io.fingerprint import inputs_key
from ..io.preflight import check_images, check_psfs
from ..io.store import RunStore
from ..fit.base import check_engines, engine_for
from ..progress import shown
from ..merge import describe_catalog, merge_catalogs
from ..settings import config_hash, dump_config, load_config, model_path
from ..tiling import TileGrid, busiest_first, make_tiles
from .execute import lazy_client
from .result import RunResult, flag_counts, outputs_of, summary_dict
from .runstate import carry_psfs, carry_tiles, finish_attempt, open_attempt
from .tile_task import catalog_name, rejected_name, tile_input_hash

__all__ = ["run", "RunResult", "field_from_config", "merge_run"]

log = logging.getLogger("dja_sepp")


def field_from_config(images: str | Field, config: Mapping[str, Any],
                      storage_options: dict | None = None) -> Field:
    """The field of a run: a :class:`Field` as is, or found in a folder/URL."""
    if isinstance(images, Field):
        return images
    fc = config["field"]
    # absolute paths: workers (and a later resume) may run in another folder
    cache_dir = _absolute(fc["cache_dir"]) if fc["cache_dir"] else None
    return Field.from_directory(_absolute(images), field=fc["name"], bands=fc["bands"],
                                detection=fc["detection"], zeropoint=fc["zeropoint"],
                                cache_dir=cache_dir, storage_options=storage_options)


def run(images: str | Path | Field, out: str | Path, models: Sequence[str] | None = None,
        cluster: Any = None, config: str | Path | Mapping | None = None,
        psfs: Mapping[str, str] | None = None, progress: bool = True,
        storage_options: dict | None = None, *, mosaic: bool | None = None,
        workers: int | None = None, performance_report: bool | None = None,
        **overrides: Any) -> RunResult:
    """Fit every source of a field, tile by tile on Dask, and merge.

    In a script, call it under ``if __name__ == "__main__":``: the local
    cluster starts worker processes that import the script again.

    Parameters
    ----------
    images : str, Path or Field
        Folder or URL holding DJA-named mosaics, or a :class:`Field`.
    out : str or Path
        Run directory (local or fsspec URL).
    models : sequence of str, optional
        Model names (``config/models``); the first is the primary catalog.
    cluster : None, str, Client or Cluster
        None: the configured cluster (local processes by default); a
        scheduler address; or a ``distributed`` Client / cluster object.
    config : path or mapping, optional
        Run configuration overriding the shipped defaults.
    psfs : mapping, optional
        band -> PSF file; bands without one get a PSF built by the PSF step.
    progress : bool
        Show a progress bar.
    storage_options : dict, optional
        fsspec options for remote images and run directories.
    mosaic : bool, optional
        False skips the model / residual mosaics (``mosaic.enabled``).
    workers : int, optional
        Local worker processes (``cluster.n_workers``; default one per core).
    performance_report : bool, optional
        Save distributed's performance report of the tiles and mosaics as
        ``performance_report.html`` in the run directory
        (``cluster.performance_report``).
    **overrides
        Configuration overrides as ``section__key=value``.
    """
    t_start = time.perf_counter()
    if models:
        overrides["fit__models"] = [models] if isinstance(models, str) else list(models)
    if mosaic is not None:
        overrides["mosaic__enabled"] = bool(mosaic)
    if workers is not None:
        overrides["cluster__n_workers"] = workers
    if performance_report is not None:
        overrides["cluster__performance_report"] = bool(performance_report)
    if "no_mosaic" in overrides:  # the command line's spelling
        raise TypeError("run() takes mosaic=False (not no_mosaic=True)")
    cfg = load_config(config, **overrides)  # every value checked before anything is written
    storage_options = storage_options_of(cfg, storage_options)
    final = RunStore(out, storage_options)
    with _no_empty_folder(final):  # input refused: no empty run directory is left behind
        final.check_writable()
        fld = field_from_config(images, cfg, storage_options)
        _check_models(cfg)
        grid = _grid(fld, cfg)
        check_images(fld)  # truncated or unreadable mosaics: stop now, not in every tile
        check_psfs(_given_psfs(cfg, psfs), fld)
    # an earlier run in `out` is never written over: this attempt works beside it
    store, previous = open_attempt(final)
    given = carry_psfs(final, store, _given_psfs(cfg, psfs))
    # one cluster, started when first needed, for the PSFs, the tiles and the
    # mosaic (one start-up, one dashboard link)
    with lazy_client(cluster, cfg, store) as get_client:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with shown(progress):
            psf_paths = _resolve_psfs(fld, grid, cfg, store, given, get_client)
        if len(psf_paths) > len(given):
            timings["psf"] = time.perf_counter() - t0
        cfg["run"] = {"images": _absolute(images if not isinstance(images, Field) else fld.detection.sci_path),
                      "field": fld.name, "bands": list(fld.bands), "psf_files": psf_paths,
                      "n_tiles": len(grid.tiles), "core_size": grid.core_size, "halo": grid.halo,
                      "units": {b: im.unit for b, im in {**fld.bands, "DETECTION": fld.detection}.items()},
                      "zeropoints": {b: im.zeropoint for b, im in fld.bands.items()}}
        cfg["run"]["inputs_key"] = inputs_key(fld, psf_paths, cfg)  # contents, not paths: decides reuse
        store.write_text("run.yaml", dump_config(_portable(cfg, store)))
        preview, weight, binning = _preview(grid, fld)
        _write_tiling(grid, fld, store, preview, binning)
        # setup: checks, fingerprints, tiling (the PSF step apart)
        timings["setup"] = time.perf_counter() - t_start - timings.get("psf", 0.0)

        from .execute import execute_tiles  # distributed imported only when running
        todo, reused = _tiles_to_run(grid, fld, cfg, final, psf_paths)
        todo = busiest_first(todo, preview * np.sqrt(np.clip(weight, 0, None)), binning)
        del preview, weight
        carry_tiles(final, store, [t.id for t in reused])
        mosaic = cfg["mosaic"]["enabled"]
        client = get_client() if todo or mosaic else None
        t0 = time.perf_counter()
        statuses = execute_tiles(todo, fld, cfg, store, psf_paths, cluster=client,
                                 progress=progress, storage_options=storage_options)
        timings["tiles"] = time.perf_counter() - t0
        usage = _usage(statuses, cfg)
        for st in statuses.values():
            for stage, sec in st.get("timings", {}).items():
                timings[f"tile_{stage}"] = timings.get(f"tile_{stage}", 0.0) + sec
        failed = {t: (s.get("reason") or "unknown") for t, s in statuses.items()
                  if s.get("state") != "ok"}
        t0 = time.perf_counter()
        result = merge_run(store, grid, cfg)
        timings["merge"] = time.perf_counter() - t0
        if mosaic and result.n_ok:
            t0 = time.perf_counter()
            try:
                with shown(progress):
                    result.mosaic_path = _mosaics(store, cfg, fld, grid, client, storage_options)
            except Exception as exc:  # the catalog is written: keep it, report the mosaic failure
                log.error("mosaic step failed (redo it with dja-sepp mosaic %s): %s", final.root, exc)
                failed["mosaic"] = f"{type(exc).__name__}: {exc}"
            timings["mosaic"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    result.n_skipped = len(reused)
    result.failed = failed
    result.n_ok = len(grid.tiles) - len([t for t in failed if t != "mosaic"])
    result.timings = timings
    result.usage = usage
    result.storage_options = storage_options
    return _finish(final, store, previous, result)


@contextmanager
def _no_empty_folder(store: RunStore):
    """Remove the run directory again when the block fails and the
    directory, made by it, is still empty."""
    existed = store.fs.exists(store._root_path)
    try:
        yield
    except BaseException:
        try:
            if not existed and store.fs.exists(store._root_path) and not store.listdir():
                store.fs.rmdir(store._root_path)
        except OSError:
            pass  # not ours to fix: the original error is the one to report
        raise


def _finish(final: RunStore, store: RunStore, previous: dict | None, result: RunResult) -> RunResult:
    """Swap the attempt in if it is not worse than the earlier run; write
    ``summary.json`` where the attempt's files end up."""
    summary = summary_dict(result)
    swapped, where = finish_attempt(final, store, previous, summary)
    if where.root != store.root:
        result.relocate(store.root, where.root)
    result.kept_previous = None if swapped else final.root
    result.outputs = outputs_of(where, result)
    summary = summary_dict(result)
    where.write_json("summary.json", summary)
    return result


def _usage(statuses: Mapping[str, dict], cfg: Mapping[str, Any]) -> dict:
    """Core-s per source-band and the EC2 estimate of the tiles computed
    (:func:`dja_sepp.sizing.usage.run_usage`); never fails the run."""
    try:
        from ..sizing.usage import run_usage
        return run_usage(statuses, cfg)
    except Exception as exc:  # an estimate, not a result
        log.warning("no cost estimate: %s", exc)
        return {}


def _grid(fld: Field, cfg: Mapping[str, Any]) -> TileGrid:
    """The tiling of the field, refused before any work starts when no tile
    has valid pixels, or when the halo is wider than the field and there are
    several tiles (each would process the whole field again)."""
    t = cfg["tiling"]
    grid = make_tiles(fld, t["tile_size"], t["overlap"], t["align"])
    if not grid.tiles:
        raise ValueError(f"{fld.detection.wht_path}: no tile has valid detection pixels")
    ny, nx = fld.detection.shape
    scale = fld.detection.pixel_scale
    if t["overlap"] > min(ny, nx) * scale:
        what = (f"tiling.overlap {t['overlap']:g}\" is larger than the field {fld.name} "
                f"({nx * scale:.1f}\" x {ny * scale:.1f}\")")
        if len(grid.tiles) > 1:
            raise ValueError(f"{what}: each of its {len(grid.tiles)} tiles would fit the whole "
                             f"field; use a halo a little wider than the largest source")
        log.warning("%s; one tile covers the field, the halo is cut at its edges", what)
    return grid


def _absolute(path: str | Path) -> str:
    """A local path made absolute (a run.yaml read from another folder must
    find the same files); URLs as they are."""
    text = str(path)
    return text if is_remote(text) or "://" in text else str(Path(text).expanduser().resolve())


def storage_options_of(cfg: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict | None:
    """fsspec options of a run: ``field.storage_options`` updated by those
    given in Python or on the command line (None when there are none)."""
    merged = {**(cfg["field"].get("storage_options") or {}), **(given or {})}
    return merged or None


def _portable(cfg: Mapping[str, Any], store: RunStore) -> dict[str, Any]:
    """What ``run.yaml`` holds: the configuration with absolute input paths,
    the PSFs the run built relative to the run directory (so the folder can
    move, and a resume from elsewhere finds the same files), and no secret
    (``cluster.worker_env`` values are left out: give them again to resume)."""
    out = copy.deepcopy(dict(cfg))
    # worker_env may hold credentials: its names are kept, never its values
    out["cluster"]["worker_env"] = {}
    out["run"]["worker_env_names"] = sorted(cfg["cluster"].get("worker_env") or {})
    out["field"]["storage_options"] = {}   # fsspec options may hold credentials too
    root = store.url() + "/"
    out["run"]["psf_files"] = {b: p[len(root):] if p.startswith(root) else p
                               for b, p in cfg["run"]["psf_files"].items()}
    return out


def _run_paths(record: Mapping[str, Any], store: RunStore) -> dict[str, str]:
    """PSF paths of a ``run.yaml`` record, run-relative ones resolved."""
    files = record.get("psf_files") or {}
    return {b: p if is_remote(p) or Path(p).is_absolute() else store.url(p) for b, p in files.items()}


def merge_run(store: RunStore, grid: TileGrid, cfg: Mapping[str, Any]) -> RunResult:
    """Merge the ok tiles of a run directory into ``catalog*.fits/.parquet``.

    A catalog built from an incomplete set of tiles says so in its header
    (``COMPLETE = F`` and the missing tiles), so it is never mistaken for the
    whole field.
    """
    models = list(cfg["fit"]["models"])
    ok_tiles, missing, noise, dropped = [], [], {}, []
    for tile in grid.tiles:
        rel = f"tiles/{tile.id}/status.json"
        status = store.read_json(rel) if store.exists(rel) else {}
        if status.get("state") == "ok":
            ok_tiles.append(tile)
            dropped.append(status.get("dropped_bands") or {})
            for band, factor in status.get("noise_correlation", {}).items():
                noise.setdefault(band, []).append(factor)
        else:
            missing.append(tile.id)
    result = RunResult(store.root, None, len(grid.tiles), len(ok_tiles), 0,
                       {t: "not ok" for t in missing})
    result.unusable_bands = _unusable(dropped)
    result.dropped_bands = _dropped(dropped)
    for band, reason in result.unusable_bands.items():
        log.warning("band %s is unusable over the whole field (%s): no measurements", band, reason)
    # flux errors of each tile were multiplied by its own factor; the field's median is reported
    result.noise_correlation = {b: round(float(np.median(v)), 4) for b, v in noise.items()}
    for i, model in enumerate(models):
        name = catalog_name(model, i == 0)
        tables = [store.read_table(f"tiles/{t.id}/{name}.parquet") for t in ok_tiles]
        merged, stats = merge_catalogs(tables, grid, cfg["merge"]["match_radius"])
        _describe(merged, cfg, model)
        merged.meta["COMPLETE"] = (not missing, "all tiles of the field are in this catalog")
        merged.meta["NTILES"] = len(grid.tiles)
        if missing:
            merged.meta["MISSING"] = ",".join(missing)[:60]
        if result.unusable_bands:
            merged.meta["UNUSABLE"] = (",".join(result.unusable_bands)[:60],
                                       "bands without valid pixels anywhere in the field")
        for ext in ("fits", "parquet"):
            store.write_table(f"{name}.{ext}", merged)
        result.catalogs[model] = store.url(f"{name}.fits")
        if i == 0:
            result.catalog_path, result.merge = store.url(f"{name}.fits"), stats
            result.flag_counts = flag_counts(merged)
        _merge_rejected(store, grid, ok_tiles, rejected_name(model, i == 0), model, cfg)
    result.outputs = outputs_of(store, result)
    return result


def _dropped(dropped: list[dict[str, str]]) -> dict[str, list]:
    """band -> [ok tiles over which it was blank, the first reason]."""
    out: dict[str, list] = {}
    for tile in dropped:
        for band, reason in tile.items():
            out.setdefault(band, [0, reason])[0] += 1
    return dict(sorted(out.items()))


def _unusable(dropped: list[dict[str, str]]) -> dict[str, str]:
    """Bands dropped by every ok tile (all NaN, zero or negative weight):
    band -> reason of the first tile."""
    if not dropped:
        return {}
    common = set(dropped[0]).intersection(*dropped[1:])
    return {b: dropped[0][b] for b in sorted(common)}


def _describe(cat: Table, cfg: Mapping[str, Any], model: str) -> None:
    """Units, zero point and provenance in a merged catalog's header (runs
    whose run.yaml predates the units record get the provenance only)."""
    from datetime import datetime, timezone
    from .. import __version__
    record = cfg.get("run") or {}
    info = {"CREATOR": (f"dja-sepp {__version__}", "software that made this file"),
            "SWVERSN": (__version__, "dja-sepp version"),
            "DATE": (datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation time"),
            "ENGINE": (engine_for(cfg["fit"], model), "fitting engine"),
            "MODEL": (model, "model of the fit columns"),
            "CFGHASH": (config_hash(cfg), "hash of run.yaml's result settings")}
    describe_catalog(cat, list(record.get("bands") or []), record.get("units") or {},
                     record.get("zeropoints") or {}, info)


def _merge_rejected(store: RunStore, grid: TileGrid, tiles, name: str, model: str,
                    cfg: Mapping[str, Any]) -> None:
    """``{catalog}_rejected.fits``: every detection of the field that is not a
    catalog row, with ``REJECT_REASON`` (tiles from before this step have none)."""
    tables = [store.read_table(f"tiles/{t.id}/{name}.parquet") for t in tiles
              if store.exists(f"tiles/{t.id}/{name}.parquet")]
    merged, _ = merge_catalogs(tables, grid, 0.0)
    _describe(merged, cfg, model)
    merged.meta["COMMENT"] = "detections not in the catalog: REJECT_REASON says why"
    store.write_table(f"{name}.fits", merged)


def _check_models(cfg: Mapping[str, Any]) -> None:
    for model in cfg["fit"]["models"]:  # fail before any work on an unknown model
        model_path(model)
    check_engines(cfg["fit"])  # e.g. sourcextractor++ not on PATH: said before any tile work


def _given_psfs(cfg: Mapping[str, Any], psfs: Mapping[str, str] | None) -> dict[str, str]:
    """band -> absolute path of the PSF files given (configuration, then arguments)."""
    return {k.upper(): _absolute(v) for k, v in {**cfg["psf"]["files"], **(psfs or {})}.items()}


def _resolve_psfs(fld: Field, grid: TileGrid, cfg: Mapping[str, Any], store: RunStore,
                  given: dict[str, str], get_client: Any = None) -> dict[str, str]:
    given = dict(given)
    missing = [b for b in fld.bands if b not in given]
    if missing and cfg["psf"]["method"] == "files":
        raise ValueError(f"{fld.name}: no PSF file for band(s) {', '.join(missing)}; give one per band "
                         f"(psf.files in the configuration, --psf BAND=FILE, or psfs={{band: path}})")
    if missing:
        if cfg["psf"]["method"] not in ("builtin", "psfex"):
            raise ValueError(f"psf.method must be builtin, psfex or files, not {cfg['psf']['method']!r}")
        from ..psf import build_psfs
        client = get_client() if get_client is not None else None   # PSF tasks on the cluster
        given.update(build_psfs(fld, grid, store, cfg, bands=missing, client=client))
    return {b: given[b] for b in fld.bands}


def _preview(grid: TileGrid, fld: Field) -> tuple[np.ndarray, np.ndarray, int]:
    """A strided preview of the detection image and its weight (at most
    ~1500 px a side, never the full mosaic) and the stride."""
    step = max(1, max(grid.shape) // 1500)
    preview, weight = fld.detection.read((slice(0, grid.shape[0], step), slice(0, grid.shape[1], step)))
    return preview, weight, step


def _write_tiling(grid: TileGrid, fld: Field, store: RunStore, preview: np.ndarray, step: int) -> None:
    """``tiles.reg`` (DS9, sky coordinates) and ``tiles.png`` (tiles over the preview)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        reg = grid.write_ds9(Path(tmp) / "tiles.reg", fld.detection.wcs)
        store.put_file(reg, "tiles.reg")
        png = grid.plot(Path(tmp) / "tiles.png", preview, binning=step)
        store.put_file(png, "tiles.png")


def _tiles_to_run(grid: TileGrid, fld: Field, cfg, store: RunStore, psf_paths) -> tuple[list, list]:
    todo, reused = [], []
    for tile in grid.tiles:
        rel = f"tiles/{tile.id}/status.json"
        if store.exists(rel):
            st = store.read_json(rel)
            if st.get("state") == "ok" and st.get("input_hash") == tile_input_hash(
                    tile, fld, cfg, psf_paths):
                reused.append(tile)
                continue
        todo.append(tile)
    return todo, reused


def rebuild_grid(run_dir: str, storage_options: dict | None = None):
    """``(store, config, field, grid)`` of an existing run, from its ``run.yaml``."""
    import yaml
    store = RunStore(run_dir, storage_options)
    if not store.exists("run.yaml"):
        raise FileNotFoundError(f"{run_dir}: no run.yaml (not a dja-sepp run directory)")
    cfg = yaml.safe_load(store.read_text("run.yaml"))
    cfg["run"]["psf_files"] = _run_paths(cfg["run"], store)
    fld = field_from_config(cfg["run"]["images"], cfg, storage_options)
    return store, cfg, fld, _grid(fld, cfg)


def mosaic_run(run_dir: str, cluster: Any = None, storage_options: dict | None = None,
               progress: bool = True) -> list[str]:
    """Render the model and residual mosaics of a finished run (``mosaic.zarr``)."""
    store, cfg, fld, grid = rebuild_grid(run_dir, storage_options)
    with shown(progress):
        return [_mosaics(store, cfg, fld, grid, cluster, storage_options)]


def _mosaics(store: RunStore, cfg: Mapping[str, Any], fld: Field, grid: TileGrid, cluster: Any,
             storage_options: dict | None) -> str:
    from ..mosaic import build_mosaics, quicklook
    from .execute import client_for
    model = cfg["fit"]["models"][0]
    catalog = store.read_table(f"{catalog_name(model, True)}.fits")
    with client_for(cluster, cfg) as client:
        url = build_mosaics(store.root, fld, grid, catalog, cfg["run"]["psf_files"], model,
                            engine=engine_for(cfg["fit"], model), client=client, storage_options=storage_options,
                            model_dirs=tuple(cfg["fit"].get("model_dirs") or ()))
    quicklook(url, store, list(fld.bands), storage_options)
    return url


def resume(run_dir: str, cluster: Any = None, progress: bool = True,
           storage_options: dict | None = None, **overrides: Any) -> RunResult:
    """Finish an earlier run: recompute only its failed or missing tiles.

    The images, configuration and PSFs come from the run's ``run.yaml``; ok
    tiles whose inputs are unchanged are reused, not recomputed. ``overrides``
    may change where and how it runs (``cluster__n_workers``,
    ``mosaic__enabled``); the command line refuses options that would change
    the result.
    """
    import yaml
    store = RunStore(run_dir, storage_options)
    if not store.exists("run.yaml"):
        raise FileNotFoundError(f"{run_dir}: no run.yaml (not a dja-sepp run directory)")
    cfg = yaml.safe_load(store.read_text("run.yaml"))
    previous = cfg.pop("run")
    return run(previous["images"], run_dir, cluster=cluster, config=cfg,
               psfs=_run_paths(previous, store) or None, progress=progress,
               storage_options=storage_options, **overrides)
