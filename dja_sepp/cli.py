"""Command line: ``dja-sepp demo | run | tiles | psf | merge | mosaic | report | config``.

Bad input ends with a one-line reason on stderr and exit status 2; a run
whose tiles did not all succeed ends with status 1 after merging and
reporting what it could; a complete run in which a band had no valid pixels
anywhere ends with status 3 (the band has no measurements).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_DEGRADED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="dja-sepp", description="Multi-band model fitting of JWST (DJA) mosaics, tile by tile "
                                     "on Dask.",
        epilog="Start with: dja-sepp demo --out demo (a simulated field, a few minutes).")
    parser.add_argument("--version", action="version", version=f"dja-sepp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details, Dask's cluster messages included")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="fit every source of a field (tiles on Dask, merge)")
    _field_args(p, required=False)
    p.add_argument("--out", help="run directory (path or s3:// URL)")
    p.add_argument("--model", action="append", dest="models", metavar="NAME", help=_model_help())
    p.add_argument("--engine", choices=("builtin", "sourcextractor++"),
                   help="fitting engine (default: fit.engine of the configuration, builtin); "
                        "sourcextractor++ needs that executable on PATH")
    p.add_argument("--workers", type=_positive_int, help="local worker processes (default: one per core)")
    p.add_argument("--cluster", type=_cluster_arg,
                   help="cluster kind (local, slurm, pbs, ec2: settings from the configuration) "
                        "or scheduler address (tcp://host:8786)")
    p.add_argument("--psf", action="append", default=[], metavar="BAND=FILE",
                   help="PSF file for a band (repeatable); other bands get a built PSF")
    p.add_argument("--no-mosaic", action="store_true", help="skip the model/residual mosaics")
    p.add_argument("--performance-report", action="store_true",
                   help="save distributed's performance report as performance_report.html in the run "
                        "directory")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="finish RUN_DIR with its own run.yaml: recompute only its failed or missing "
                        "tiles (--workers, --cluster and --no-mosaic apply; options that change the "
                        "result are refused)")

    p = sub.add_parser("demo", help="simulate a small JWST-like field and run the pipeline on it")
    p.add_argument("--out", required=True, help="folder for images/, truth.fits and run/")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="local worker processes (default: one per core)")
    p.add_argument("--size", type=_positive_float, default=32.0,
                   help="field side in arcsec (default: %(default)s)")
    p.add_argument("--galaxies", type=int, default=200,
                   help="number of simulated galaxies (default: %(default)s)")
    p.add_argument("--passes", type=int, default=1,
                   help="fitting passes (1 keeps the demo to a few minutes; runs default to 2)")
    p.add_argument("--seed", type=int, default=1,
                   help="random seed of the simulation (default: %(default)s)")
    p.add_argument("--model", action="append", dest="models", metavar="NAME", help=_model_help())
    p.add_argument("--truth-psf", action="store_true",
                   help="fit with the simulator's true PSFs instead of building them from the "
                        "field's stars")

    p = sub.add_parser("size", help="measure a sample of tiles and recommend an instance type, "
                                    "workers, tile size and instance count with predicted cost",
                       description="Measure a sample of tiles chosen by detection density under a "
                                   "sweep of tile size, workers and threads (the sizing: section of "
                                   "the configuration), fit a cost model, and write sizing.md, "
                                   "sizing.json and sizing.png to --out.")
    _field_args(p)
    p.add_argument("--out", required=True, help="folder for sizing.md, sizing.json, sizing.png")
    p.add_argument("--model", action="append", dest="models", metavar="NAME", help=_model_help())
    p.add_argument("--sample", type=_positive_int,
                   help="tiles measured per setting (default: sizing.sample of the configuration)")
    p.add_argument("--cluster", type=_cluster_arg,
                   help="where to measure: local (default), ec2 (one instance of each "
                        "sizing.instance_types) or a scheduler address (tcp://host:8786)")
    p.add_argument("--workers", type=_positive_int,
                   help="local worker processes measured (default: sizing.workers, else one per core)")
    p.add_argument("--target-hours", type=_positive_float,
                   help="wall time wanted for the whole field (default: the cheapest choice)")
    p.add_argument("--psf", action="append", default=[], metavar="BAND=FILE",
                   help="PSF file for a band (repeatable); other bands get a built PSF")
    p.add_argument("--performance-report", action="store_true",
                   help="save distributed's performance report of each setting in its measure/ folder")

    p = sub.add_parser("tiles", help="write the tiling (DS9 regions + PNG) of a field")
    _field_args(p)
    p.add_argument("--out", required=True, help="folder for tiles.reg and tiles.png")

    p = sub.add_parser("psf", help="select stars and build the PSF of each band")
    _field_args(p)
    p.add_argument("--out", required=True, help="folder for psf/{band}.fits, stars and summary")

    p = sub.add_parser("merge", help="merge the ok tiles of a run directory again")
    p.add_argument("run_dir", help="run directory (path or s3:// URL) holding run.yaml")
    _storage_arg(p)

    p = sub.add_parser("mosaic", help="render the model and residual mosaics of a run")
    p.add_argument("run_dir", help="run directory (path or s3:// URL) holding run.yaml")
    _storage_arg(p)

    p = sub.add_parser("report", help="DJA cross-match, flags, morpho-phot table, figures, HTML")
    p.add_argument("run_dir", help="run directory (path or s3:// URL) holding run.yaml")
    p.add_argument("--dja-catalog", metavar="PHOT",
                   help="DJA photometric catalog ({field}-fix_phot_apcorr.fits, path or URL); "
                        "without it the report uses our catalog alone")
    p.add_argument("--zout", metavar="ZOUT", help="DJA photo-z table of the field (z_phot, mass, "
                                                  "restU/V/J), joined on id")
    p.add_argument("--out", metavar="DIR", help="report folder (default: RUN_DIR/report)")
    p.add_argument("--config", help="configuration YAML whose report: section replaces the run's")
    p.add_argument("--match-radius", type=_positive_float, metavar="ARCSEC",
                   help="one-to-one match radius (default: report.match_radius, 0.3)")
    p.add_argument("--mag-limit", type=_finite, metavar="MAG",
                   help="F277W limit of flag 3 for this field (default: report.field_limits)")
    _storage_arg(p)

    p = sub.add_parser("config", help="configuration files")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("init", help="copy the default YAML files into DIR for editing")
    c.add_argument("dir", help="folder for defaults.yaml and models/ (a model YAML added to "
                               "DIR/models is found by name with --config DIR/defaults.yaml)")
    c.add_argument("--force", action="store_true", help="overwrite files that exist in DIR")
    csub.add_parser("show", help="print the default configuration")
    return parser


def _model_help() -> str:
    """``--model`` help naming the shipped models (file names only: cheap)."""
    from .settings import config_dir
    shipped = sorted(p.stem for p in (config_dir() / "models").glob("*.yaml"))
    return (f"model name (repeatable; the first gives catalog.fits): one of {', '.join(shipped)}, "
            f"a model YAML in the --config file's models/ folder, or a path to a YAML file")


def _field_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--images", required=required, help="folder or URL with DJA-named mosaics")
    p.add_argument("--field", help="field name prefix (when the folder holds several)")
    p.add_argument("--bands", help="comma-separated bands to use (default: all found)")
    p.add_argument("--config", help="run configuration YAML (default: the shipped defaults; dja-sepp config init DIR writes a copy to edit)")
    p.add_argument("--tile-size", type=_positive_float, help="tile core side in arcsec (default: tiling.tile_size of the configuration)")
    p.add_argument("--overlap", type=_non_negative_float, help="tile halo width in arcsec (default: tiling.overlap of the configuration)")
    _storage_arg(p)


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   dest="storage_option",
                   help="fsspec option for remote images and run directories (repeatable), e.g. "
                        "anon=true or client_kwargs={endpoint_url: http://host:9000}; never "
                        "written to any file of the run")


def _storage_options(args: argparse.Namespace) -> dict | None:
    """``--storage-option KEY=VALUE`` items as fsspec keyword arguments.

    ``true``/``false``, whole numbers and ``{...}``/``[...]`` (YAML flow)
    become values of those types; anything else stays a string (so a key
    or token is never reinterpreted, e.g. as an octal number)."""
    import yaml
    out = {}
    for n, item in enumerate(getattr(args, "storage_option", None) or [], 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():  # the item is not echoed: it may be a secret
            raise ValueError(f"--storage-option number {n}: expected KEY=VALUE")
        text = value.strip()
        if text.lower() in ("true", "false"):
            out[key.strip()] = text.lower() == "true"
        elif text.isdigit() and not text.startswith("0"):
            out[key.strip()] = int(text)
        elif text.startswith(("{", "[")):
            out[key.strip()] = yaml.safe_load(text)
        else:
            out[key.strip()] = value
    return out or None


CLUSTER_KINDS = ("local", "slurm", "pbs", "ec2")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _finite(text: str) -> float:
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text!r}")
    return value


def _cluster_arg(text: str) -> str:
    """A cluster kind, or a scheduler address (``tcp://host:port``, ``host:port``)."""
    if text in CLUSTER_KINDS or "://" in text:
        return text
    host, _, port = text.rpartition(":")
    if host and port.isdigit():
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a cluster kind ({', '.join(CLUSTER_KINDS)}) nor a scheduler "
        f"address (tcp://host:8786)")


def _overrides(args: argparse.Namespace) -> dict:
    out = {"field__name": getattr(args, "field", None),
           "tiling__tile_size": getattr(args, "tile_size", None),
           "tiling__overlap": getattr(args, "overlap", None),
           "fit__engine": getattr(args, "engine", None)}
    if getattr(args, "bands", None):
        out["field__bands"] = [b.strip().upper() for b in args.bands.split(",")]
    if getattr(args, "workers", None) is not None:
        out["cluster__n_workers"] = args.workers
    if getattr(args, "no_mosaic", False):
        out["mosaic__enabled"] = False
    if getattr(args, "performance_report", False):
        out["cluster__performance_report"] = True
    return {k: v for k, v in out.items() if v is not None}


# Options of `run` that change the result: a resume (which finishes a run with
# its own run.yaml) refuses them rather than ignoring them.
_RESULT_OPTIONS = {"images": "--images", "out": "--out", "field": "--field", "bands": "--bands",
                   "config": "--config", "tile_size": "--tile-size", "overlap": "--overlap",
                   "models": "--model", "psf": "--psf", "engine": "--engine"}


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run
    from .pipeline.driver import resume
    if args.resume:
        given = [flag for key, flag in _RESULT_OPTIONS.items() if getattr(args, key, None)]
        if given:
            raise ValueError(f"--resume finishes {args.resume} with its own run.yaml; "
                             f"{', '.join(given)} would change its result: start a new run instead "
                             f"(--config {args.resume}/run.yaml --out NEW_DIR)")
        result = resume(args.resume, storage_options=_storage_options(args), **_cluster(args),
                        **_overrides(args))
        return _report(result)
    if not args.images or not args.out:
        raise ValueError("run needs --images and --out (or --resume RUN_DIR)")
    psfs = _psf_args(args)
    result = run(args.images, args.out, models=args.models, config=args.config, psfs=psfs,
                 storage_options=_storage_options(args), **_cluster(args), **_overrides(args))
    return _report(result)


def _psf_args(args: argparse.Namespace) -> dict:
    """``--psf BAND=FILE`` items as band -> path."""
    psfs = {}
    for item in args.psf:
        band, sep, path = item.partition("=")
        if not sep or not band or not path:
            raise ValueError(f"--psf {item}: expected BAND=FILE")
        psfs[band] = path
    return psfs


def cmd_size(args: argparse.Namespace) -> int:
    from .sizing import size_field
    overrides = _overrides(args)
    if args.workers is not None:  # the workers measured, not the run's
        overrides.pop("cluster__n_workers", None)
        overrides["sizing__workers"] = [args.workers]
    result = size_field(args.images, args.out, models=args.models, config=args.config,
                        cluster=args.cluster, psfs=_psf_args(args), sample=args.sample,
                        target_hours=args.target_hours, storage_options=_storage_options(args),
                        performance_report=args.performance_report, **overrides)
    print(result.summary())
    return EXIT_OK


def _cluster(args: argparse.Namespace) -> dict:
    """``--cluster``: a kind becomes ``cluster.kind``, an address the scheduler."""
    if args.cluster in CLUSTER_KINDS:
        return {"cluster__kind": args.cluster}
    return {"cluster": args.cluster}


def _report(result) -> int:
    print(result.summary())
    return _exit_status(result)


def _exit_status(result) -> int:
    if not result.complete:
        return EXIT_INCOMPLETE
    return EXIT_DEGRADED if result.degraded else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    result = run_demo(args.out, size=args.size, n_galaxies=args.galaxies, seed=args.seed,
                      workers=args.workers, models=args.models, fit__passes=args.passes,
                      psf="truth" if args.truth_psf else "build", show_summary=True)
    return _exit_status(result)   # (the summary is printed before the truth comparison)


def _field_setup(args: argparse.Namespace):
    """Configuration, field, tiling and writable output store of a command."""
    from .io.store import RunStore
    from .pipeline.driver import _grid, field_from_config
    from .settings import load_config
    options = _storage_options(args)
    cfg = load_config(args.config, **_overrides(args))
    fld = field_from_config(args.images, cfg, options)
    grid = _grid(fld, cfg)
    store = RunStore(args.out, options)
    store.check_writable()
    return cfg, fld, grid, store


def cmd_tiles(args: argparse.Namespace) -> int:
    from .pipeline.driver import _preview, _write_tiling
    _, fld, grid, store = _field_setup(args)
    preview, _, step = _preview(grid, fld)
    _write_tiling(grid, fld, store, preview, step)
    print(f"{len(grid.tiles)} tiles ({grid.nrows} x {grid.ncols}, core {grid.core_size} px, "
          f"halo {grid.halo} px): {store.url('tiles.reg')}, {store.url('tiles.png')}")
    return EXIT_OK


def cmd_psf(args: argparse.Namespace) -> int:
    from .psf import build_psfs
    from .progress import shown
    cfg, fld, grid, store = _field_setup(args)
    with shown(True):   # a bar over the bands
        built = build_psfs(fld, grid, store, cfg, bands=list(fld.bands))
    for band, path in built.items():
        print(f"{band}: {path}")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from .pipeline.driver import rebuild_grid, merge_run
    store, cfg, _, grid = rebuild_grid(args.run_dir, _storage_options(args))
    result = merge_run(store, grid, cfg)
    return _report(result)


def cmd_mosaic(args: argparse.Namespace) -> int:
    from .pipeline.driver import mosaic_run
    for path in mosaic_run(args.run_dir, storage_options=_storage_options(args)):
        print(path)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .reporting import report
    overrides = {"report__match_radius": args.match_radius, "report__mag_limit": args.mag_limit}
    result = report(args.run_dir, dja_catalog=args.dja_catalog, zout=args.zout, out=args.out,
                    config=args.config, storage_options=_storage_options(args),
                    **{k: v for k, v in overrides.items() if v is not None})
    print(result.summary())
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from .settings import config_dir, init_config_dir
    if args.config_command == "init":
        for path in init_config_dir(args.dir, force=args.force):
            print(path)
    else:
        print((config_dir() / "defaults.yaml").read_text())
    return EXIT_OK


COMMANDS = {"run": cmd_run, "size": cmd_size, "demo": cmd_demo, "tiles": cmd_tiles, "psf": cmd_psf, "merge": cmd_merge,
            "mosaic": cmd_mosaic, "report": cmd_report, "config": cmd_config}


def quiet_libraries(verbose: bool = False) -> None:
    """Show only warnings of ``distributed`` unless ``verbose``.

    ``distributed`` sets its loggers' levels from the Dask configuration
    when it is imported (INFO: cluster start/stop, every connection, a
    jupyter-server-proxy hint), and they propagate to the root handler set
    up here, so the level goes into that configuration (the environment, so
    worker processes inherit it too) and onto a logger that exists already.
    ``tornado`` and ``bokeh`` stay at the levels ``distributed`` gives them
    (critical, error): quieter than warning already."""
    import os
    level = "info" if verbose else "warning"
    os.environ["DASK_LOGGING__DISTRIBUTED"] = level
    logging.getLogger("distributed").setLevel(level.upper())
    if "dask" in sys.modules:  # its configuration has read the environment already
        import dask
        dask.config.set({"logging.distributed": level})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dja-sepp`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_libraries(args.verbose)
    from .io.cache import InputError
    from .io.store import OutputError
    from .settings import ConfigError
    try:
        return COMMANDS[args.command](args)
    except (InputError, ConfigError, OutputError, FileNotFoundError, PermissionError) as exc:
        print(f"dja-sepp: error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:
        print(f"dja-sepp: error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
