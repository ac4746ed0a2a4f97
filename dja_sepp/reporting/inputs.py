"""What a report reads: the run directory and the DJA catalogs.

A run directory gives its resolved configuration and ``run:`` record
(``run.yaml``), its ``summary.json``, one merged catalog per model and the
per-tile states. A DJA photometric catalog (``{field}-fix_phot_apcorr.fits``)
and its photo-z table (``zout``) are read from local paths or fsspec URLs
and checked before anything is written: a file that is missing, unreadable,
lacks a required column or has no source in the field stops the report with
an :class:`~dja_sepp.io.cache.InputError` naming the file.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field as dc_field
from typing import Any, Mapping

import numpy as np
from astropy.table import Table

from ..io.cache import InputError

__all__ = ["RunInfo", "read_run", "read_dja", "PHOT_COLUMNS", "ZOUT_COLUMNS", "dja_mag",
           "DJA_FLUX_ZP"]

#: Columns a DJA photometric catalog must have (``{f}_tot_1`` per band optional).
PHOT_COLUMNS = ("id", "ra", "dec", "flux_auto", "fluxerr_auto")
#: Columns a DJA photo-z table must have.
ZOUT_COLUMNS = ("z_phot", "mass", "restU", "restV", "restJ")
#: AB zero point of DJA catalog fluxes (micro-Jansky).
DJA_FLUX_ZP = 23.9


@dataclass
class RunInfo:
    """A run directory as the report sees it.

    Attributes
    ----------
    store : RunStore
        The run directory.
    config : dict
        The resolved configuration (``run.yaml`` with today's defaults for
        keys it predates, e.g. ``report:``).
    record : dict
        ``run.yaml``'s ``run:`` record (images, field, bands, PSF files).
    summary : dict
        ``summary.json`` (empty when absent).
    catalogs : dict
        model name -> merged catalog (astropy Table), the primary model first.
    tiles : dict
        tile id -> ``status.json`` of the tile.
    """

    store: Any
    config: dict
    record: dict
    summary: dict
    catalogs: dict[str, Table]
    tiles: dict[str, dict] = dc_field(default_factory=dict)

    @property
    def field(self) -> str:
        """Field name of the run (``gds``, ``primer-uds-north``...)."""
        return str(self.record.get("field") or "field")

    @property
    def bands(self) -> list[str]:
        """Bands of the run, bluest first."""
        return list(self.record.get("bands") or [])

    @property
    def primary(self) -> str:
        """The primary model (the one of ``catalog.fits``)."""
        return next(iter(self.catalogs))


def read_run(run_dir: str, storage_options: dict | None = None,
             config: str | Mapping | None = None, **overrides: Any) -> RunInfo:
    """Read a run directory for the report.

    Parameters
    ----------
    run_dir : str
        Run directory (path or URL) holding ``run.yaml``.
    storage_options : dict, optional
        fsspec options of a remote run directory.
    config : str or mapping, optional
        YAML file or mapping whose settings (e.g. ``report:``) override the
        run's own.
    **overrides
        ``section__key=value`` settings (``report__match_radius=0.5``).

    Raises
    ------
    FileNotFoundError
        ``run_dir`` has no ``run.yaml``.
    InputError
        A catalog named by the run is missing or unreadable.
    """
    import yaml

    from ..io.store import RunStore
    from ..pipeline.tile_task import catalog_name
    from ..settings import load_config
    store = RunStore(run_dir, storage_options)
    if not store.exists("run.yaml"):
        raise FileNotFoundError(f"{run_dir}: no run.yaml (not a dja-sepp run directory)")
    raw = yaml.safe_load(store.read_text("run.yaml")) or {}
    record = raw.get("run") or {}
    settings = {k: v for k, v in raw.items() if k != "run"}
    if config is not None:  # its report: section replaces the run's
        settings["report"] = dict(load_config(config)["report"])
    cfg = load_config(settings, **overrides)
    summary = store.read_json("summary.json") if store.exists("summary.json") else {}
    catalogs = {}
    for i, model in enumerate(cfg["fit"]["models"]):
        rel = f"{catalog_name(model, i == 0)}.fits"
        if not store.exists(rel):
            if i == 0:
                raise InputError(f"{store.url(rel)}: the run has no merged catalog (run "
                                 f"dja-sepp merge {run_dir} first)")
            continue
        try:
            catalogs[model] = store.read_table(rel)
        except Exception as exc:
            raise InputError(f"{store.url(rel)}: unreadable catalog ({exc})") from exc
    tiles = {}
    for tile_id in store.listdir("tiles"):
        rel = f"tiles/{tile_id}/status.json"
        if store.exists(rel):
            tiles[tile_id] = store.read_json(rel)
    return RunInfo(store, cfg, record, summary, catalogs, tiles)


def _read_table(path: str, storage_options: dict | None, what: str) -> Table:
    import fsspec
    try:
        with fsspec.open(str(path), "rb", **(storage_options or {})) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except Exception as exc:
        raise InputError(f"{path}: {what} could not be read ({exc})") from exc
    if data[:2] == b"\x1f\x8b":   # .fits.gz (DJA ships catalogs compressed too)
        import gzip
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: {what} is a damaged gzip file ({exc})") from exc
    fmt = "parquet" if str(path).endswith(".parquet") else None
    try:
        if fmt == "parquet":
            import tempfile
            with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
                tmp.write(data)
                tmp.flush()
                return Table.read(tmp.name, format="parquet")
        if str(path).endswith((".csv", ".ecsv")):
            return Table.read(io.BytesIO(data), format="ascii.ecsv" if str(path).endswith(
                ".ecsv") else "ascii.csv")
        return Table.read(io.BytesIO(data), format="fits")
    except Exception as exc:
        raise InputError(f"{path}: {what} is not a readable FITS table ({exc})") from exc


def _require(table: Table, columns, path: str, what: str) -> None:
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        shown = ", ".join(table.colnames[:8]) + (", ..." if len(table.colnames) > 8 else "")
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)} (it has {shown})")


def read_dja(phot: str, zout: str | None = None, storage_options: dict | None = None,
             footprint: tuple[np.ndarray, np.ndarray] | None = None,
             radius: float = 0.3) -> Table:
    """The DJA photometric catalog, with the photo-z columns joined when given.

    Parameters
    ----------
    phot : str
        ``{field}-fix_phot_apcorr.fits`` (path or URL): ``id, ra, dec,
        flux_auto, fluxerr_auto`` required; ``{f}_tot_1`` (micro-Jansky),
        ``kron_radius``, ``z_spec`` used when present.
    zout : str, optional
        The photo-z table (``z_phot, mass, restU, restV, restJ``), joined on
        ``id`` when it has one, else row by row (same length required).
    storage_options : dict, optional
        fsspec options for URLs.
    footprint : (ra, dec) arrays, optional
        Positions of the run's sources (deg): the catalog must have at least
        one source within ``radius`` arcsec of one of them.
    radius : float
        Arcsec, the overlap test's radius.

    Returns
    -------
    astropy.table.Table
        One row per DJA source, in the catalog's order.

    Raises
    ------
    InputError
        Naming the file: not found, unreadable, missing columns, ``zout``
        rows that do not correspond, or no source in the run's field.
    """
    table = _read_table(phot, storage_options, "DJA photometric catalog")
    _require(table, PHOT_COLUMNS, phot, "DJA photometric catalog")
    if len(table) == 0:
        raise InputError(f"{phot}: DJA photometric catalog has no rows")
    table = Table(table, masked=False, copy=True)
    table.meta = {k: v for k, v in table.meta.items() if k in ("FIELD", "VERSION")}
    if zout is not None:
        z = _read_table(zout, storage_options, "DJA photo-z table")
        _require(z, ZOUT_COLUMNS, zout, "DJA photo-z table")
        keep = [c for c in z.colnames if c != "id" and c not in table.colnames
                and len(z[c].shape) <= 1]
        if "id" in z.colnames:
            index = {int(i): n for n, i in enumerate(np.asarray(z["id"]))}
            rows = np.array([index.get(int(i), -1) for i in np.asarray(table["id"])])
            if not (rows >= 0).any():
                raise InputError(f"{zout}: DJA photo-z table shares no id with {phot}")
        elif len(z) == len(table):
            rows = np.arange(len(table))
        else:
            raise InputError(f"{zout}: DJA photo-z table has {len(z)} rows and no id column; "
                             f"{phot} has {len(table)}")
        for c in keep:
            col = np.asarray(z[c].filled(np.nan) if hasattr(z[c], "filled") and z[c].dtype.kind == "f"
                             else z[c])
            if col.dtype.kind not in "fiub":
                continue
            out = np.full(len(table), np.nan)
            ok = rows >= 0
            out[ok] = col[rows[ok]]
            table[c] = out
    for c in table.colnames:  # masked floats as NaN (FITS null values)
        if hasattr(table[c], "filled") and table[c].dtype.kind == "f":
            table[c] = table[c].filled(np.nan)
    if footprint is not None and len(footprint[0]):
        _check_overlap(table, footprint, radius, phot)
    return table


def _check_overlap(table: Table, footprint, radius: float, path: str) -> None:
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    ours = SkyCoord(np.asarray(footprint[0]) * u.deg, np.asarray(footprint[1]) * u.deg)
    ra, dec = np.asarray(table["ra"], float), np.asarray(table["dec"], float)
    good = np.isfinite(ra) & np.isfinite(dec)
    if good.any():
        theirs = SkyCoord(ra[good] * u.deg, dec[good] * u.deg)
        _, sep, _ = ours.match_to_catalog_sky(theirs)
        if (sep.arcsec <= radius).any():
            return
        nearest = float(np.min(sep.arcsec))
    else:
        nearest = float("inf")
    raise InputError(f"{path}: no DJA source within {radius:g}\" of the run's sources (nearest "
                     f"{nearest:.1f}\"): is it the catalog of another field?")


def dja_mag(table: Table, band: str) -> np.ndarray:
    """AB magnitude of a DJA total flux ``{band}_tot_1`` (micro-Jansky); NaN
    where the flux is not positive or the column is absent."""
    col = f"{band.lower()}_tot_1"
    if col not in table.colnames:
        return np.full(len(table), np.nan)
    flux = np.asarray(table[col], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, DJA_FLUX_ZP - 2.5 * np.log10(flux), np.nan)
