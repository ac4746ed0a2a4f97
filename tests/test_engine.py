"""Built-in engine accuracy against GalSim truth (an independent simulator).

Scenes: isolated galaxies on a grid, JWST-like PSFs with spikes, Gaussian
noise; detection with our detect step, fits through the Engine API. S/N is
the fitted F444W flux over its error. Tolerances are the issue's targets.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("galsim")

from dja_sepp.fit.base import get_engine  # noqa: E402
from dja_sepp.fit.flags import FitFlag  # noqa: E402
from dja_sepp.settings import load_config  # noqa: E402
from dja_sepp.sim.scenes import detect_and_match, galaxy_grid, make_scene, robust_scatter  # noqa: E402

BANDS = ("F277W", "F444W")


@pytest.fixture(scope="module")
def cfg():
    c = load_config()
    c["detection"]["thresh"] = 1.5   # white noise here, not drizzled: fewer noise peaks
    c["fit"]["passes"] = 1           # isolated galaxies: no neighbours to refit against
    return c


def _fit(scene, cfg, model="sersic_rg4"):
    sources, nearest, found = detect_and_match(scene, cfg["detection"])
    table = get_engine("builtin").fit(sources, scene.detection, scene.bands, model, cfg["fit"])
    return table[nearest], found


@pytest.fixture(scope="module")
def sersic_fits(cfg):
    rng = np.random.default_rng(11)
    truth = galaxy_grid(rng, 6, 8, 64, BANDS, flux_range=(8.0, 800.0))
    scene = make_scene(truth, (6 * 64, 8 * 64), {b: 1 for b in BANDS}, sigma=0.02, seed=12)
    fits, found = _fit(scene, cfg)
    return truth, fits, found


def _bins(truth, fits, found):
    snr = np.asarray(fits["FLUX_MODEL_F444W"] / fits["FLUX_MODEL_F444W_err"])
    good = found & (np.asarray(fits["FLAGS"]) & int(FitFlag.ERROR | FitFlag.INSUFFICIENT_DATA) == 0)
    return {"high": good & (snr > 50), "mid": good & (snr > 20) & (snr <= 50)}


def test_every_galaxy_is_detected_and_fitted(sersic_fits):
    truth, fits, found = sersic_fits
    assert found.all()
    assert np.isfinite(np.asarray(fits["SERSIC"])).all()
    assert (np.asarray(fits["CHI2_REDUCED"]) < 1.3).mean() > 0.9


def test_sersic_accuracy_at_high_snr(sersic_fits):
    truth, fits, found = sersic_fits
    sel = _bins(truth, fits, found)["high"]
    assert sel.sum() >= 12
    for band in BANDS:
        dmag = -2.5 * np.log10(np.asarray(fits[f"FLUX_MODEL_{band}"])[sel] / truth[f"FLUX_{band}"][sel])
        assert abs(np.median(dmag)) < 0.02, band
        assert robust_scatter(dmag) < 0.05, band
    re = np.log(np.asarray(fits["RADIUS"])[sel] / truth["RE"][sel])
    n = np.log(np.asarray(fits["SERSIC"])[sel] / truth["N"][sel])
    assert robust_scatter(re) < 0.10 and robust_scatter(n) < 0.10
    assert abs(np.median(re)) < 0.05 and abs(np.median(n)) < 0.05


def test_sersic_accuracy_at_mid_snr(sersic_fits):
    truth, fits, found = sersic_fits
    sel = _bins(truth, fits, found)["mid"]
    assert sel.sum() >= 8
    re = np.log(np.asarray(fits["RADIUS"])[sel] / truth["RE"][sel])
    n = np.log(np.asarray(fits["SERSIC"])[sel] / truth["N"][sel])
    assert robust_scatter(re) < 0.25 and robust_scatter(n) < 0.25


def test_errors_describe_the_scatter(sersic_fits):
    """Where noise dominates (S/N 20-50), flux pulls have unit scatter. Above
    S/N 50 a systematic floor (~0.006 mag: PSF stamp ends at 6", neighbours'
    residual light) dominates the tiny statistical errors, as for SE++."""
    truth, fits, found = sersic_fits
    sel = _bins(truth, fits, found)["mid"]
    for band in BANDS:
        pull = (np.asarray(fits[f"FLUX_MODEL_{band}"]) - truth[f"FLUX_{band}"]) / np.asarray(
            fits[f"FLUX_MODEL_{band}_err"])
        assert 0.6 < robust_scatter(pull[sel]) < 1.6, band
        assert abs(np.median(pull[sel])) < 1.0, band


def test_mixed_grids_recover_the_single_grid_shape(cfg):
    """F150W on the 0.02" grid + F444W on 0.04" vs the same galaxies with
    F150W drawn on 0.04": both recover the truth, and mixing grids is not
    worse than one grid. (S/N ~ 700 here: statistical errors of 0.1 % are far
    below the ~2 % systematics, so the check is against truth.)"""
    rng = np.random.default_rng(5)
    bands = ("F150W", "F444W")
    truth = galaxy_grid(rng, 2, 4, 64, bands, flux_range=(300.0, 800.0))
    shape = (2 * 64, 4 * 64)
    mixed = _fit(make_scene(truth, shape, {"F150W": 2, "F444W": 1}, 0.02, seed=6), cfg)[0]
    single = _fit(make_scene(truth, shape, {"F150W": 1, "F444W": 1}, 0.02, seed=6), cfg)[0]
    for col, true in (("RADIUS", "RE"), ("SERSIC", "N"), ("AXRATIO", "Q"),
                      ("FLUX_MODEL_F150W", "FLUX_F150W"), ("FLUX_MODEL_F444W", "FLUX_F444W")):
        dev_mixed = np.abs(np.log(np.asarray(mixed[col]) / np.asarray(truth[true])))
        dev_single = np.abs(np.log(np.asarray(single[col]) / np.asarray(truth[true])))
        assert np.median(dev_mixed) < 0.03, col
        assert np.median(dev_mixed) < 1.5 * np.median(dev_single) + 0.005, col


def test_bulge_to_total_at_high_snr(cfg):
    rng = np.random.default_rng(8)
    truth = galaxy_grid(rng, 2, 5, 80, BANDS, kind="bulge+disk", flux_range=(600.0, 1500.0))
    scene = make_scene(truth, (2 * 80, 5 * 80), {b: 1 for b in BANDS}, sigma=0.02, seed=9)
    fits, found = _fit(scene, cfg, model="B+D")
    assert found.all()
    dbt = np.asarray(fits["B/T_F444W"]) - truth["BT_F444W"]
    assert np.isfinite(dbt).all()
    assert robust_scatter(dbt) < 0.1 and abs(np.median(dbt)) < 0.1


def test_a_source_without_data_is_flagged_not_fatal(cfg):
    rng = np.random.default_rng(3)
    truth = galaxy_grid(rng, 1, 2, 64, BANDS, flux_range=(300.0, 400.0))
    scene = make_scene(truth, (64, 128), {b: 1 for b in BANDS}, sigma=0.02, seed=4)
    for cut in scene.bands:   # no band data over the second galaxy
        cut.wht[:, 64:] = 0
    fits, found = _fit(scene, cfg)
    assert found.all()
    assert np.isfinite(fits["SERSIC"][0]) and fits["FLAGS"][0] & int(FitFlag.INSUFFICIENT_DATA) == 0
    assert fits["FLAGS"][1] & int(FitFlag.INSUFFICIENT_DATA)


def test_a_failed_group_stays_masked_for_its_neighbours(cfg, monkeypatch):
    """The light of a group whose fit failed was never subtracted: its pixels
    must stay masked, so its neighbour measures exactly what it measures when
    that group is left out of the fit altogether (measured: with the failed
    group's pixels unmasked the neighbour's F444W flux was 576 instead of 420)."""
    import dja_sepp.fit.engine as engine_module
    from astropy.table import Table
    truth = Table({"KIND": ["sersic", "sersic"], "X_DET": [40.3, 58.0], "Y_DET": [30.2, 44.0],
                   "N": [1.5, 1.0], "RE": [0.2, 0.15], "Q": [0.7, 0.8], "ANGLE": [20.0, 70.0]})
    for band in BANDS:
        truth[f"FLUX_{band}"] = [3000.0, 300.0]
    scene = make_scene(truth, (80, 96), {b: 1 for b in BANDS}, sigma=0.02, seed=13)
    c = {**cfg["fit"], "passes": 2, "max_group_size": 1}   # one detection, fitted source by source
    sources, nearest, found = detect_and_match(scene, {**cfg["detection"], "thresh": 8.0})
    assert found.all() and len(sources) == 2
    victim, neighbour = nearest
    real_fit = engine_module.fit_group

    def failing(mdef, starts, ranges, contexts, *args, **kw):
        if abs(contexts[0]["x"] - sources["x"][victim]) < 1e-6:
            raise RuntimeError("forced failure")
        return real_fit(mdef, starts, ranges, contexts, *args, **kw)

    monkeypatch.setattr(engine_module, "fit_group", failing)
    failed = get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4", c)
    assert failed["FLAGS"][victim] & int(FitFlag.ERROR)
    masked_sources = sources.copy()
    masked_sources["IN_CORE"][victim] = False     # not fitted: its segment stays masked
    monkeypatch.setattr(engine_module, "fit_group", real_fit)
    masked = get_engine("builtin").fit(masked_sources, scene.detection, scene.bands, "sersic_rg4",
                                       {**c, "overlap_min_snr": np.inf})
    for band in BANDS:
        assert failed[f"FLUX_MODEL_{band}"][neighbour] == pytest.approx(
            masked[f"FLUX_MODEL_{band}"][neighbour], rel=1e-9)


def test_bright_overlap_sources_are_subtracted_for_the_core(cfg):
    """A bright source outside the tile core (its row comes from the next
    tile) is fitted here too, so its wings are subtracted from its core
    neighbour, which then measures what it measures when both are in the core;
    left unfitted (masked), the wings beyond its segment bias the neighbour."""
    from astropy.table import Table
    truth = Table({"KIND": ["sersic", "sersic"], "X_DET": [40.3, 58.0], "Y_DET": [30.2, 44.0],
                   "N": [1.5, 1.0], "RE": [0.2, 0.15], "Q": [0.7, 0.8], "ANGLE": [20.0, 70.0]})
    for band in BANDS:
        truth[f"FLUX_{band}"] = [3000.0, 300.0]
    scene = make_scene(truth, (80, 96), {b: 1 for b in BANDS}, sigma=0.02, seed=13)
    c = {**cfg["fit"], "passes": 2, "max_group_size": 1}
    sources, (bright, faint), found = detect_and_match(scene, {**cfg["detection"], "thresh": 8.0})
    assert found.all() and sources["SNR"][bright] > c["overlap_min_snr"]
    engine = get_engine("builtin")
    both = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", c)
    outside = sources.copy()
    outside["IN_CORE"][bright] = False
    fitted = engine.fit(outside, scene.detection, scene.bands, "sersic_rg4", c)
    ignored = engine.fit(outside, scene.detection, scene.bands, "sersic_rg4",
                         {**c, "overlap_min_snr": np.inf})
    for band in BANDS:
        ref = both[f"FLUX_MODEL_{band}"][faint]
        assert fitted[f"FLUX_MODEL_{band}"][faint] == pytest.approx(ref, rel=0.01), band
        assert abs(ignored[f"FLUX_MODEL_{band}"][faint] / ref - 1) > 0.05, band


def _pair(cfg, xs, ys, shape, seed):
    """A galaxy and a 10x fainter one at detection pixels ``xs, ys``, their
    scene and detections (sources, the row nearest each, found)."""
    from astropy.table import Table
    truth = Table({"KIND": ["sersic", "sersic"], "X_DET": list(xs), "Y_DET": list(ys),
                   "N": [1.5, 1.0], "RE": [0.2, 0.15], "Q": [0.7, 0.8], "ANGLE": [20.0, 70.0]})
    for band in BANDS:
        truth[f"FLUX_{band}"] = [3000.0, 300.0]
    scene = make_scene(truth, shape, {b: 1 for b in BANDS}, sigma=0.02, seed=seed)
    return (scene, *detect_and_match(scene, {**cfg["detection"], "thresh": 8.0}))


def _count_fit_groups(monkeypatch) -> list:
    """Make the engine's ``fit_group`` add an item to the returned list per call."""
    import dja_sepp.fit.engine as engine_module
    real_fit, calls = engine_module.fit_group, []

    def counting(*args, **kw):
        calls.append(1)
        return real_fit(*args, **kw)
    monkeypatch.setattr(engine_module, "fit_group", counting)
    return calls


def test_second_pass_skipped_where_no_neighbour_changed_the_pixels(cfg, monkeypatch):
    """Two galaxies far apart: the other's subtracted model changes a
    window's pixels by far less than ``fit.refit_min_change`` (noise-weighted
    norm) and unmasks nothing, so the second pass keeps the first fit instead
    of refitting: fewer fits, and the fluxes of the full second pass."""
    scene, sources, nearest, found = _pair(cfg, (30.3, 130.0), (40.2, 39.0), (80, 160), 14)
    assert found.all() and len(sources) == 2
    calls = _count_fit_groups(monkeypatch)
    engine = get_engine("builtin")
    results = {}
    for change in (0.0, 0.1):
        calls.clear()
        c = {**cfg["fit"], "passes": 2, "refit_min_change": change}
        results[change] = (engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", c), len(calls))
    (full, n_full), (skipped, n_skipped) = results[0.0], results[0.1]
    assert n_skipped < n_full
    for band in BANDS:
        for row in nearest:
            assert skipped[f"FLUX_MODEL_{band}"][row] == pytest.approx(full[f"FLUX_MODEL_{band}"][row],
                                                                        rel=1e-3), band
            assert abs(skipped[f"FLUX_MODEL_{band}"][row] - full[f"FLUX_MODEL_{band}"][row]) \
                < 0.1 * full[f"FLUX_MODEL_{band}_err"][row]


def test_second_pass_refits_where_a_neighbour_was_unmasked(cfg, monkeypatch):
    """A close pair fitted source by source: the bright one's first fit had
    its neighbour masked, the second sees it subtracted (other weights), so it
    is refitted whatever ``fit.refit_min_change``: the same fits as always."""
    scene, sources, nearest, found = _pair(cfg, (40.3, 58.0), (30.2, 44.0), (80, 96), 13)
    c = {**cfg["fit"], "passes": 2, "max_group_size": 1}
    engine = get_engine("builtin")
    full = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", {**c, "refit_min_change": 0.0})
    default = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", {**c, "refit_min_change": 0.1})
    bright = nearest[0]
    for band in BANDS:
        assert default[f"FLUX_MODEL_{band}"][bright] == pytest.approx(full[f"FLUX_MODEL_{band}"][bright],
                                                                       rel=1e-9)


def test_a_row_with_a_flux_but_no_shape_is_not_drawn(cfg):
    """Rendering (neighbour subtraction, mosaics) skips a galaxy row whose
    shape is NaN instead of failing the whole chunk on it."""
    rng = np.random.default_rng(5)
    truth = galaxy_grid(rng, 1, 2, 64, BANDS, flux_range=(300.0, 400.0))
    scene = make_scene(truth, (64, 128), {b: 1 for b in BANDS}, sigma=0.02, seed=6)
    fits, found = _fit(scene, cfg)
    assert found.all()
    engine = get_engine("builtin")
    grid = scene.bands[0]
    one = engine.render(fits[:1], grid, "sersic_rg4")
    broken = fits.copy()
    for col in ("ANGLE_WORLD", "ANGLE", "SERSIC"):
        if col in broken.colnames:
            broken[col][1] = np.nan
    both = engine.render(broken, grid, "sersic_rg4")
    assert np.isfinite(both).all() and one.sum() > 0
    np.testing.assert_allclose(both, one, atol=1e-6 * one.max())


def test_a_refit_starts_from_the_first_pass_solution(cfg, monkeypatch):
    """Second-pass refits start where the group's first fit ended (kept
    inside the ranges), not from the detection's moments again: fewer
    evaluations, the same optimum."""
    import dja_sepp.fit.engine as engine_module
    scene, sources, nearest, found = _pair(cfg, (40.3, 58.0), (30.2, 44.0), (80, 96), 13)
    real_fit, calls = engine_module.fit_group, []

    def recording(model, starts, *args, **kw):
        fit = real_fit(model, starts, *args, **kw)
        calls.append((model.name, starts.copy(), fit.theta.copy(), fit.n_iter))
        return fit

    monkeypatch.setattr(engine_module, "fit_group", recording)
    c = {**cfg["fit"], "passes": 2, "max_group_size": 1, "refit_min_change": 0.0, "point_choice": False}
    get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4", c)
    assert len(calls) == 4  # two sources, two passes
    first, second = calls[:2], calls[2:]
    names = engine_module.load_model("sersic_rg4").parameter_names
    k = [names.index(p) for p in ("x", "y", "re", "n")]
    for (_, _, theta1, n1), (_, start2, theta2, n2) in zip(first, second):
        # window coordinates differ by the window origin only: compare shape parameters
        np.testing.assert_allclose(start2[0, k[2:]], theta1[0, k[2:]], rtol=0.02)
    assert sum(n for *_, n in second) < sum(n for *_, n in first)


@pytest.mark.parametrize("flux, expect", [(0.01, "half"), (0.1, "between"), (1e8, "stamp")])
def test_a_model_is_subtracted_as_far_as_its_light_matters(flux, expect):
    """The subtraction reach grows with the source's flux: half its window for
    a faint one (peak 0.04 sigma here), the PSF envelope's reach above 1e-3
    sigma for a brighter one, at most the PSF stamp and ``fit.psf_radius``."""
    from dja_sepp.fit.subtraction import model_reach
    from dja_sepp.fit.render import BandGrid
    from dja_sepp.fit.solver import BandData
    from dja_sepp.sim.psf import psf_image
    psf = psf_image("F444W", 0.04, size=151)
    psf /= psf.sum()
    shape = (40, 40)
    bd = BandData("F444W", BandGrid(shape, np.eye(2), np.zeros(2), psf, pad=30),
                  np.zeros(shape), np.full(shape, 1.0 / 0.01 ** 2))  # sigma 0.01 per pixel
    bd.meta_slice = (slice(100, 140), slice(200, 240))
    reach = model_reach(bd, flux, 150, 1e-3)
    if expect == "half":
        assert reach == 20
    elif expect == "between":
        assert 20 < reach < 75
        assert model_reach(bd, 10 * flux, 150, 1e-3) > reach
    else:
        assert reach == 107  # the stamp's corner: beyond it the PSF has no light
        assert model_reach(bd, flux, 60, 1e-3) == 60


def test_a_rendered_source_reaches_as_far_as_its_light_shows(cfg):
    """Mosaics draw a source out to where its PSF light falls below
    ``fit.subtract_below`` x its flux error: a row with a large flux error
    stays on its small window, the same row with a tiny one reaches the
    stamp's wings (a row property: every chunk draws it alike)."""
    rng = np.random.default_rng(5)
    truth = galaxy_grid(rng, 1, 1, 64, BANDS, flux_range=(300.0, 400.0))
    scene = make_scene(truth, (64, 256), {b: 1 for b in BANDS}, sigma=0.02, seed=6)
    fits, found = _fit(scene, cfg)
    assert found.all()
    grid = scene.bands[0]
    col = f"FLUX_MODEL_{grid.band}_err"

    def columns_drawn(err):
        row = fits[:1].copy()
        row[col] = err
        img = get_engine("builtin").render(row, grid, "sersic_rg4")
        return int(np.count_nonzero(np.any(img != 0, axis=0)))

    near, far = columns_drawn(1e3), columns_drawn(1e-6)
    assert near + 40 < far   # 10 r_e (the galaxy) against the PSF stamp's reach
    assert columns_drawn(np.nan) == far   # no flux error: as far as the stamp and fit.psf_radius


def test_a_refit_keeps_the_first_pass_choice_of_point_or_galaxy(cfg, monkeypatch):
    """The first pass fits a single source both as a galaxy and as a point
    and keeps the better; the second pass refits only the model it kept (the
    other trial cost 30 % of a crowded tile's fit time and never changed a
    choice there)."""
    from astropy.table import Table

    import dja_sepp.fit.engine as engine_module
    truth = Table({"KIND": ["sersic", "star"], "X_DET": [30.3, 40.2], "Y_DET": [40.0, 110.0],
                   "N": [1.5, np.nan], "RE": [0.3, np.nan], "Q": [0.6, 1.0], "ANGLE": [20.0, 0.0]})
    for band in BANDS:
        truth[f"FLUX_{band}"] = [3000.0, 300.0]
    scene = make_scene(truth, (150, 80), {b: 1 for b in BANDS}, sigma=0.02, seed=21)
    sources, nearest, found = detect_and_match(scene, {**cfg["detection"], "thresh": 8.0})
    assert found.all() and len(sources) == 2
    real_fit, calls = engine_module.fit_group, []

    def recording(model, starts, *args, **kw):
        calls.append((model.name, round(float(starts[0, 0]), 6)))
        return real_fit(model, starts, *args, **kw)

    monkeypatch.setattr(engine_module, "fit_group", recording)
    c = {**cfg["fit"], "passes": 2, "max_group_size": 1, "refit_min_change": 0.0}
    out = get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4", c)
    kept = [str(m).strip() for m in np.asarray(out["MODEL"])[nearest]]
    assert kept == ["sersic_rg4", "point"]
    assert sorted(name for name, _ in calls[:4]) == ["point", "point", "sersic_rg4", "sersic_rg4"]
    assert sorted(name for name, _ in calls[4:]) == ["point", "sersic_rg4"]   # one refit each


def test_the_final_evaluation_reuses_a_kept_one_exactly(cfg):
    """The solver keeps its last two evaluations: the final call (flux
    covariances, models) at one of them must equal a fresh computation, and
    one evicted is computed again, not taken from a stale entry."""
    from dja_sepp.fit.render import BandGrid
    from dja_sepp.fit.solver import BandData, _Problem
    from dja_sepp.models.definition import detection_context, load_model
    rng = np.random.default_rng(3)
    truth = galaxy_grid(rng, 1, 1, 64, BANDS, flux_range=(300.0, 300.0))
    scene = make_scene(truth, (64, 64), {b: 1 for b in BANDS}, sigma=0.02, seed=4)
    sources, nearest, _ = detect_and_match(scene, cfg["detection"])
    mdef = load_model("sersic_rg4")
    ctx = detection_context(sources[nearest[0]], 0.04)
    start, ranges = mdef.initial(ctx)
    bands = []
    for b in scene.bands:
        psf = b.psf.stamp()
        grid = BandGrid((64, 64), np.eye(2), np.zeros(2), psf, pad=15)
        bands.append(BandData(b.band, grid, np.asarray(b.sci, float), np.asarray(b.wht, float)))

    def problem():
        return _Problem(mdef, start[None, :], [ranges], [ctx], bands)
    kept = problem()
    z1 = kept.z0.copy()
    z2, z3 = z1 + 0.05, z1 - 0.05
    for z in (z1, z2):
        kept.evaluate(z)
    for z, seen_before in ((z1, (z2,)), (z2, (z3, z1))):
        for other in seen_before:
            kept.evaluate(other)        # z1 is kept; after z3 and z1, z2 was evicted
        got = kept.evaluate(z, final=True)
        fresh = problem().evaluate(z, final=True)
        np.testing.assert_array_equal(got[0], fresh[0])
        np.testing.assert_array_equal(got[1], fresh[1])
        for name in got[4]:
            np.testing.assert_allclose(got[4][name][0], fresh[4][name][0], rtol=1e-12)
            np.testing.assert_allclose(got[4][name][1], fresh[4][name][1], rtol=1e-12, atol=1e-300)
            np.testing.assert_array_equal(got[5][name], fresh[5][name])
        assert set(got[5]) == {b.band for b in scene.bands}


def test_a_halo_source_whose_model_cannot_reach_the_core_is_not_fitted(cfg, monkeypatch):
    """A bright halo source is fitted for its wings' sake; one whose model
    (its window grown by ``fit.psf_radius``) cannot touch any core window is
    skipped: the core's fluxes are exactly those of fitting it, for fewer fits.
    A bright halo source next to the core is still fitted."""
    from astropy.table import Table

    import dja_sepp.fit.engine as engine_module
    truth = Table({"KIND": ["sersic"] * 3, "X_DET": [30.3, 60.2, 220.0], "Y_DET": [40.2, 41.0, 40.0],
                   "N": [1.5, 1.0, 1.2], "RE": [0.15, 0.2, 0.2], "Q": [0.7, 0.8, 0.6],
                   "ANGLE": [20.0, 70.0, 10.0]})
    for band in BANDS:
        truth[f"FLUX_{band}"] = [300.0, 3000.0, 3000.0]
    scene = make_scene(truth, (80, 260), {b: 1 for b in BANDS}, sigma=0.02, seed=17)
    sources, (core, near, far), found = detect_and_match(scene, {**cfg["detection"], "thresh": 8.0})
    assert found.all() and len(sources) == 3
    sources["IN_CORE"][[near, far]] = False
    # (no detection on the residual: the unsubtracted far source's light would
    # be found there in one run and not in the other)
    c = {**cfg["fit"], "passes": 2, "max_group_size": 1, "psf_radius": 20, "residual_detection": False}
    assert min(sources["SNR"][[near, far]]) > c["overlap_min_snr"]
    calls = _count_fit_groups(monkeypatch)
    engine = get_engine("builtin")
    skipped = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", c)
    n_skipped = len(calls)
    fitted_rows = {int(r) for g in engine_module._reaching_the_core(
        engine_module._groups_to_fit(sources, np.asarray(sources["IN_CORE"]), c), sources,
        np.asarray(sources["IN_CORE"]), scene.detection.shape, 20, c) for r in g}
    assert fitted_rows == {int(core), int(near)}
    calls.clear()
    monkeypatch.setattr(engine_module, "_reaching_the_core", lambda groups, *a: groups)
    every = engine.fit(sources, scene.detection, scene.bands, "sersic_rg4", c)
    assert n_skipped < len(calls)
    for band in BANDS:
        assert skipped[f"FLUX_MODEL_{band}"][core] == every[f"FLUX_MODEL_{band}"][core], band


def test_flux_least_squares_through_qr_match_lstsq_and_pinv():
    """The solver's QR least squares (run without the GIL) give lstsq's solution
    and pinv's covariance, also for nearly and exactly rank-deficient designs
    (two identical templates: lstsq's minimum-norm solution)."""
    from dja_sepp.fit.solver import _flux_cov, _qr_solve, _thin_qr
    rng = np.random.default_rng(4)
    a = rng.normal(size=(500, 3))
    b = rng.normal(size=(500, 2))
    assert np.allclose(_qr_solve(*_thin_qr(a), b, a), np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-10, atol=1e-12)
    assert np.allclose(_flux_cov(a, np.ones(3), False), np.linalg.pinv(a.T @ a), rtol=1e-10, atol=1e-14)
    twin = np.column_stack([a[:, 0], a[:, 0], a[:, 1]])
    x = _qr_solve(*_thin_qr(twin), b, twin)
    assert np.all(np.isfinite(x))
    assert np.allclose(x, np.linalg.lstsq(twin, b, rcond=None)[0], atol=1e-10)
    assert np.allclose(_flux_cov(twin, np.ones(3), False), np.linalg.pinv(twin.T @ twin), atol=1e-10)
    # nearly degenerate (two templates differing by 1e-8 .. 1e-11 of the noise, cond 1e8 .. 1e11): the same
    # cut-offs as before, so the flux errors do not jump with rounding
    for eps in (1e-8, 1e-9, 1e-11):
        near = np.column_stack([a[:, 0], a[:, 0] + eps * a[:, 2], a[:, 1]])
        assert np.allclose(_flux_cov(near, np.ones(3), False), np.linalg.pinv(near.T @ near), rtol=1e-6, atol=1e-10)
        assert np.allclose(_qr_solve(*_thin_qr(near), b, near), np.linalg.lstsq(near, b, rcond=None)[0],
                           rtol=1e-6, atol=1e-6)
    # a constrained fit's zero fluxes are left out of the covariance (NaN rows and columns)
    cov = _flux_cov(a, np.array([1.0, 0.0, 2.0]), True)
    assert np.isnan(cov[1]).all() and np.allclose(cov[np.ix_([0, 2], [0, 2])], np.linalg.pinv(a[:, [0, 2]].T @ a[:, [0, 2]]))
