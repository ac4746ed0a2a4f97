"""SourceXtractor++ as a fitting engine (``fit.engine: sourcextractor++``).

Per tile, :class:`SeppEngine` writes the tile's cutouts to local scratch
(detection image, every band's science and inverse-variance weight, each
band's PSF on its own pixels), an assoc catalog of *our* detections and the
SE++ Python configuration generated from our YAML model
(:mod:`.sepp_config`); it runs ``sourcextractor++`` with SE++'s assoc
segmentation and grouping (no detection of its own: the sources are our
detections, grouped by ``PARENT_ID``, so ownership, merge and mosaics work
unchanged) and reads its catalog back into the built-in engine's columns and
units (:func:`~dja_sepp.fit.catalog.finalize`). Mosaics are rendered by our
renderer from those columns.

A watchdog stops an SE++ process whose log has not grown for
``fit.sepp.stall_timeout`` seconds while it used less than
``fit.sepp.stall_cpu`` of a core (a stall, as seen in segmentation); that, an
SE++ crash or a missing catalog raises :class:`SeppError`, which fails the
tile, so the pipeline retries it (on bigger workers when configured).
"""
from __future__ import annotations

import logging
import os
import resource
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..bands import pivot_wavelength
from ..models.definition import ModelDefinition, detection_context, load_model
from ..settings import default_config
from .base import BandCutout, Engine
from .catalog import bound_names, empty_results, finalize, render_catalog
from .flags import FitFlag
from .sepp_config import ASSOC_NAMES, SeppBand, output_names, python_config

__all__ = ["SeppEngine", "SeppError", "SeppUnavailable", "find_executable", "run_sepp",
           "parse_catalog", "read_catalog", "assoc_table", "STOP_REASONS"]

log = logging.getLogger(__name__)

#: the ``fit.sepp`` section of the shipped defaults (defaults live there only)
DEFAULTS: dict[str, Any] = default_config()["fit"]["sepp"]

#: levmar's stop codes (SE++'s ``fmf_stop_reason``) -> our ``STOP_REASON``
STOP_REASONS = {1: "small_gradient", 2: "small_step", 3: "max_iterations", 4: "singular_matrix",
                5: "no_reduction", 6: "small_error", 7: "invalid_values"}

# SE++ flag bits (SEFramework/Source/SourceFlags.h) -> ours
_SEPP_BLENDED, _SEPP_OUTSIDE, _SEPP_PARTIAL, _SEPP_INSUFFICIENT = 2, 32, 64, 128
_SEPP_ERROR, _SEPP_MEMORY, _SEPP_PROJECTION = 1024, 2048, 4096


class SeppError(RuntimeError):
    """SE++ stalled, crashed or wrote no catalog (the tile fails and is retried)."""


class SeppUnavailable(ValueError):
    """The ``sourcextractor++`` executable is not on PATH."""


def find_executable(options: Mapping[str, Any] | None = None) -> str:
    """Path of the SE++ executable (``fit.sepp.executable``, looked up on PATH).

    Raises
    ------
    SeppUnavailable
        Naming the executable and how to install it.
    """
    name = str({**DEFAULTS, **(options or {})}["executable"])
    path = shutil.which(name)
    if path is None:
        raise SeppUnavailable(
            f"fit.engine sourcextractor++ needs the executable {name!r}, which is not on PATH: install "
            f"it (conda install -c conda-forge -c astrorama sourcextractor, see examples/worker_image.md) on the "
            f"driver and every worker, set fit.sepp.executable to its path, or use fit.engine: builtin")
    return path


def _sepp_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULTS, **((options or {}).get("sepp") or {})}


class SeppEngine(Engine):
    """Fits with SourceXtractor++ (see the module docstring)."""

    name = "sourcextractor++"

    @staticmethod
    def check_available(options: Mapping[str, Any] | None = None) -> None:
        """Raise :class:`SeppUnavailable` unless SE++ can be run."""
        find_executable(_sepp_options(options))

    def fit(self, sources: Table, detection: BandCutout, bands: Sequence[BandCutout],
            model: str, options: Mapping[str, Any] | None = None) -> Table:
        from .engine import DEFAULTS as FIT_DEFAULTS, _groups_to_fit
        opts = {**FIT_DEFAULTS, **{k: v for k, v in (options or {}).items() if k in FIT_DEFAULTS}}
        sopts = _sepp_options(options)
        mdef = load_model(model)
        names = [b.band for b in bands]
        n = len(sources)
        in_core = np.asarray(sources["IN_CORE"], bool) if "IN_CORE" in sources.colnames \
            else np.ones(n, bool)
        rows = np.zeros(n, bool)
        for g in _groups_to_fit(sources, in_core, opts) if n else []:
            rows[g] = True
        if not rows.any():
            out = empty_results(n, mdef, names)
            out["FLAGS"][:] |= int(FitFlag.NOT_FITTED)
            return finalize(out, sources, detection, mdef, names)
        exe = find_executable(sopts)
        scratch = tempfile.mkdtemp(prefix="dja_sepp_", dir=sopts.get("scratch") or None)
        try:
            cmd = prepare_inputs(Path(scratch), sources, rows, detection, bands, mdef, sopts, exe)
            _, cpu = run_sepp(cmd, Path(scratch), sopts)
            table = read_catalog(Path(scratch) / "catalog.fits")
        finally:
            if sopts.get("keep_files"):
                log.info("SE++ files kept in %s", scratch)
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        out = parse_catalog(table, sources, rows, detection, mdef, names)
        out["FLAGS"][~rows] |= int(FitFlag.NOT_FITTED)
        result = finalize(out, sources, detection, mdef, names)
        result.meta["HELPER_CPU"] = cpu  # SE++'s own CPU seconds (not in this thread's)
        return result

    def render(self, catalog: Table, grid: BandCutout, model: str) -> np.ndarray:
        return render_catalog(catalog, grid, load_model(model))


# -- inputs -------------------------------------------------------------------

def assoc_table(sources: Table, rows: np.ndarray, pixscale: float, wcs=None) -> Table:
    """Assoc catalog of the sources to fit (columns in :func:`assoc_arguments`'
    order): sky position (from ``wcs``, the detection cutout's), the row index
    and the detection measurements of :data:`~dja_sepp.fit.sepp_config.ASSOC_NAMES`,
    footprint half sizes, group, and the 1-based detection pixel centre."""
    idx = np.flatnonzero(rows)
    cols: dict[str, list] = {k: [] for k in ("RA", "DEC", *[n.upper() for n in ASSOC_NAMES],
                                              "HALF_W", "HALF_H", "GROUP", "X", "Y")}
    for i in idx:
        row = sources[i]
        ctx = detection_context(row, pixscale)
        x, y = float(row["x"]), float(row["y"])
        cols["X"].append(x + 1.0)
        cols["Y"].append(y + 1.0)
        for name in ASSOC_NAMES:  # (flux floored: SE++ starts the band fluxes there, in exponential ranges)
            value = float(i) if name == "row" else ctx[name]
            cols[name.upper()].append(max(value, 1e-4) if name == "flux" else value)
        if {"XMIN", "XMAX", "YMIN", "YMAX"} <= set(sources.colnames):
            cols["HALF_W"].append(max(x - float(row["XMIN"]), float(row["XMAX"]) - x) + 1.0)
            cols["HALF_H"].append(max(y - float(row["YMIN"]), float(row["YMAX"]) - y) + 1.0)
        else:
            cols["HALF_W"].append(3.0 * ctx["a"])
            cols["HALF_H"].append(3.0 * ctx["a"])
        cols["GROUP"].append(int(row["PARENT_ID"]) if "PARENT_ID" in sources.colnames else int(i) + 1)
    if wcs is not None and len(idx):
        ra, dec = wcs.pixel_to_world_values(np.asarray(cols["X"]) - 1.0, np.asarray(cols["Y"]) - 1.0)
        cols["RA"], cols["DEC"] = list(np.atleast_1d(ra)), list(np.atleast_1d(dec))
    else:
        cols["RA"], cols["DEC"] = [np.nan] * len(idx), [np.nan] * len(idx)
    table = Table({k: np.asarray(v, dtype=np.int32 if k == "GROUP" else np.float64) for k, v in cols.items()})
    return table


def assoc_arguments(path: str) -> list[str]:
    """Command-line options making SE++ measure exactly the assoc sources
    (SE++ runs without a detection image: its assoc segmentation makes one
    source per catalog row, matched by sky position)."""
    n = len(ASSOC_NAMES)
    copy = ",".join(str(3 + k) for k in range(n))
    return ["--segmentation-algorithm", "ASSOC", "--grouping-algorithm", "ASSOC",
            "--assoc-catalog", path, "--assoc-coord-type", "WORLD", "--assoc-columns", "1,2",
            "--assoc-copy", copy, "--assoc-source-half-widths", str(3 + n),
            "--assoc-source-half-heights", str(4 + n), "--assoc-group-id", str(5 + n),
            "--assoc-filter", "MATCHED"]


def _write_image(path: Path, data: np.ndarray, cut: BandCutout) -> str:
    header = cut.wcs.to_header()
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(path, overwrite=True)
    return path.name


def _write_psf(path: Path, cut: BandCutout) -> str:
    """The band's PSF on its own pixels, summing to its enclosed-energy
    fraction (SE++ is told not to renormalise it)."""
    x = cut.origin[1] + cut.shape[1] / 2.0
    y = cut.origin[0] + cut.shape[0] / 2.0
    stamp = np.asarray(cut.psf.stamp(x, y, oversampling=1), dtype=np.float64)
    hdu = fits.PrimaryHDU(stamp.astype(np.float32))
    hdu.header["SAMPLING"] = (1.0, "PSF pixels per image pixel")
    hdu.writeto(path, overwrite=True)
    return path.name


def prepare_inputs(folder: Path, sources: Table, rows: np.ndarray, detection: BandCutout,
                   bands: Sequence[BandCutout], mdef: ModelDefinition, sopts: Mapping[str, Any],
                   exe: str) -> list[str]:
    """Write every SE++ input of one tile into ``folder``; returns the command."""
    _write_image(folder / "detection.fits", detection.sci, detection)
    _write_image(folder / "detection_wht.fits", detection.wht, detection)
    specs = []
    for cut in bands:
        b = cut.band
        wavelength = cut.wavelength
        if wavelength is None:
            try:
                wavelength = pivot_wavelength(b)
            except KeyError:
                wavelength = float("nan")
        specs.append(SeppBand(b, _write_image(folder / f"{b}_sci.fits", cut.sci, cut),
                              _write_image(folder / f"{b}_wht.fits", cut.wht, cut),
                              _write_psf(folder / f"{b}_psf.fits", cut), float(wavelength)))
    (folder / "config.py").write_text(python_config(mdef, specs, detection.pixel_scale, sopts))
    assoc_table(sources, rows, detection.pixel_scale, detection.wcs).write(folder / "assoc.fits",
                                                                          overwrite=True)
    return [exe, "--python-config-file", "config.py",
            "--output-catalog-filename", "catalog.fits", "--output-catalog-format", "FITS",
            "--output-properties", "SourceIDs,FlexibleModelFitting,AssocMode",
            *assoc_arguments("assoc.fits"),
            "--thread-count", str(int(sopts["threads"])),
            "--tile-memory-limit", str(int(sopts["tile_memory"])),
            "--tile-size", str(int(sopts["tile_size"])),
            "--model-fitting-iterations", str(int(sopts["cli_iterations"])),
            "--progress-min-interval", str(max(1, int(round(float(sopts["progress_interval"]))))),
            "--log-level", "INFO"]


# -- running ------------------------------------------------------------------

def _cpu_seconds(pgid: int) -> float:
    """CPU time of every process of a process group (SE++ and anything it
    started; reaped children included). Linux /proc; 0 elsewhere."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 14 and fields[2] == str(pgid):
            total += sum(float(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


def run_sepp(cmd: Sequence[str], folder: Path, sopts: Mapping[str, Any]) -> tuple[float, float]:
    """Run SE++ in ``folder`` under the progress watchdog.

    The command line is written to ``folder/command.txt`` and SE++'s output
    to ``folder/sepp.log``.

    Returns
    -------
    wall, cpu : float
        Its wall time and the CPU seconds it used (all threads), s.

    Raises
    ------
    SeppError
        When it stalls (log unchanged for ``stall_timeout`` s with less than
        ``stall_cpu`` of a core used; the process is killed), exits non-zero
        or writes no catalog; the message ends with the log's last lines.
    """
    log_path = folder / "sepp.log"
    stall_timeout = float(sopts["stall_timeout"])
    stall_cpu = float(sopts["stall_cpu"])
    (folder / "command.txt").write_text(shlex.join(str(c) for c in cmd) + "\n")
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(list(cmd), cwd=folder, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        size, since, cpu_since = -1, time.monotonic(), 0.0
        while proc.poll() is None:
            time.sleep(min(1.0, stall_timeout / 4))
            now, cur = time.monotonic(), log_path.stat().st_size
            cpu = _cpu_seconds(proc.pid)
            if cur != size:
                size, since, cpu_since = cur, now, cpu
            elif stall_timeout > 0 and now - since > stall_timeout \
                    and cpu - cpu_since < stall_cpu * (now - since):
                _kill(proc)
                raise SeppError(f"SE++ stalled: no progress for {now - since:.0f} s at "
                                f"{(cpu - cpu_since) / (now - since):.0%} CPU; killed{_tail(log_path)}")
    if proc.returncode != 0:
        raise SeppError(f"SE++ exited with status {proc.returncode}{_tail(log_path)}")
    if not (folder / "catalog.fits").exists():
        raise SeppError(f"SE++ wrote no catalog{_tail(log_path)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - start, cpu


def _kill(proc: subprocess.Popen) -> None:
    """Stop SE++ and anything it started (its own session)."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int = 8) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()[-n:]
    except OSError:
        return ""
    return (":\n  " + "\n  ".join(lines)) if lines else ""


# -- output -------------------------------------------------------------------

def read_catalog(path: Path) -> Table:
    """SE++'s FITS catalog (its ``seconds`` unit is not a FITS unit: not warned)."""
    import warnings
    from astropy.units import UnitsWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsWarning)
        return Table.read(path, hdu=1)


def _flags(sepp_flags: int) -> int:
    out = 0
    if sepp_flags & _SEPP_BLENDED:
        out |= FitFlag.BLENDED
    if sepp_flags & _SEPP_PARTIAL:
        out |= FitFlag.PARTIAL_FIT
    if sepp_flags & _SEPP_INSUFFICIENT:
        out |= FitFlag.INSUFFICIENT_DATA
    if sepp_flags & (_SEPP_ERROR | _SEPP_MEMORY | _SEPP_PROJECTION | _SEPP_OUTSIDE):
        out |= FitFlag.ERROR
    return int(out)


def _row_index(table: Table) -> np.ndarray:
    values = np.asarray(table["assoc_values"])
    return np.rint(values[:, 0] if values.ndim == 2 else values).astype(int)


def parse_catalog(table: Table, sources: Table, rows: np.ndarray, detection: BandCutout,
                  mdef: ModelDefinition, bands: Sequence[str]) -> dict[str, np.ndarray]:
    """SE++'s catalog -> the working columns of :func:`~dja_sepp.fit.catalog.finalize`.

    Rows are matched to ``sources`` by the row index SE++ copied from the
    assoc catalog. Positions become 0-based cutout pixels; radii stay in
    detection pixels (finalize converts); SE++'s flag bits are mapped to
    ours and ``AT_BOUND`` is set as the built-in engine does. A source that
    was sent but is missing from the catalog is flagged ``ERROR``.
    """
    out = empty_results(len(sources), mdef, bands)
    names = output_names(mdef, bands)
    sent = np.flatnonzero(rows)
    index = _row_index(table) if len(table) else np.zeros(0, int)
    got = np.zeros(len(sources), bool)
    for k, i in enumerate(index):
        if i < 0 or i >= len(sources):
            continue
        got[i] = True
        rec = table[k]
        for col, key in names.items():
            value, err = float(rec[col]), float(rec[col + "_err"])
            if key in ("x", "y"):
                value -= 1.0
            out[key][i], out[key + "_err"][i] = value, err
        out["CHI2_REDUCED"][i] = float(rec["fmf_reduced_chi_2"])
        out["N_ITER"][i] = int(rec["fmf_iterations"])
        code = int(rec["fmf_stop_reason"])
        out["STOP_REASON"][i] = STOP_REASONS.get(code, f"sepp_{code}")
        out["FIT_DURATION"][i] = float(rec["fmf_duration"])
        out["N_BANDS"][i] = len(bands)
        flags = _flags(int(rec["fmf_flags"]))
        bounds = _at_bound(mdef, sources[i], detection.pixel_scale, out, i)
        if bounds:
            flags |= int(FitFlag.AT_BOUND)
            out["BOUND_PARAMS"][i] = ",".join(bounds)[:64]
        out["FLAGS"][i] |= flags
    missing = np.setdiff1d(sent, np.flatnonzero(got))
    out["FLAGS"][missing] |= int(FitFlag.ERROR)
    out["STOP_REASON"][missing] = "sepp_missing"
    return out


def _at_bound(mdef: ModelDefinition, row, pixscale: float, out, i: int) -> list[str]:
    """Shape parameters (not the centre) at an edge of their range, as
    ``name=min`` / ``name=max`` (the built-in engine's ``BOUND_PARAMS``)."""
    ctx = detection_context(row, pixscale)
    ctx["x"], ctx["y"] = ctx["x"] + 1.0, ctx["y"] + 1.0
    _, ranges = mdef.initial(ctx)
    names, sides = [], []
    for p, rng in zip(mdef.parameters, ranges):
        value = out[f"p_{p.name}"][i] if p.name not in ("x", "y") else np.nan
        names.append(p.name)
        sides.append(rng.bound_side(float(value)) if np.isfinite(value) else 0)
    return bound_names(names, sides)
