"""Quality flag of each morpho-phot row, as SourceXtractor++ users of DJA define it.

=====  ==========================================================================
flag   meaning
=====  ==========================================================================
0      not fitted: no row of ours for this source (unmatched)
1      artefact: the fit ended on a known artefact (below) or our ``FLAGS`` say so
2      good
3      faint / low S/N: ``flux_auto < snr_min x fluxerr_auto``, or
       ``MAG_MODEL_F277W`` fainter than the field's limit
=====  ==========================================================================

Precedence: 0, then 3 (a faint source is flagged faint whatever its fit),
then 1, else 2. Artefacts:

- single Sérsic models (a ``SERSIC`` column): good only when
  ``AXRATIO < 0.99``, ``|n - 0.36| > 1e-4`` and ``0.301 < n < 8.35``;
- bulge + disk models (a ``DISK_AXRATIO`` column): good only when
  ``0.1001 < DISK_AXRATIO < 0.9999`` and ``|DISK_AXRATIO - 0.5| > 1e-5``;
- any model: a ``FLAGS`` bit of ``report.artefact_flags`` set (default
  ``ERROR``, ``AT_BOUND``, ``DEGENERATE``, ``BULGE_LARGER`` (swapped
  components), ``INSUFFICIENT_DATA``). Rows without a shape (``MODEL =
  point``, a failed fit) fail the shape tests above and are 1 as well: they
  have no morphology.

Field limits (AB, ``report.field_limits``): CEERS 29.16, GDN/GDS 29.93, UDS
28.51, COSMOS 28.62; a field matches its own name or a key contained in it
(``primer-uds-north`` -> ``uds``); ``report.mag_limit`` sets another field's.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from astropy.table import Table

__all__ = ["NOT_FITTED", "ARTEFACT", "GOOD", "FAINT", "model_kind", "artefact_mask",
           "faint_mask", "quality_flags", "field_limit", "artefact_bits", "FLAG_NAMES"]

NOT_FITTED, ARTEFACT, GOOD, FAINT = 0, 1, 2, 3
FLAG_NAMES = {NOT_FITTED: "not fitted", ARTEFACT: "artefact", GOOD: "good", FAINT: "faint / low S/N"}


def float_column(table: Table, name: str) -> np.ndarray:
    """``table[name]`` as floats, masked entries NaN; all NaN when the
    column is absent (a catalog without DJA columns, a model without B/T)."""
    if name not in table.colnames:
        return np.full(len(table), np.nan)
    col = table[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(col, dtype=float)


def model_kind(table: Table) -> str:
    """``sersic`` (a ``SERSIC`` column), ``bd`` (``DISK_AXRATIO``) or ``other``."""
    if "SERSIC" in table.colnames:
        return "sersic"
    if "DISK_AXRATIO" in table.colnames:
        return "bd"
    return "other"


def artefact_bits(names) -> int:
    """``FLAGS`` bit mask of the named :class:`~dja_sepp.fit.flags.FitFlag` bits.

    Raises
    ------
    ConfigError
        An unknown name (naming ``report.artefact_flags`` and the known ones).
    """
    from ..fit.flags import FitFlag
    from ..settings import ConfigError
    mask = 0
    for name in names or ():
        try:
            mask |= int(FitFlag[str(name).upper()])
        except KeyError:
            raise ConfigError(f"report.artefact_flags: unknown FLAGS bit {name!r}; known: "
                              f"{', '.join(f.name for f in FitFlag)}") from None
    return mask


def artefact_mask(table: Table, bits: int) -> np.ndarray:
    """True where a row of one of our catalogs is an artefact (flag 1)."""
    kind = model_kind(table)
    with np.errstate(invalid="ignore"):
        if kind == "sersic":
            q, n = float_column(table, "AXRATIO"), float_column(table, "SERSIC")
            good = (q < 0.99) & (np.abs(n - 0.36) > 1e-4) & (n > 0.301) & (n < 8.35)
        elif kind == "bd":
            q = float_column(table, "DISK_AXRATIO")
            good = (q > 0.1001) & (q < 0.9999) & (np.abs(q - 0.5) > 1e-5)
        else:
            good = np.ones(len(table), bool)
    flags = float_column(table, "FLAGS")
    flagged = np.zeros(len(table), bool)
    finite = np.isfinite(flags)
    flagged[finite] = (flags[finite].astype(np.int64) & bits) != 0
    return ~good | flagged


def faint_mask(flux_auto, fluxerr_auto, mag, snr_min: float, limit: float | None) -> np.ndarray:
    """True where a source is faint: ``flux_auto < snr_min x fluxerr_auto`` or
    ``mag`` (the limit band's model magnitude) fainter than ``limit``."""
    flux = np.asarray(flux_auto, float)
    err = np.asarray(fluxerr_auto, float)
    with np.errstate(invalid="ignore"):
        faint = flux < snr_min * err
        if limit is not None:
            faint |= np.asarray(mag, float) > limit
    return faint


def field_limit(field: str, limits: Mapping[str, float], override: float | None = None
                ) -> tuple[float | None, str | None]:
    """The F277W limit of ``field`` and the key that gave it.

    ``override`` (``report.mag_limit``) wins; then an exact key, then the
    longest key contained in the field name; ``(None, None)`` otherwise.
    """
    if override is not None:
        return float(override), "report.mag_limit"
    name = (field or "").lower()
    keys = {str(k).lower(): float(v) for k, v in (limits or {}).items()}
    if name in keys:
        return keys[name], name
    inside = sorted((k for k in keys if k and k in name), key=len, reverse=True)
    if inside:
        return keys[inside[0]], inside[0]
    return None, None


def quality_flags(matched: np.ndarray, artefact: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """Flag 0-3 of each row from its three conditions (see the module doc)."""
    flag = np.where(artefact, ARTEFACT, GOOD)
    flag = np.where(faint, FAINT, flag)
    return np.where(matched, flag, NOT_FITTED).astype(np.int16)
