"""The morpho-phot table: our catalogs matched to DJA (or to each other), flagged.

``{field}_morpho-phot.fits`` has the HDUs

- 0: primary header (field, run, match radius, limit band and limit, S/N cut);
- 1: ``DJA``, the DJA photometric catalog with the photo-z columns joined
  (or ``DETECTION``, the detection columns of our primary catalog, when no
  DJA catalog is given);
- 2...: one per model, named after it, with exactly one row per row of HDU 1:
  our catalog's columns at the matched row, ``MATCH_SEP`` (arcsec) and
  ``flag`` (0-3, :mod:`.flags`); unmatched rows are NaN with ``flag`` 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Mapping

import numpy as np
from astropy.table import Column, Table

from .crossmatch import (Match, aligned, match_model_catalog, match_one_to_one,
                         position_columns)
from .flags import (FLAG_NAMES, artefact_bits, artefact_mask, faint_mask, field_limit, float_column,
                    quality_flags)
from .inputs import RunInfo

__all__ = ["MorphoPhot", "build_morpho_phot", "write_morpho_phot", "DETECTION_COLUMNS"]

#: Columns of our catalogs that describe the detection, not a model fit.
DETECTION_COLUMNS = ("ID", "TILE_ID", "X_IMAGE", "Y_IMAGE", "RA", "DEC", "FLUX_ISO",
                     "FLUXERR_ISO", "FLUX_AUTO", "FLUXERR_AUTO", "MAG_AUTO", "KRON_RADIUS",
                     "FLUX_RADIUS", "A_IMAGE", "B_IMAGE", "THETA_IMAGE", "MU_MAX", "NPIX", "SNR",
                     "FLAGS_DET", "SEGMENT_ID", "PARENT_ID", "PSF_STAR")


@dataclass
class MorphoPhot:
    """The cross-matched, flagged tables of a run.

    Attributes
    ----------
    base : Table
        HDU 1: DJA phot + zout, or our detection columns.
    base_kind : str
        ``dja`` or ``ours``.
    models : dict
        model -> Table aligned to ``base`` (``MATCH_SEP``, ``flag``).
    matches : dict
        model -> :class:`~.crossmatch.Match` (left = base rows).
    between : dict
        secondary model -> one-to-one match of its catalog to the primary's.
    limit, limit_key : float or None, str or None
        The limit band's magnitude limit and where it came from.
    settings : dict
        The ``report:`` settings used.
    """

    base: Table
    base_kind: str
    models: dict[str, Table]
    matches: dict[str, Match]
    between: dict[str, Match] = dc_field(default_factory=dict)
    limit: float | None = None
    limit_key: str | None = None
    settings: dict = dc_field(default_factory=dict)

    def flag_counts(self, model: str) -> dict[int, int]:
        """Rows of ``model``'s table per flag value (0-3)."""
        flags = np.asarray(self.models[model]["flag"])
        return {f: int((flags == f).sum()) for f in FLAG_NAMES}


def build_morpho_phot(run: RunInfo, dja: Table | None,
                      settings: Mapping[str, Any] | None = None) -> MorphoPhot:
    """Match every model's catalog one-to-one to DJA (or to the primary
    catalog without DJA) and flag every row.

    Parameters
    ----------
    run : RunInfo
        The run (catalogs, configuration).
    dja : Table or None
        DJA phot (+ zout) from :func:`~.inputs.read_dja`.
    settings : mapping, optional
        ``report:`` settings (default: the run's configuration's).

    Returns
    -------
    MorphoPhot
    """
    rs = dict(settings or run.config["report"])
    radius = float(rs["match_radius"])
    bits = artefact_bits(rs["artefact_flags"])
    limit, key = field_limit(run.field, rs["field_limits"], rs.get("mag_limit"))
    primary = run.primary
    models, matches, between = {}, {}, {}
    p_ra, p_dec = position_columns(run.catalogs[primary])
    if dja is not None:
        base, kind = dja, "dja"
        b_ra, b_dec = np.asarray(dja["ra"], float), np.asarray(dja["dec"], float)
    else:
        cat = run.catalogs[primary]
        base, kind = Table([cat[c] for c in DETECTION_COLUMNS if c in cat.colnames]), "ours"
        b_ra, b_dec = p_ra, p_dec
    for model, cat in run.catalogs.items():
        if kind == "ours" and model == primary:   # the base itself: every row is its own match
            idx = np.arange(len(cat))
            match = Match(idx, idx, np.zeros(len(cat)), len(cat), len(cat), len(cat))
            table = aligned(cat, idx)
            table["MATCH_SEP"] = Column(np.zeros(len(cat)), unit="arcsec")
        else:
            match, table = match_model_catalog(b_ra, b_dec, cat, radius)
        if model != primary:
            ra, dec = position_columns(cat)
            between[model] = match_one_to_one(p_ra, p_dec, ra, dec, radius)
        matched = np.zeros(len(base), bool)
        matched[match.left] = True
        if kind == "dja":
            flux, err = float_column(base, "flux_auto"), float_column(base, "fluxerr_auto")
        else:
            flux, err = float_column(table, "FLUX_AUTO"), float_column(table, "FLUXERR_AUTO")
        mag = float_column(table, f"MAG_MODEL_{str(rs['limit_band']).upper()}")
        faint = faint_mask(flux, err, mag, float(rs["snr_min"]), limit)
        table["flag"] = Column(quality_flags(matched, artefact_mask(table, bits), faint),
                               description="0 not fitted, 1 artefact, 2 good, 3 faint/low S/N")
        models[model], matches[model] = table, match
    return MorphoPhot(base, kind, models, matches, between, limit, key, rs)


def write_morpho_phot(mp: MorphoPhot, store, name: str, run: RunInfo) -> str:
    """Write the HDUs of ``mp`` to ``name`` in ``store`` (atomic); returns its URL."""
    import io

    from astropy.io import fits
    from .. import __version__
    primary = fits.PrimaryHDU()
    h = primary.header
    h["FIELD"] = (run.field, "field of the run")
    h["CREATOR"] = (f"dja-sepp {__version__}", "software that made this file")
    h["RUNDIR"] = (str(run.store.root)[-60:], "run directory")
    h["BASE"] = ("DJA" if mp.base_kind == "dja" else "DETECTION", "HDU 1: rows of every model HDU")
    h["MATCHRAD"] = (float(mp.settings["match_radius"]), "arcsec, one-to-one sky match")
    h["LIMBAND"] = (str(mp.settings["limit_band"]).upper(), "band of the magnitude limit")
    h["MAGLIM"] = (mp.limit if mp.limit is not None else "none", "flag 3 beyond this AB magnitude")
    h["SNRMIN"] = (float(mp.settings["snr_min"]), "flag 3 when flux_auto < SNRMIN x fluxerr_auto")
    h["MODELS"] = (",".join(mp.models)[:60], "one HDU per model, in this order")
    h["COMMENT"] = "flag: 0 not fitted, 1 artefact, 2 good, 3 faint / low S/N"
    hdus = [primary]
    base = fits.table_to_hdu(Table(mp.base, copy=False))
    base.name = "DJA" if mp.base_kind == "dja" else "DETECTION"
    hdus.append(base)
    for model, table in mp.models.items():
        hdu = fits.table_to_hdu(table)
        hdu.name = model.upper()
        hdu.header["MODEL"] = (model, "model of these fit columns")
        hdu.header["NMATCH"] = (mp.matches[model].n, "rows with a matched source of ours")
        for f, n in mp.flag_counts(model).items():
            hdu.header[f"NFLAG{f}"] = (n, f"rows with flag {f} ({FLAG_NAMES[f]})")
        hdus.append(hdu)
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return store.write_bytes(name, buf.getvalue())
