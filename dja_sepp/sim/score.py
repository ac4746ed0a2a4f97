"""Judge a catalog against simulator truth, per *true* object.

A catalog row that is a noise peak or a diffraction-spike fragment costs a
full fit and misleads the catalog's users, so every number here is counted
against the objects that really are in the image (``truth.fits`` written by
:func:`dja_sepp.sim.simulate_field`): purity, rows per true object,
completeness, spike fragments, flux bias and scatter per band, flux-error
pulls, size and Sérsic-index bias, and the cost per true object-band.

Rows and true objects are matched one to one on the sky: every pair closer
than the match radius is a candidate, pairs are taken by increasing distance,
and neither a row nor a true object is taken twice (a duplicate row of a true
object stays unmatched, as a junk row does).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

__all__ = ["Score", "BandScore", "BulgeDiskScore", "score_catalog", "score_bulge_disk",
           "match_one_to_one", "format_score", "robust_scatter"]

#: reference band for S/N cuts and completeness magnitudes, in order of preference
_REFERENCE_BANDS = ("F277W", "F356W", "F444W", "F200W", "F150W")


@dataclass
class BandScore:
    """Photometric accuracy of matched rows in one band.

    ``dmag`` is measured minus true magnitude; ``pull`` is (measured - true
    flux) / flux error. Scatters are 1.4826 x median absolute deviation.
    S/N is the row's own ``FLUX_MODEL_{band} / FLUX_MODEL_{band}_err``.
    """

    band: str
    n_hi: int = 0                       #: matched rows with S/N > 50
    dmag_median_hi: float = np.nan
    dmag_scatter_hi: float = np.nan
    n_hi_galaxies: int = 0              #: ... of them true galaxies (a star-rich field's median is the stars')
    dmag_median_hi_galaxies: float = np.nan
    n_hi_stars: int = 0                 #: ... and true stars
    dmag_median_hi_stars: float = np.nan
    n_mid: int = 0                      #: matched rows with 20 < S/N <= 50
    dmag_median_mid: float = np.nan
    dmag_scatter_mid: float = np.nan
    n_pull: int = 0                     #: matched rows with 10 < S/N <= 50
    pull_median: float = np.nan
    pull_scatter: float = np.nan


@dataclass
class Score:
    """Per-true-object quality and cost of a catalog (see :func:`score_catalog`)."""

    n_rows: int
    n_true: int
    n_matched: int                      #: true objects claimed by a row (one to one)
    rows_per_true: float
    reference_band: str
    n_snr5: int                         #: rows with S/N > 5 in the reference band
    purity: float                       #: fraction of those matched to a true object
    n_complete_eligible: int            #: resolvable true objects brighter than ``mag_limit``
    completeness: float
    n_hidden: int                       #: true objects within ``blend_radius`` of a brighter one
    spike_fragments: int                #: bright unmatched rows near true stars
    mag_limit: float = 26.0             #: completeness magnitude limit (reference band)
    bands: dict = field(default_factory=dict)   #: band -> BandScore
    n_shape: int = 0                    #: Sérsic truths with S/N > 50 and a fitted RADIUS
    re_bias: float = np.nan             #: median(RADIUS / RE) - 1
    n_bias: float = np.nan              #: median(SERSIC - N)
    models: dict = field(default_factory=dict)  #: MODEL value -> rows
    star_point_fraction: float = np.nan     #: true stars (S/N > 50) fitted as MODEL=point
    galaxy_point_fraction: float = np.nan   #: large galaxies fitted as MODEL=point
    core_seconds: float = np.nan
    row_bands: int = 0
    true_bands: int = 0
    core_s_per_row_band: float = np.nan
    core_s_per_true_band: float = np.nan
    n_pull: int = 0                     #: pulls at 10 < S/N <= 50, all bands pooled
    pull_scatter: float = np.nan        #: their robust scatter (one band holds too few)
    fragment_rows: list = field(default_factory=list)   #: row indices of spike fragments

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (NaN kept as float NaN)."""
        d = asdict(self)
        d["bands"] = {b: asdict(s) if not isinstance(s, dict) else s for b, s in self.bands.items()}
        return d


def robust_scatter(x) -> float:
    """1.4826 x median absolute deviation of the finite values (NaN if none)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.nan
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _median(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else np.nan


def match_one_to_one(ra1, dec1, ra2, dec2, radius: float = 0.15):
    """One-to-one sky match of two position lists.

    Parameters
    ----------
    ra1, dec1, ra2, dec2 : array_like
        Degrees. Non-finite positions never match.
    radius : float
        Match radius in arcsec.

    Returns
    -------
    idx1, idx2 : ndarray of int
        Matched pairs (``idx1[k]`` of list 1 with ``idx2[k]`` of list 2),
        chosen by increasing separation so no element is used twice.
    sep : ndarray
        Their separations in arcsec.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord, search_around_sky
    ra1, dec1, ra2, dec2 = (np.asarray(a, float) for a in (ra1, dec1, ra2, dec2))
    ok1 = np.flatnonzero(np.isfinite(ra1) & np.isfinite(dec1))
    ok2 = np.flatnonzero(np.isfinite(ra2) & np.isfinite(dec2))
    empty = np.zeros(0, int)
    if ok1.size == 0 or ok2.size == 0:
        return empty, empty, np.zeros(0)
    c1 = SkyCoord(ra1[ok1], dec1[ok1], unit="deg")
    c2 = SkyCoord(ra2[ok2], dec2[ok2], unit="deg")
    i1, i2, sep, _ = search_around_sky(c1, c2, radius * u.arcsec)
    sep = sep.to_value(u.arcsec)
    order = np.argsort(sep, kind="stable")
    used1, used2 = set(), set()
    keep = []
    for k in order:  # candidate pairs are few (crowding within 0.15"), a loop is fine
        a, b = i1[k], i2[k]
        if a in used1 or b in used2:
            continue
        used1.add(a)
        used2.add(b)
        keep.append(k)
    keep = np.asarray(keep, int)
    return ok1[i1[keep]], ok2[i2[keep]], sep[keep]


def _column(t: Table, name: str) -> np.ndarray:
    if name not in t.colnames:
        return np.full(len(t), np.nan)
    col = t[name]
    col = getattr(col, "value", col)  # a QTable Quantity: drop the unit
    return np.asarray(np.ma.filled(np.ma.asarray(col).astype(float), np.nan), float)


def _positions(cat: Table, prefer_model: bool) -> tuple[np.ndarray, np.ndarray]:
    """Model centre where finite (more accurate), else the detection centroid."""
    ra, dec = _column(cat, "RA"), _column(cat, "DEC")
    if prefer_model and "RA_MODEL" in cat.colnames:
        mra, mdec = _column(cat, "RA_MODEL"), _column(cat, "DEC_MODEL")
        good = np.isfinite(mra) & np.isfinite(mdec)
        ra, dec = np.where(good, mra, ra), np.where(good, mdec, dec)
    return ra, dec


def _snr(cat: Table, band: str) -> np.ndarray:
    f, e = _column(cat, f"FLUX_MODEL_{band}"), _column(cat, f"FLUX_MODEL_{band}_err")
    with np.errstate(invalid="ignore", divide="ignore"):
        s = f / e
    return np.where(np.isfinite(s) & (e > 0), s, np.nan)


def _catalog_bands(cat: Table, truth: Table) -> list[str]:
    return [c[len("FLUX_MODEL_"):] for c in cat.colnames
            if c.startswith("FLUX_MODEL_") and not c.endswith("_err")
            and f"FLUX_{c[len('FLUX_MODEL_'):]}" in truth.colnames]


def _pulls(meas, err, true):
    """(measured - true) / error, and the row's S/N."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (meas - true) / err, np.where(err > 0, meas / err, np.nan)


def _band_score(band: str, meas, err, true, star) -> BandScore:
    """``star``: the matched truths that are stars (split out of the bright bin)."""
    pull, snr = _pulls(meas, err, true)
    with np.errstate(invalid="ignore", divide="ignore"):
        dmag = -2.5 * np.log10(meas / true)
    dmag = np.where((meas > 0) & (true > 0), dmag, np.nan)
    hi, mid, pl = snr > 50, (snr > 20) & (snr <= 50), (snr > 10) & (snr <= 50)
    return BandScore(band, int(hi.sum()), _median(dmag[hi]), robust_scatter(dmag[hi]),
                     int((hi & ~star).sum()), _median(dmag[hi & ~star]),
                     int((hi & star).sum()), _median(dmag[hi & star]),
                     int(mid.sum()), _median(dmag[mid]), robust_scatter(dmag[mid]),
                     int(pl.sum()), _median(pull[pl]), robust_scatter(pull[pl]))


def _reference_band(bands: list[str], requested: str | None) -> str:
    if requested is not None:
        if requested.upper() not in bands:
            raise ValueError(f"reference band {requested} has no FLUX_MODEL column and truth flux")
        return requested.upper()
    for b in _REFERENCE_BANDS:
        if b in bands:
            return b
    if not bands:
        raise ValueError("the catalog has no FLUX_MODEL_{BAND} column matching a truth FLUX_{BAND}")
    return bands[0]


def _fragments(cat_ra, cat_dec, snr, matched_rows, truth, radius, snr_min) -> list[int]:
    """Bright rows near a true star that are no true object themselves."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord, search_around_sky
    star = np.asarray(truth["KIND"]).astype(str) == "star"
    cand = np.flatnonzero((snr > snr_min) & np.isfinite(cat_ra) & np.isfinite(cat_dec))
    cand = np.setdiff1d(cand, matched_rows)
    if not star.any() or cand.size == 0:
        return []
    c_rows = SkyCoord(cat_ra[cand], cat_dec[cand], unit="deg")
    c_star = SkyCoord(_column(truth, "RA")[star], _column(truth, "DEC")[star], unit="deg")
    i_rows, _, _, _ = search_around_sky(c_rows, c_star, radius * u.arcsec)
    return sorted(int(r) for r in set(cand[i_rows]))


def _hidden(truth: Table, ref: str, radius: float) -> np.ndarray:
    """True objects closer than ``radius`` arcsec to a brighter true object:
    one source on the sky for any detection (the simulator's exact blends)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord, search_around_sky
    c = SkyCoord(_column(truth, "RA"), _column(truth, "DEC"), unit="deg")
    i, j, _, _ = search_around_sky(c, c, radius * u.arcsec)
    flux = _column(truth, f"FLUX_{ref}")
    hidden = np.zeros(len(truth), bool)
    hidden[i[(i != j) & (flux[j] > flux[i])]] = True
    return hidden


def _shape_bias(cat, truth, rows, trues, snr_ref):
    kind = np.asarray(truth["KIND"]).astype(str)[trues]
    radius, sersic = _column(cat, "RADIUS")[rows], _column(cat, "SERSIC")[rows]
    sel = (kind == "sersic") & (snr_ref[rows] > 50) & np.isfinite(radius)
    true_re, true_n = _column(truth, "RE")[trues], _column(truth, "N")[trues]
    with np.errstate(invalid="ignore", divide="ignore"):
        re_bias = _median(radius[sel] / true_re[sel] - 1.0)
    return int(sel.sum()), re_bias, _median(sersic[sel] - true_n[sel])


def _model_classes(cat, truth, rows, trues, snr_ref, galaxy_re_min):
    if "MODEL" not in cat.colnames:
        return {}, np.nan, np.nan
    model = np.char.strip(np.asarray(cat["MODEL"]).astype(str))
    values, counts = np.unique(model, return_counts=True)
    kind = np.asarray(truth["KIND"]).astype(str)[trues]
    is_point = model[rows] == "point"
    stars = (kind == "star") & (snr_ref[rows] > 50)
    big = (kind != "star") & (_column(truth, "RE")[trues] > galaxy_re_min)
    frac = (lambda m: float(is_point[m].mean()) if m.any() else np.nan)
    return dict(zip(values.tolist(), counts.tolist())), frac(stars), frac(big)


def _cost(cat, bands, n_true, core_seconds):
    if core_seconds is None:
        core_seconds = float(np.nansum(_column(cat, "FIT_DURATION")))
    if "N_BANDS" in cat.colnames:
        row_bands = int(np.nansum(_column(cat, "N_BANDS")))
    else:
        row_bands = len(cat) * len(bands)
    true_bands = n_true * len(bands)
    per = (lambda n: core_seconds / n if n > 0 else np.nan)
    return float(core_seconds), row_bands, true_bands, per(row_bands), per(true_bands)


def score_catalog(catalog: Table | str | Path, truth: Table | str | Path, *,
                  reference_band: str | None = None, match_radius: float = 0.15,
                  snr_min: float = 5.0, mag_limit: float = 26.0, star_radius: float = 1.5,
                  fragment_snr: float = 20.0, galaxy_re_min: float = 0.3, blend_radius: float = 0.2,
                  core_seconds: float | None = None, prefer_model_position: bool = True) -> Score:
    """Score a catalog against the simulator's truth, per true object.

    Parameters
    ----------
    catalog : Table or path
        Columns ``RA, DEC`` and/or ``RA_MODEL, DEC_MODEL`` (deg),
        ``FLUX_MODEL_{BAND}`` with ``_err``; optional ``MODEL``, ``RADIUS``
        (arcsec), ``SERSIC``, ``FIT_DURATION`` (s), ``N_BANDS``.
    truth : Table or path
        ``truth.fits`` of :func:`dja_sepp.sim.simulate_field`: ``KIND``
        (sersic | bulge+disk | star), ``RA, DEC``, ``FLUX_{BAND}``,
        ``MAG_{BAND}``, ``RE``, ``N``.
    reference_band : str, optional
        Band of the S/N cuts and the completeness magnitude (default F277W,
        else the first long-wave band present).
    match_radius : float
        One-to-one match radius, arcsec.
    snr_min : float
        Purity counts rows with reference-band S/N above this.
    mag_limit : float
        Completeness counts true objects brighter than this (reference band).
    blend_radius : float
        A true object closer than this (arcsec; 1.5 F444W PSF FWHM) to a
        brighter one is one source on the sky for any detection: left out of
        the completeness and counted as ``n_hidden``.
    star_radius, fragment_snr : float
        A spike fragment is a row with S/N > ``fragment_snr`` within
        ``star_radius`` arcsec of a true star, matched to no true object.
    galaxy_re_min : float
        Galaxies with true semi-major r_e above this (arcsec; ~2 F444W PSF
        FWHM) must not be fitted as ``MODEL = point``.
    core_seconds : float, optional
        Total cost of the run; default the sum of ``FIT_DURATION``.
    prefer_model_position : bool
        Match on the model centre where it is finite (else the detection
        centroid).

    Returns
    -------
    Score
        NaN where a quantity has no objects to measure it on.
    """
    cat = catalog if isinstance(catalog, Table) else Table.read(catalog)
    tru = truth if isinstance(truth, Table) else Table.read(truth)
    bands = _catalog_bands(cat, tru)
    ref = _reference_band(bands, reference_band)
    ra, dec = _positions(cat, prefer_model_position)
    rows, trues, _ = match_one_to_one(ra, dec, _column(tru, "RA"), _column(tru, "DEC"), match_radius)
    snr_ref = _snr(cat, ref)
    # purity: bright rows matched among themselves, so a faint junk row next to
    # a true object cannot steal its match from the real row
    bright = np.flatnonzero(snr_ref > snr_min)
    b_rows, _, _ = match_one_to_one(ra[bright], dec[bright], _column(tru, "RA"),
                                    _column(tru, "DEC"), match_radius)
    hidden = _hidden(tru, ref, blend_radius)
    eligible = (_column(tru, f"MAG_{ref}") < mag_limit) & ~hidden
    found = np.zeros(len(tru), bool)
    found[trues] = True
    fragments = _fragments(ra, dec, snr_ref, rows, tru, star_radius, fragment_snr)
    star = np.asarray(tru["KIND"]).astype(str)[trues] == "star"
    band_scores = {b: _band_score(b, _column(cat, f"FLUX_MODEL_{b}")[rows],
                                  _column(cat, f"FLUX_MODEL_{b}_err")[rows],
                                  _column(tru, f"FLUX_{b}")[trues], star) for b in bands}
    pooled = np.concatenate([p[(s > 10) & (s <= 50)] for p, s in (
        _pulls(_column(cat, f"FLUX_MODEL_{b}")[rows], _column(cat, f"FLUX_MODEL_{b}_err")[rows],
               _column(tru, f"FLUX_{b}")[trues]) for b in bands)] or [np.zeros(0)])
    n_shape, re_bias, n_bias = _shape_bias(cat, tru, rows, trues, snr_ref)
    models, star_pt, gal_pt = _model_classes(cat, tru, rows, trues, snr_ref, galaxy_re_min)
    cost = _cost(cat, bands, len(tru), core_seconds)
    return Score(
        n_rows=len(cat), n_true=len(tru), n_matched=int(len(trues)),
        rows_per_true=len(cat) / len(tru) if len(tru) else np.nan, reference_band=ref,
        n_snr5=int(bright.size), purity=b_rows.size / bright.size if bright.size else np.nan,
        n_complete_eligible=int(eligible.sum()),
        completeness=float(found[eligible].mean()) if eligible.any() else np.nan,
        n_hidden=int(hidden.sum()),
        spike_fragments=len(fragments), mag_limit=mag_limit, bands=band_scores, n_shape=n_shape,
        re_bias=re_bias, n_bias=n_bias, models=models, star_point_fraction=star_pt, galaxy_point_fraction=gal_pt,
        core_seconds=cost[0], row_bands=cost[1], true_bands=cost[2],
        core_s_per_row_band=cost[3], core_s_per_true_band=cost[4],
        n_pull=int(pooled.size), pull_scatter=robust_scatter(pooled), fragment_rows=fragments)


@dataclass
class BulgeDiskScore:
    """Bulge + disk fits of the true bulge + disk galaxies at high S/N.

    Attributes
    ----------
    n : int
        True bulge + disk galaxies matched to a bulge + disk row of S/N >
        ``snr_min`` in the reference band, fitted without ``ERROR`` or
        ``INSUFFICIENT_DATA``.
    bt_scatter, bt_median : dict
        Band -> robust scatter and median of measured - true B/T.
    dmag_median : dict
        Band -> median measured - true magnitude of the same galaxies.
    at_bound, bulge_larger : int
        Of the ``n``: rows flagged ``AT_BOUND`` and ``BULGE_LARGER``.
    bounds : dict
        ``BOUND_PARAMS`` entries (band names dropped) -> rows.
    """

    n: int
    reference_band: str
    snr_min: float
    bt_scatter: dict = field(default_factory=dict)
    bt_median: dict = field(default_factory=dict)
    dmag_median: dict = field(default_factory=dict)
    at_bound: int = 0
    bulge_larger: int = 0
    bounds: dict = field(default_factory=dict)

    @property
    def at_bound_fraction(self) -> float:
        return self.at_bound / self.n if self.n else np.nan

    def to_dict(self) -> dict:
        return {**asdict(self), "at_bound_fraction": self.at_bound_fraction}

    def format(self) -> str:
        """A few readable lines."""
        head = (f"bulge + disk truths at {self.reference_band} S/N > {self.snr_min:g}: {self.n}; "
                f"at a bound {self.at_bound} ({self.at_bound_fraction:.0%}), bulge larger {self.bulge_larger}")
        lines = [head] + [f"  {b:>6} B/T scatter {self.bt_scatter[b]:.3f}  median {self.bt_median[b]:+.3f}  "
                          f"dmag {self.dmag_median[b]:+.3f}" for b in self.bt_scatter]
        if self.bounds:
            lines.append("  bounds: " + ", ".join(f"{k} {v}" for k, v in self.bounds.items()))
        return "\n".join(lines)


def score_bulge_disk(catalog: Table | str | Path, truth: Table | str | Path, *,
                     reference_band: str | None = None, match_radius: float = 0.15,
                     snr_min: float = 50.0) -> BulgeDiskScore:
    """Score the ``B/T_{BAND}`` of a bulge + disk catalog against the truth's
    ``BT_{BAND}`` (true ``KIND == bulge+disk`` only), matched one to one as
    :func:`score_catalog` does."""
    from collections import Counter

    from ..fit.flags import FitFlag
    cat = catalog if isinstance(catalog, Table) else Table.read(catalog)
    tru = truth if isinstance(truth, Table) else Table.read(truth)
    bands = [b for b in _catalog_bands(cat, tru) if f"B/T_{b}" in cat.colnames and f"BT_{b}" in tru.colnames]
    ref = _reference_band(_catalog_bands(cat, tru), reference_band)
    ra, dec = _positions(cat, True)
    rows, trues, _ = match_one_to_one(ra, dec, _column(tru, "RA"), _column(tru, "DEC"), match_radius)
    flags = np.asarray(cat["FLAGS"], int)[rows] if "FLAGS" in cat.colnames else np.zeros(len(rows), int)
    bad = int(FitFlag.ERROR | FitFlag.INSUFFICIENT_DATA)
    keep = ((np.asarray(tru["KIND"]).astype(str)[trues] == "bulge+disk") & (_snr(cat, ref)[rows] > snr_min)
            & (flags & bad == 0) & np.isfinite(_column(cat, f"B/T_{ref}")[rows]))
    rows, trues, flags = rows[keep], trues[keep], flags[keep]
    out = BulgeDiskScore(int(keep.sum()), ref, snr_min)
    for b in bands:
        dbt = _column(cat, f"B/T_{b}")[rows] - _column(tru, f"BT_{b}")[trues]
        with np.errstate(invalid="ignore", divide="ignore"):
            dmag = -2.5 * np.log10(_column(cat, f"FLUX_MODEL_{b}")[rows] / _column(tru, f"FLUX_{b}")[trues])
        out.bt_scatter[b], out.bt_median[b], out.dmag_median[b] = robust_scatter(dbt), _median(dbt), _median(dmag)
    out.at_bound = int((flags & int(FitFlag.AT_BOUND) != 0).sum())
    out.bulge_larger = int((flags & int(FitFlag.BULGE_LARGER) != 0).sum())
    counts: Counter = Counter()
    if "BOUND_PARAMS" in cat.colnames:
        for text in np.asarray(cat["BOUND_PARAMS"]).astype(str)[rows]:
            seen = set()
            for item in filter(None, text.split(",")):
                name, _, side = item.partition("=")
                for b in bands:   # a component's flux bound counted once per row, whatever the band
                    name = name.replace(f"_{b}", "")
                seen.add(f"{name}={side}")
            counts.update(seen)
    out.bounds = dict(counts.most_common())
    return out


def format_score(score: Score) -> str:
    """A readable multi-line summary of a :class:`Score`."""
    s = score
    lines = [
        f"rows {s.n_rows}  true objects {s.n_true}  rows/true {s.rows_per_true:.2f}  "
        f"matched {s.n_matched}",
        f"purity (S/N>5 in {s.reference_band}, {s.n_snr5} rows) {s.purity:.3f}  "
        f"completeness (mag<{s.mag_limit:g}, {s.n_complete_eligible}) {s.completeness:.3f}  "
        f"spike fragments {s.spike_fragments}  (hidden behind a brighter one: {s.n_hidden})",
        f"{'band':>6} {'n>50':>5} {'dmag':>7} {'scat':>6} {'n20-50':>6} {'dmag':>7} {'scat':>6} "
        f"{'n10-50':>6} {'pull':>6} {'pscat':>6}   S/N>50: {'gal':>4} {'dmag':>7} {'star':>4} {'dmag':>7}",
    ]
    for b, bs in s.bands.items():
        lines.append(f"{b:>6} {bs.n_hi:5d} {bs.dmag_median_hi:7.3f} {bs.dmag_scatter_hi:6.3f} "
                     f"{bs.n_mid:6d} {bs.dmag_median_mid:7.3f} {bs.dmag_scatter_mid:6.3f} "
                     f"{bs.n_pull:6d} {bs.pull_median:6.2f} {bs.pull_scatter:6.2f}   "
                     f"{'':7} {bs.n_hi_galaxies:4d} {bs.dmag_median_hi_galaxies:7.3f} "
                     f"{bs.n_hi_stars:4d} {bs.dmag_median_hi_stars:7.3f}")
    lines.append(f"{'all':>6} {'':5} {'':7} {'':6} {'':6} {'':7} {'':6} {s.n_pull:6d} {'':6} "
                 f"{s.pull_scatter:6.2f}")
    lines.append(f"Sersic truths S/N>50 ({s.n_shape}): r_e bias {s.re_bias:+.3f}  "
                 f"n bias {s.n_bias:+.2f}")
    if s.models:
        lines.append(f"models {s.models}  stars->point {s.star_point_fraction:.2f}  "
                     f"big galaxies->point {s.galaxy_point_fraction:.2f}")
    lines.append(f"cost {s.core_seconds:.1f} core-s  {s.core_s_per_row_band:.4f} per row-band  "
                 f"{s.core_s_per_true_band:.4f} per true object-band")
    return "\n".join(lines)
