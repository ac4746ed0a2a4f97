"""Scoring a catalog against simulator truth: synthetic catalogs whose answer is known exactly."""
import json

import numpy as np
import pytest
from astropy.table import Table

from dja_sepp.sim.score import (format_score, match_one_to_one, robust_scatter,
                                score_catalog)

RA0, DEC0 = 53.16, -27.78
COS = np.cos(np.radians(DEC0))
BANDS = ("F277W", "F444W")


def _sky(dx, dy):
    """Offsets in arcsec (east, north) from the field centre -> RA, Dec (deg)."""
    return RA0 + np.asarray(dx) / 3600.0 / COS, DEC0 + np.asarray(dy) / 3600.0


def make_truth(n=40, n_star=4, n_faint=6):
    """``n`` objects on a 3" grid: the first ``n_star`` are stars, the last
    ``n_faint`` fainter than mag 26 in F277W."""
    k = np.arange(n)
    ra, dec = _sky(3.0 * (k % 8), 3.0 * (k // 8))
    t = Table()
    t["ID"] = k + 1
    t["KIND"] = np.where(k < n_star, "star", np.where(k % 3 == 0, "bulge+disk", "sersic"))
    t["RA"], t["DEC"] = ra, dec
    mag = np.where(k >= n - n_faint, 27.0, 22.0 + 0.05 * k)
    for i, b in enumerate(BANDS):
        t[f"MAG_{b}"] = mag - 0.1 * i
        t[f"FLUX_{b}"] = 10 ** (-0.4 * (t[f"MAG_{b}"] - 28.9))
    t["RE"] = np.where(t["KIND"] == "star", 0.0, 0.1 + 0.01 * k)
    t["N"] = np.where(t["KIND"] == "sersic", 1.0 + 0.05 * k, np.nan)
    return t


def perfect_catalog(truth, scale=1.1, snr=100.0):
    """One row per true object: fluxes ``scale`` x truth at S/N ``snr``."""
    c = Table()
    c["RA"], c["DEC"] = truth["RA"] + 0.02 / 3600 / COS, truth["DEC"]   # detection centroid 0.02" off
    c["RA_MODEL"], c["DEC_MODEL"] = truth["RA"], truth["DEC"]
    for b in BANDS:
        f = np.asarray(truth[f"FLUX_{b}"]) * scale
        c[f"FLUX_MODEL_{b}"], c[f"FLUX_MODEL_{b}_err"] = f, f / snr
    c["RADIUS"] = 1.2 * truth["RE"]
    c["SERSIC"] = truth["N"] + 0.5
    c["MODEL"] = np.where(truth["KIND"] == "star", "point", "sersic")
    c["FIT_DURATION"] = 0.5
    c["N_BANDS"] = 2
    return c


def _row(cat, dx, dy, flux, snr, model="sersic"):
    ra, dec = _sky(dx, dy)
    row = {c: np.nan for c in cat.colnames}
    row.update(RA=ra, DEC=dec, RA_MODEL=ra, DEC_MODEL=dec, MODEL=model, FIT_DURATION=0.5, N_BANDS=2)
    for b in BANDS:
        row[f"FLUX_MODEL_{b}"], row[f"FLUX_MODEL_{b}_err"] = flux, flux / snr
    cat.add_row(row)


@pytest.fixture(scope="module")
def truth():
    return make_truth()


@pytest.fixture(scope="module")
def dirty(truth):
    """Truth + 3 junk rows (one on a star's spike) + 1 duplicate of a galaxy
    + 1 row with no position and no flux; fluxes x 1.1 at S/N 100."""
    cat = perfect_catalog(truth)
    _row(cat, 1.0, 0.0, 300.0, 30.0)         # 1" east of star 1 (at 0, 0): a spike fragment
    _row(cat, 100.0, 100.0, 200.0, 8.0)      # junk far from everything
    _row(cat, 101.0, 100.0, 50.0, 3.0)       # junk below S/N 5: not counted in purity
    ra, dec = cat["RA_MODEL"][10], cat["DEC_MODEL"][10]
    cat.add_row({**{c: cat[c][10] for c in cat.colnames},
                 "RA_MODEL": ra + 0.05 / 3600 / COS, "DEC_MODEL": dec})  # 0.05" duplicate
    cat.add_row({**{c: (np.nan if cat[c].dtype.kind == "f" else cat[c][0]) for c in cat.colnames},
                 "MODEL": ""})
    return cat


def test_perfect_catalog(truth):
    s = score_catalog(perfect_catalog(truth, scale=1.0), truth)
    assert s.n_rows == s.n_true == s.n_matched == 40
    assert s.purity == 1.0 and s.rows_per_true == 1.0 and s.completeness == 1.0
    assert s.spike_fragments == 0
    for b in BANDS:
        assert s.bands[b].dmag_median_hi == pytest.approx(0.0, abs=1e-12)
        assert s.bands[b].n_hi == 40


def test_dirty_catalog_exact_numbers(truth, dirty):
    s = score_catalog(dirty, truth)
    n = len(truth)
    assert s.reference_band == "F277W"
    assert s.n_rows == n + 5 and s.rows_per_true == pytest.approx((n + 5) / n)
    assert s.n_matched == n                                # the duplicate claims nothing
    # S/N > 5: n true rows + fragment + far junk + duplicate; only the n are real
    assert s.n_snr5 == n + 3 and s.purity == pytest.approx(n / (n + 3))
    assert s.n_complete_eligible == n - 6 and s.completeness == 1.0
    assert s.spike_fragments == 1 and s.fragment_rows == [n]
    for b in BANDS:
        bs = s.bands[b]
        assert bs.n_hi == n and bs.dmag_median_hi == pytest.approx(-2.5 * np.log10(1.1))
        assert bs.dmag_scatter_hi == pytest.approx(0.0, abs=1e-12)
        assert bs.n_mid == 0 and np.isnan(bs.dmag_median_mid)
        assert bs.n_hi_stars == 4 and bs.n_hi_galaxies == n - 4
    sersic = truth["KIND"] == "sersic"
    assert s.n_shape == sersic.sum()
    assert s.re_bias == pytest.approx(0.2) and s.n_bias == pytest.approx(0.5)
    assert s.models == {"point": 4, "sersic": n - 4 + 3 + 1, "": 1}
    assert s.star_point_fraction == 1.0 and s.galaxy_point_fraction == 0.0
    assert s.core_seconds == pytest.approx(0.5 * (n + 4))   # the NaN row has no duration
    assert s.core_s_per_true_band == pytest.approx(0.5 * (n + 4) / (2 * n))
    text = format_score(s)
    assert "purity" in text and "F444W" in text
    json.dumps(s.to_dict())                                # JSON-ready


def test_completeness_counts_only_bright_truths(truth):
    cat = perfect_catalog(truth)
    cat.remove_rows([5, 6, 39])                            # two bright, one faint (mag 27)
    s = score_catalog(cat, truth)
    assert s.completeness == pytest.approx((34 - 2) / 34)
    assert s.purity == 1.0


def test_snr_bins_and_pulls(truth):
    """Fluxes true + z * err with a known z pattern: pull scatter = 1.4826 x MAD(z)."""
    cat = perfect_catalog(truth, scale=1.0, snr=30.0)
    z = np.tile([-2.0, -1.0, 0.0, 1.0, 2.0], 8)
    for b in BANDS:
        true = np.asarray(truth[f"FLUX_{b}"])
        cat[f"FLUX_MODEL_{b}_err"] = true / 30.0
        cat[f"FLUX_MODEL_{b}"] = true + z * true / 30.0
    s = score_catalog(cat, truth)
    bs = s.bands["F277W"]
    assert bs.n_pull == 40 and bs.pull_median == pytest.approx(0.0, abs=1e-12)
    assert bs.pull_scatter == pytest.approx(1.4826)
    # all bands pooled: the same pulls once per band
    assert s.n_pull == 40 * len(BANDS) and s.pull_scatter == pytest.approx(1.4826)
    snr = (1 + z / 30.0) * 30.0
    assert bs.n_mid == int(((snr > 20) & (snr <= 50)).sum()) and bs.n_hi == 0


def test_model_position_preferred_and_detection_fallback(truth):
    cat = perfect_catalog(truth)
    cat["RA"] = cat["RA"] + 1.0 / 3600 / COS               # detection centroids 1" off
    assert score_catalog(cat, truth).n_matched == 40
    assert score_catalog(cat, truth, prefer_model_position=False).n_matched == 0
    cat["RA_MODEL"][:5] = np.nan                           # failed fits fall back to RA, DEC
    assert score_catalog(cat, truth).n_matched == 35


def test_cost_from_given_core_seconds(truth):
    s = score_catalog(perfect_catalog(truth), truth, core_seconds=160.0)
    assert s.core_s_per_row_band == pytest.approx(160.0 / 80) and s.row_bands == 80
    assert s.core_s_per_true_band == pytest.approx(2.0)


def test_match_one_to_one_resolves_by_distance():
    ra2, dec2 = _sky([0.0, 0.2], [0.0, 0.0])               # two true objects 0.2" apart
    ra1, dec1 = _sky([0.05, 0.02, 0.11, np.nan], [0.0, 0.0, 0.0, 0.0])
    i1, i2, sep = match_one_to_one(ra1, dec1, ra2, dec2, radius=0.15)
    pairs = dict(zip(i1.tolist(), i2.tolist()))
    # row 1 (0.02") takes object 0; row 2 (0.09" from object 1) takes object 1; row 0 loses
    assert pairs == {1: 0, 2: 1}
    assert sep == pytest.approx([0.02, 0.09], abs=1e-6)
    assert match_one_to_one([], [], ra2, dec2)[0].size == 0


def test_robust_scatter_ignores_nan():
    assert robust_scatter([np.nan, np.nan]) != robust_scatter([np.nan, np.nan])  # NaN
    assert robust_scatter([1.0, 2.0, 3.0, np.nan, np.inf]) == pytest.approx(1.4826)


def test_empty_and_minimal_catalogs(truth):
    empty = score_catalog(perfect_catalog(truth)[:0], truth)
    assert empty.n_rows == 0 and empty.completeness == 0.0 and np.isnan(empty.purity)
    assert "nan" in format_score(empty)
    minimal = perfect_catalog(truth)
    minimal.remove_columns(["RA_MODEL", "DEC_MODEL", "MODEL", "RADIUS", "SERSIC", "FIT_DURATION",
                            "N_BANDS"])
    s = score_catalog(minimal, truth)
    assert s.purity == 1.0 and s.n_shape == 0 and np.isnan(s.re_bias) and s.models == {}
    assert s.row_bands == 2 * len(truth)
    with pytest.raises(ValueError):
        score_catalog(minimal, truth, reference_band="F150W")


def test_a_truth_hidden_behind_a_brighter_one_is_not_counted_missing(truth):
    """Two true objects 0.05" apart are one source for any detection: the
    fainter one leaves the completeness (``n_hidden``) instead of counting as
    a miss; 0.5" apart both count."""
    hidden = truth.copy()
    ra, dec = _sky(3.0 * 2 + 0.05, 0.0)        # beside object 3 (index 2, mag 22.1)
    hidden.add_row({**{c: hidden[c][20] for c in hidden.colnames}, "RA": ra, "DEC": dec, "ID": 99})
    s = score_catalog(perfect_catalog(truth), hidden)
    assert s.n_hidden == 1 and s.completeness == 1.0 and s.n_complete_eligible == 34
    apart = truth.copy()
    ra, dec = _sky(3.0 * 2 + 0.5, 0.0)
    apart.add_row({**{c: apart[c][20] for c in apart.colnames}, "RA": ra, "DEC": dec, "ID": 99})
    s = score_catalog(perfect_catalog(truth), apart)
    assert s.n_hidden == 0 and s.completeness == pytest.approx(34 / 35)


def test_bright_stars_and_galaxies_are_scored_apart(truth):
    """A star-rich field's bright-bin median is the stars': galaxies get
    their own (the total-flux target is about galaxies)."""
    cat = perfect_catalog(truth, scale=1.0)
    star = np.asarray(truth["KIND"]) == "star"
    for b in BANDS:
        cat[f"FLUX_MODEL_{b}"][~star] *= 1.02      # galaxies 2 % bright
        cat[f"FLUX_MODEL_{b}"][star] *= 0.99       # stars 1 % faint
    s = score_catalog(cat, truth)
    for b in BANDS:
        bs = s.bands[b]
        assert bs.dmag_median_hi_galaxies == pytest.approx(-2.5 * np.log10(1.02))
        assert bs.dmag_median_hi_stars == pytest.approx(-2.5 * np.log10(0.99))
        assert bs.n_hi_galaxies + bs.n_hi_stars == bs.n_hi == 40
    assert "gal" in format_score(s)


def test_bulge_disk_score_counts_true_bulge_disks_at_high_snr_only():
    from dja_sepp.fit.flags import FitFlag
    from dja_sepp.sim.score import score_bulge_disk
    truth = make_truth()
    bd = np.asarray(truth["KIND"]) == "bulge+disk"
    for i, b in enumerate(BANDS):
        truth[f"BT_{b}"] = np.where(bd, 0.2 + 0.1 * i, np.nan)
    cat = perfect_catalog(truth, scale=1.0, snr=100.0)
    k = np.arange(len(truth))
    # measured B/T: +0.05 on every other bulge + disk, exact on the rest; F444W all +0.1
    cat["B/T_F277W"] = truth["BT_F277W"] + np.where(k % 2 == 0, 0.05, 0.0)
    cat["B/T_F444W"] = truth["BT_F444W"] + 0.1
    cat["B/T_F277W"][~bd] = 0.5   # Sersic truths: whatever the fit says, not scored
    flags = np.zeros(len(truth), int)
    ids = np.flatnonzero(bd)
    flags[ids[0]] = int(FitFlag.AT_BOUND)
    flags[ids[1]] = int(FitFlag.AT_BOUND | FitFlag.BULGE_LARGER)
    flags[ids[2]] = int(FitFlag.ERROR)                           # left out
    cat["FLAGS"] = flags
    cat["BOUND_PARAMS"] = ""
    cat["BOUND_PARAMS"] = cat["BOUND_PARAMS"].astype("U64")
    cat["BOUND_PARAMS"][ids[0]] = "r_b=max,disk_F277W=0,disk_F444W=0"
    cat["BOUND_PARAMS"][ids[1]] = "r_b=max"
    faint = ids[3]                                               # S/N 20: left out
    for b in BANDS:
        cat[f"FLUX_MODEL_{b}_err"][faint] = cat[f"FLUX_MODEL_{b}"][faint] / 20.0
    score = score_bulge_disk(cat, truth)
    kept = [i for i in ids if i not in (ids[2], faint)]
    assert score.n == len(kept) and score.reference_band == "F277W"
    assert score.bt_median["F444W"] == pytest.approx(0.1)
    assert score.bt_scatter["F444W"] == pytest.approx(0.0, abs=1e-12)
    expect = np.where(np.asarray(kept) % 2 == 0, 0.05, 0.0)
    assert score.bt_median["F277W"] == pytest.approx(np.median(expect))
    assert score.bt_scatter["F277W"] == pytest.approx(robust_scatter(expect))
    assert score.dmag_median["F277W"] == pytest.approx(0.0, abs=1e-9)
    assert score.at_bound == 2 and score.bulge_larger == 1
    assert score.at_bound_fraction == pytest.approx(2 / len(kept))
    assert score.bounds == {"r_b=max": 2, "disk=0": 1}
    assert "B/T scatter" in score.format() and json.dumps(score.to_dict())
