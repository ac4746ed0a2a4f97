"""Merge tile catalogs into one catalog with one row per source.

Ownership is exact: a row is kept only by the tile whose core holds its
detection centroid (cores partition the field). A source whose centroid
moved across a core border between two tiles' detections can still appear
twice, so a safety-net sky match between rows of neighbouring tiles keeps the
copy farthest inside its own core and counts what it removed. (A
one-directional nearest match, as used to be done, keeps such duplicates.)

:func:`describe_catalog` makes the merged catalog self-describing: flux
units, zero point, the software and configuration that made it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import Table, vstack

from .tiling import TileGrid

__all__ = ["merge_catalogs", "MergeStats", "describe_catalog", "TILE_KEYWORDS"]

#: Header keywords of a tile catalog that describe one tile only: wrong for
#: the merged catalog (the field's values are in the run's summary.json).
TILE_KEYWORDS = ("TILE_ID", "DROPPED", "NOISECOR")


@dataclass
class MergeStats:
    """What the merge did.

    Attributes
    ----------
    n_input : int
        Rows read from all tiles.
    n_outside_core : int
        Rows dropped because their centroid is outside their tile's core.
    n_duplicates : int
        Rows removed by the safety-net sky match.
    n_output : int
        Rows in the merged catalog.
    removed : list of tuple
        ``(tile_id, X_IMAGE, Y_IMAGE)`` of each removed duplicate.
    """

    n_input: int = 0
    n_outside_core: int = 0
    n_duplicates: int = 0
    n_output: int = 0
    removed: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"n_input": self.n_input, "n_outside_core": self.n_outside_core,
                "n_duplicates": self.n_duplicates, "n_output": self.n_output}


def merge_catalogs(tables: Sequence[Table], grid: TileGrid,
                   match_radius: float = 0.1) -> tuple[Table, MergeStats]:
    """Merge per-tile catalogs.

    Parameters
    ----------
    tables : sequence of Table
        Tile catalogs with ``TILE_ID``, ``X_IMAGE``, ``Y_IMAGE`` (1-based
        detection pixels), ``RA``, ``DEC``.
    grid : TileGrid
        The tiling that produced them.
    match_radius : float
        Safety-net match radius in arcsec (0 disables it).

    Returns
    -------
    Table, MergeStats
        The merged catalog sorted by tile then position, with unique ``ID``
        (1..N, stable for unchanged inputs), and what the merge did.
    """
    stats = MergeStats()
    tables = [t for t in tables if len(t)]
    if not tables:
        return Table(), stats
    cat = vstack(list(tables), join_type="outer", metadata_conflicts="silent")
    for key in TILE_KEYWORDS:  # vstack kept the first tile's values
        cat.meta.pop(key, None)
    stats.n_input = len(cat)
    x = np.asarray(cat["X_IMAGE"], dtype=float) - 1.0
    y = np.asarray(cat["Y_IMAGE"], dtype=float) - 1.0
    tiles = grid.by_id()
    tile_ids = np.asarray(cat["TILE_ID"]).astype(str)
    depth = np.full(len(cat), -np.inf)
    inside = np.zeros(len(cat), dtype=bool)
    for tid in np.unique(tile_ids):
        rows = tile_ids == tid
        depth[rows] = tiles[tid].distance_to_core_edge(x[rows], y[rows])
        inside[rows] = tiles[tid].in_core(x[rows], y[rows])
    stats.n_outside_core = int(np.count_nonzero(~inside))
    cat, depth = cat[inside], depth[inside]
    if match_radius > 0 and len(cat) > 1:
        drop = _cross_tile_duplicates(cat, depth, match_radius)
        stats.n_duplicates = int(drop.sum())
        stats.removed = [(str(r["TILE_ID"]), float(r["X_IMAGE"]), float(r["Y_IMAGE"]))
                         for r in cat[drop]]
        cat = cat[~drop]
    order = np.lexsort((np.asarray(cat["X_IMAGE"]), np.asarray(cat["Y_IMAGE"]),
                        np.asarray(cat["TILE_ID"]).astype(str)))
    cat = cat[order]
    if "ID" in cat.colnames:
        cat.rename_column("ID", "ID_TILE")
    cat.add_column(np.arange(1, len(cat) + 1, dtype=np.int64), name="ID", index=0)
    stats.n_output = len(cat)
    cat.meta["N_DUPL"] = (stats.n_duplicates, "rows removed by the safety-net sky match")
    cat.meta["MATCHRAD"] = (match_radius, "arcsec, safety-net match radius")
    return cat, stats


def _cross_tile_duplicates(cat: Table, depth: np.ndarray, radius: float) -> np.ndarray:
    """Mask of rows to drop: of each cross-tile pair closer than ``radius``,
    the copy nearer its core edge."""
    coords = SkyCoord(np.asarray(cat["RA"], float) * u.deg, np.asarray(cat["DEC"], float) * u.deg)
    i, j, _, _ = search_around_sky(coords, coords, radius * u.arcsec)
    tile_ids = np.asarray(cat["TILE_ID"]).astype(str)
    pairs = (i < j) & (tile_ids[i] != tile_ids[j])
    drop = np.zeros(len(cat), dtype=bool)
    # Deepest copies first, so a chain of copies keeps exactly the deepest one.
    for a, b in sorted(zip(i[pairs], j[pairs]), key=lambda p: -max(depth[p[0]], depth[p[1]])):
        if drop[a] or drop[b]:
            continue
        drop[b if depth[a] >= depth[b] else a] = True
    return drop


def describe_catalog(cat: Table, bands: Sequence[str], units: dict[str, str | None],
                     zeropoints: dict[str, float], info: dict[str, str]) -> Table:
    """Units and provenance of a merged catalog, in place.

    Parameters
    ----------
    cat : Table
        Merged catalog.
    bands : sequence of str
        Bands of the run; ``FLUX*_{band}`` and ``FLUX*_{band}_err`` columns
        get that band's unit, the other ``FLUX*`` columns (detection
        photometry: ``FLUX_ISO``, ``FLUXERR_AUTO``...) the detection image's.
    units : dict
        band (and ``"DETECTION"``) -> pixel unit (``BUNIT``), or None when
        the image header has none.
    zeropoints : dict
        band -> AB zero point of the pixel unit (the ``MAG_*`` columns').
    info : dict
        Header keyword -> ``(value, comment)``: software version, date,
        engine, model, configuration hash.

    Returns
    -------
    Table
        ``cat``, with ``BUNIT`` and ``ZP`` / ``MAGZERO`` in its header when
        all bands share them (per-band values otherwise in ``BUNITn`` /
        ``ZPn`` with ``BANDn``).
    """
    import astropy.units as u
    parsed = {b: u.Unit(v, parse_strict="silent") if v else None for b, v in units.items()}
    for col in cat.colnames:
        if not col.startswith("FLUX") or cat[col].unit is not None:
            continue   # FLUX_RADIUS has its own unit (pixels)
        band = next((b for b in bands if col.endswith((f"_{b}", f"_{b}_err"))), "DETECTION")
        unit = parsed.get(band)
        if unit is not None and not isinstance(unit, u.UnrecognizedUnit):
            cat[col].unit = unit   # an unknown unit string stays in the header only
    band_units = {units.get(b) for b in bands}
    zps = {round(float(zeropoints[b]), 6) for b in bands if b in zeropoints}
    if len(band_units) == 1 and None not in band_units:
        cat.meta["BUNIT"] = (band_units.pop(), "unit of the FLUX_* columns")
    if len(zps) == 1:
        zp = zps.pop()
        cat.meta["ZP"] = (zp, "AB: MAG = -2.5 log10(FLUX) + ZP")
        cat.meta["MAGZERO"] = (zp, "AB zero point of the flux unit")
    if len(set(units.get(b) for b in bands)) > 1 or len({zeropoints.get(b) for b in bands}) > 1:
        for i, b in enumerate(bands, 1):
            cat.meta[f"BAND{i}"] = b
            cat.meta[f"BUNIT{i}"] = (units.get(b) or "", f"unit of the {b} fluxes")
            cat.meta[f"ZP{i}"] = (zeropoints.get(b, float("nan")), f"AB zero point of {b}")
    cat.meta.update(info)
    return cat
