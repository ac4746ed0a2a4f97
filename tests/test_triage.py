"""Per-source decisions of the engine on GalSim scenes with spiky JWST-like PSFs:
bright stars become point sources, extended galaxies do not, and the spike and
ring fragments that deblending splits off a star are explained by the star's
model and rejected instead of fitted."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table, vstack

pytest.importorskip("galsim")

from dja_sepp.fit.base import get_engine  # noqa: E402
from dja_sepp.fit.flags import FitFlag  # noqa: E402
from dja_sepp.fit.triage import SegmentFlux, is_explained, prefer_point  # noqa: E402
from dja_sepp.settings import load_config  # noqa: E402
from dja_sepp.sim.scenes import galaxy_grid, make_scene  # noqa: E402

BANDS = ("F277W", "F444W")
SPACING = 96


def _stars(rng, positions, fluxes):
    t = Table()
    t["KIND"] = ["star"] * len(positions)
    t["X_DET"] = [p[0] + rng.uniform(-0.5, 0.5) for p in positions]
    t["Y_DET"] = [p[1] + rng.uniform(-0.5, 0.5) for p in positions]
    for b in BANDS:
        t[f"FLUX_{b}"] = fluxes
    return t


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(21)
    gal = galaxy_grid(rng, 2, 4, SPACING, BANDS, flux_range=(300.0, 1500.0))
    gal["RE"] = rng.uniform(0.35, 0.5, len(gal))        # > 2 FWHM of F444W (0.29")
    star_pos = [((c + 0.5) * SPACING, 2.5 * SPACING) for c in range(4)]
    stars = _stars(rng, star_pos, [3e4, 1e4, 3e3, 1e3])  # mag 17.7 .. 21.4, S/N >> 50
    truth = vstack([gal, stars], join_type="outer")
    for col in truth.colnames:
        if hasattr(truth[col], "filled"):
            truth[col] = truth[col].filled(np.nan if truth[col].dtype.kind == "f" else "")
    scene = make_scene(truth, (3 * SPACING, 4 * SPACING), {b: 1 for b in BANDS}, sigma=0.02, seed=22)
    cfg = load_config()
    from dja_sepp.detect import detect_sources
    sources, segmap = detect_sources(scene.detection, cfg["detection"])
    scene.detection.segmap = segmap
    sources["IN_CORE"] = np.ones(len(sources), bool)
    table = get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4", cfg["fit"])
    if "RESIDUAL_SOURCES" in table.meta:  # rows found on the residual follow the detected ones
        sources = vstack([sources, table.meta["RESIDUAL_SOURCES"]], metadata_conflicts="silent")
    assert len(sources) == len(table)
    return truth, sources, table


def _nearest(sources, truth):
    d = np.hypot(np.asarray(sources["x"])[:, None] - np.asarray(truth["X_DET"])[None, :],
                 np.asarray(sources["y"])[:, None] - np.asarray(truth["Y_DET"])[None, :])
    return d.argmin(1), d.min(1)


def test_bright_stars_are_points_and_extended_galaxies_are_not(fitted):
    truth, sources, table = fitted
    idx, dist = _nearest(sources, truth)
    kind = np.asarray(truth["KIND"]).astype(str)
    model = np.char.strip(np.asarray(table["MODEL"]).astype(str))
    real = dist < 2.0
    star_rows = real & (kind[idx] == "star")
    gal_rows = real & (kind[idx] != "star")
    assert star_rows.sum() == 4 and gal_rows.sum() >= 7
    assert (model[star_rows] == "point").all()
    assert not (model[gal_rows] == "point").any()
    # a point row carries fluxes, no shape, and renders as the PSF
    pt = table[star_rows]
    assert np.isfinite(pt["FLUX_MODEL_F444W"]).all() and np.isnan(pt["SERSIC"]).all()
    flux = np.asarray(pt["FLUX_MODEL_F444W"]) / np.asarray(truth["FLUX_F444W"])[idx[star_rows]]
    assert np.all(np.abs(flux - 1) < 0.03)   # truth PSF (301 px) here: total fluxes


def test_spike_fragments_are_explained_not_fitted(fitted):
    truth, sources, table = fitted
    idx, dist = _nearest(sources, truth)
    kind = np.asarray(truth["KIND"]).astype(str)
    stars = truth[kind == "star"]
    d_star = np.hypot(np.asarray(sources["x"])[:, None] - np.asarray(stars["X_DET"])[None, :],
                      np.asarray(sources["y"])[:, None] - np.asarray(stars["Y_DET"])[None, :]).min(1)
    fragment = (dist > 2.0) & (d_star < 1.5 / 0.04)
    explained = (np.asarray(table["FLAGS"]) & FitFlag.EXPLAINED) > 0
    snr = np.asarray(table["FLUX_MODEL_F444W"]) / np.asarray(table["FLUX_MODEL_F444W_err"])
    assert fragment.sum() >= 1               # the brightest star's spikes do fragment
    # no fitted row with S/N > 20 near a star that is not a true object
    assert not (fragment & ~explained & (snr > 20)).any()
    assert not explained[dist < 2.0].any()   # and no real source is rejected
    assert np.isnan(np.asarray(table["FLUX_MODEL_F444W"])[explained]).all()


def test_decision_rules():
    assert is_explained(SegmentFlux(data=100.0, residual=2.0, variance=4.0), 3.0, 0.5)
    assert not is_explained(SegmentFlux(data=10.0, residual=9.0, variance=16.0), 3.0, 0.5)  # faint, alone
    assert not is_explained(SegmentFlux(data=100.0, residual=60.0, variance=4.0), 3.0, 0.5)
    # 20 left of 100 after a star's model took 80: the model's 25 % error covers it
    assert not is_explained(SegmentFlux(data=100.0, residual=20.0, variance=4.0), 3.0, 0.5)
    assert is_explained(SegmentFlux(data=100.0, residual=20.0, variance=4.0), 3.0, 0.5, 0.25)
    # a galaxy must buy more than k ln N of chi2 with its k extra shape parameters
    assert prefer_point(1000.0, 1020.0, 2000, 4, 0.0, 30.0)
    assert not prefer_point(1000.0, 1100.0, 2000, 4, 0.0, 30.0)
    assert not prefer_point(3000.0, 3100.0, 2000, 4, 0.03, 30.0)   # faint: 3 % of S/N^2 is 27
    assert prefer_point(1e5, 1.02e5, 2000, 4, 0.03, 1000.0)        # bright star, PSF mismatch


def test_psf_step_stars_are_fitted_as_points():
    # PSF_STAR (a star the PSF step selected) forces the point model, whatever the
    # galaxy fit would say: checked on an extended galaxy, which otherwise stays one
    rng = np.random.default_rng(5)
    truth = galaxy_grid(rng, 1, 1, 64, BANDS, flux_range=(800.0, 800.0))
    truth["RE"] = 0.4
    scene = make_scene(truth, (64, 64), {b: 1 for b in BANDS}, sigma=0.02, seed=6)
    cfg = load_config()
    from dja_sepp.detect import detect_sources
    sources, segmap = detect_sources(scene.detection, cfg["detection"])
    scene.detection.segmap = segmap
    sources["IN_CORE"] = np.ones(len(sources), bool)
    engine = get_engine("builtin")
    sources["PSF_STAR"] = np.zeros(len(sources), bool)
    free = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", cfg["fit"])
    sources["PSF_STAR"] = np.ones(len(sources), bool)
    forced = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", cfg["fit"])
    assert len(sources) == 1
    assert str(free["MODEL"][0]).strip() == "sersic_rg4"
    assert str(forced["MODEL"][0]).strip() == "point" and np.isfinite(forced["FLUX_MODEL_F444W"][0])
