"""One-to-one sky matching and the DJA-length morpho-phot tables.

A nearest-neighbour match (``match_to_catalog_sky``) lets two sources of one
catalog claim the same source of the other, so a DJA row can appear twice and
another lose its counterpart. :func:`match_one_to_one` instead takes every
pair within the radius, shortest separation first, and accepts a pair only
when neither side is taken yet: no source is ever claimed twice, and every
accepted pair is the mutual nearest neighbour among the sources left.
"""
from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import Column, Table

from .flags import float_column

__all__ = ["Match", "match_one_to_one", "aligned", "match_model_catalog", "position_columns"]


@dataclass
class Match:
    """Pairs of a one-to-one match.

    Attributes
    ----------
    left, right : ndarray of int
        Row indices of each pair in the first and second catalog.
    sep : ndarray of float
        Separation of each pair (arcsec).
    n_left, n_right : int
        Rows of each catalog.
    n_candidates : int
        Pairs within the radius before the one-to-one choice.
    """

    left: np.ndarray
    right: np.ndarray
    sep: np.ndarray
    n_left: int
    n_right: int
    n_candidates: int

    @property
    def n(self) -> int:
        """Number of matched pairs."""
        return len(self.left)

    def index_of_right(self) -> np.ndarray:
        """For each row of the second catalog, its partner in the first (-1: none)."""
        out = np.full(self.n_right, -1, dtype=np.int64)
        out[self.right] = self.left
        return out


def match_one_to_one(ra1, dec1, ra2, dec2, radius: float) -> Match:
    """Match two position lists one-to-one within ``radius`` arcsec.

    Parameters
    ----------
    ra1, dec1, ra2, dec2 : array_like
        Positions in degrees; non-finite positions never match.
    radius : float
        Largest separation of a pair (arcsec).

    Returns
    -------
    Match
        Pairs chosen shortest first (ties broken by row order, so the
        result is deterministic); each row of either list is in at most one.
    """
    ra1, dec1, ra2, dec2 = (np.asarray(a, dtype=float) for a in (ra1, dec1, ra2, dec2))
    ok1 = np.flatnonzero(np.isfinite(ra1) & np.isfinite(dec1))
    ok2 = np.flatnonzero(np.isfinite(ra2) & np.isfinite(dec2))
    empty = np.array([], dtype=np.int64)
    if not len(ok1) or not len(ok2):
        return Match(empty, empty, np.array([]), len(ra1), len(ra2), 0)
    c1 = SkyCoord(ra1[ok1] * u.deg, dec1[ok1] * u.deg)
    c2 = SkyCoord(ra2[ok2] * u.deg, dec2[ok2] * u.deg)
    i1, i2, sep, _ = search_around_sky(c1, c2, radius * u.arcsec)
    left, right, sep = ok1[i1], ok2[i2], sep.to_value(u.arcsec)
    order = np.lexsort((right, left, sep))
    used1 = np.zeros(len(ra1), bool)
    used2 = np.zeros(len(ra2), bool)
    keep = []
    for k in order:
        a, b = left[k], right[k]
        if not used1[a] and not used2[b]:
            used1[a] = used2[b] = True
            keep.append(k)
    keep = np.asarray(keep, dtype=np.int64)
    pick = np.argsort(left[keep], kind="stable") if len(keep) else keep
    keep = keep[pick]
    return Match(left[keep].astype(np.int64), right[keep].astype(np.int64), sep[keep],
                 len(ra1), len(ra2), len(order))


def position_columns(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Sky position of each row of one of our catalogs: the detection
    centroid (``RA``/``DEC``, measured on the detection image as DJA's
    positions are, and the same for every model), else the fitted centre."""
    ra, dec = float_column(table, "RA"), float_column(table, "DEC")
    if "RA_MODEL" in table.colnames and "DEC_MODEL" in table.colnames:
        rm, dm = float_column(table, "RA_MODEL"), float_column(table, "DEC_MODEL")
        use = ~(np.isfinite(ra) & np.isfinite(dec))
        ra, dec = np.where(use, rm, ra), np.where(use, dm, dec)
    return ra, dec


def aligned(table: Table, index: np.ndarray) -> Table:
    """``table``'s rows placed at the rows of another catalog.

    Parameters
    ----------
    table : Table
        Source rows (one of our catalogs).
    index : ndarray of int
        For each output row, the row of ``table`` it takes (-1: none).

    Returns
    -------
    Table
        ``len(index)`` rows; rows without a partner are NaN in every number
        column (integer columns become floats for that), empty in strings
        and false in booleans. Units and descriptions are kept.
    """
    out = Table()
    has = index >= 0
    src = np.where(has, index, 0)
    for name in table.colnames:
        col = table[name]
        if len(col.shape) > 1:
            continue
        values = col.filled(np.nan if col.dtype.kind == "f" else 0) if hasattr(col, "filled") \
            else np.asarray(col)
        values = np.asarray(values)
        kind = values.dtype.kind
        if kind in "fiu":
            data = np.full(len(index), np.nan)
            if len(table):
                data[has] = values[src[has]].astype(float)
        elif kind == "b":
            data = np.zeros(len(index), bool)
            if len(table):
                data[has] = values[src[has]]
        else:
            values = values.astype(str)
            data = np.full(len(index), "", dtype=values.dtype if values.size else "U1")
            if len(table):
                data[has] = values[src[has]]
        out[name] = Column(data, unit=getattr(col, "unit", None),
                           description=getattr(col, "description", None))
    return out


def match_model_catalog(base_ra, base_dec, catalog: Table, radius: float) -> tuple[Match, Table]:
    """One of our catalogs matched one-to-one to a base catalog and aligned to it.

    Parameters
    ----------
    base_ra, base_dec : array_like
        Base catalog positions (DJA, or our primary catalog), degrees.
    catalog : Table
        A merged catalog of the run.
    radius : float
        Match radius (arcsec).

    Returns
    -------
    (Match, Table)
        The match (left = base rows, right = catalog rows) and the catalog
        aligned to the base (one row per base row, ``MATCH_SEP`` in arcsec,
        NaN where unmatched).
    """
    ra, dec = position_columns(catalog)
    match = match_one_to_one(base_ra, base_dec, ra, dec, radius)
    index = np.full(len(np.asarray(base_ra)), -1, dtype=np.int64)
    index[match.left] = match.right
    table = aligned(catalog, index)
    sep = np.full(len(index), np.nan)
    sep[match.left] = match.sep
    table["MATCH_SEP"] = Column(sep, unit=u.arcsec,
                                description="separation to the base catalog's source")
    return match, table
