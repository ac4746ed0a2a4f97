"""Detection on the residual of the fitted models (``fit.residual_detection``)."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table, vstack
from astropy.wcs import WCS

from dja_sepp.detect import DetectionFlag
from dja_sepp.detect.residual import detect_residual, grid_factor, residual_cutout
from dja_sepp.io.cutout import BandCutout
from dja_sepp.settings import load_config


def test_grid_factor_finds_aligned_grids_only():
    eye = np.eye(2)
    assert grid_factor((eye, np.array([0.0, 0.0]))) == (1, 0, 0)
    assert grid_factor((eye, np.array([3.0, -2.0]))) == (1, -2, 3)
    # 0.02" band under a 0.04" detection grid: pixel centre (0, 0) -> (0.5, 0.5)
    assert grid_factor((2 * eye, np.array([0.5, 0.5]))) == (2, 0, 0)
    assert grid_factor((2 * eye, np.array([0.3, 0.5]))) is None
    rot = np.array([[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]])
    assert grid_factor((rot, np.zeros(2))) is None
    assert grid_factor((1.5 * eye, np.zeros(2))) is None


def test_block_sums_of_a_model_box_land_on_their_detection_pixels():
    from dja_sepp.detect.residual import _add_blocks
    target = np.zeros((6, 6))
    img = np.arange(1.0, 13.0).reshape(3, 4)          # band rows 3-5, columns 5-8 (not block-aligned)
    _add_blocks(target, img, (slice(3, 6), slice(5, 9)), 2, 0, 0)
    assert target.sum() == pytest.approx(img.sum())
    assert target[1, 2] == pytest.approx(1.0)           # band (3, 5) alone: rows 2-3, columns 4-5
    assert target[2, 2] == pytest.approx(5.0 + 9.0)     # band (4, 5) and (5, 5)
    assert target[2, 4] == pytest.approx(8.0 + 12.0)    # band (4, 8) and (5, 8)
    edge = np.zeros((2, 2))                             # a box partly off the grid is clipped
    _add_blocks(edge, np.ones((4, 4)), (slice(2, 6), slice(-2, 2)), 2, 0, 0)
    assert edge.sum() == pytest.approx(4.0) and edge[1, 0] == pytest.approx(4.0)


def _cutout(name, sci, wht):
    return BandCutout(name, sci.astype(np.float32), wht.astype(np.float32), WCS(naxis=2), pixel_scale=0.04)


def test_residual_cutout_sums_blocks_and_discounts_bright_models():
    det = _cutout("DETECTION", np.zeros((10, 10)), np.ones((10, 10)))
    work = np.zeros((20, 20))
    work[4:6, 6:8] = 1.0                       # a source left in the residual: det pixel (2, 3)
    model = np.zeros((20, 20))
    model[10:12, 10:12] = 100.0                # a fitted model, subtracted: det pixel (5, 5)
    band = _cutout("F150W", work + model, np.full((20, 20), 4.0))
    ignore = np.zeros((10, 10), bool)
    ignore[0, 0] = True
    points = {"F150W": [((slice(10, 12), slice(10, 12)), np.full((2, 2), 100.0))]}   # a star's model there
    res = residual_cutout(det, [band], {"F150W": work}, {"F150W": (2 * np.eye(2), np.array([0.5, 0.5]))},
                          tolerance=0.1, ignore=ignore, points=points, point_tolerance=1.0)
    assert res.sci[2, 3] == pytest.approx(4.0)            # flux of the 2 x 2 block
    assert res.sci[5, 5] == pytest.approx(0.0)
    assert res.wht[1, 1] == pytest.approx(1.0)            # 4 pixels of variance 1/4
    assert res.wht[5, 5] == pytest.approx(1.0 / (1.0 + (0.1 * 400.0) ** 2 + 400.0 ** 2))
    assert res.wht[0, 0] == 0.0
    # no band on the detection grid (rotated): nothing to detect on
    rot = np.array([[0.99, -0.14], [0.14, 0.99]])
    assert residual_cutout(det, [band], {"F150W": work}, {"F150W": (rot, np.zeros(2))}, 0.1) is None


@pytest.fixture(scope="module")
def hidden_pairs():
    """Bright galaxies, each with a faint one 0.45-0.55" away that deblending
    does not split from it (white noise, two bands on the detection grid)."""
    pytest.importorskip("galsim")
    from dja_sepp.sim.scenes import detect_and_match, make_scene
    rng = np.random.default_rng(21)
    n, spacing = 8, 96
    bx = (np.arange(n) % 4 + 0.5) * spacing + rng.uniform(-0.5, 0.5, n)
    by = (np.arange(n) // 4 + 0.5) * spacing + rng.uniform(-0.5, 0.5, n)
    sep, phi = rng.uniform(11, 14, n), rng.uniform(0, 2 * np.pi, n)
    t = Table()
    t["KIND"] = ["sersic"] * (2 * n)
    t["X_DET"] = np.r_[bx, bx + sep * np.cos(phi)]
    t["Y_DET"] = np.r_[by, by + sep * np.sin(phi)]
    t["N"] = np.r_[rng.uniform(1.5, 3.0, n), np.ones(n)]
    t["RE"] = np.r_[rng.uniform(0.3, 0.4, n), np.full(n, 0.1)]
    t["Q"] = np.r_[rng.uniform(0.6, 0.9, n), np.full(n, 0.8)]
    t["ANGLE"] = rng.uniform(0, 180, 2 * n)
    for band in ("F277W", "F444W"):
        t[f"FLUX_{band}"] = np.r_[np.full(n, 500.0), np.full(n, 12.0)]
    scene = make_scene(t, (2 * spacing, 4 * spacing), {"F277W": 1, "F444W": 1}, sigma=0.01, seed=4)
    cfg = load_config()
    cfg["detection"]["thresh"] = 1.5   # white noise
    sources, nearest, found = detect_and_match(scene, cfg["detection"])
    sources["IN_CORE"] = np.ones(len(sources), bool)
    scene.detection.meta["detection"] = cfg["detection"]
    return scene, sources, nearest, found, cfg


def _fit(hidden_pairs, **options):
    from dja_sepp.fit.base import get_engine
    scene, sources, _, _, cfg = hidden_pairs
    return get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4",
                                     {**cfg["fit"], **options})


def _bright_dmag(table, sources, truth, n):
    x = np.asarray(sources["x"], float)
    y = np.asarray(sources["y"], float)
    d = np.hypot(x[None, :] - np.asarray(truth["X_DET"][:n])[:, None],
                 y[None, :] - np.asarray(truth["Y_DET"][:n])[:, None])
    rows = np.argmin(d, axis=1)
    assert (d[np.arange(n), rows] < 2).all()
    return -2.5 * np.log10(np.asarray(table["FLUX_MODEL_F277W"], float)[rows] / truth["FLUX_F277W"][:n])


def test_hidden_neighbours_are_found_on_the_residual_and_stop_biasing_their_hosts(hidden_pairs):
    scene, sources, nearest, found, _ = hidden_pairs
    truth, n = scene.truth, len(scene.truth) // 2
    hidden = ~found[n:] | np.isin(nearest[n:], nearest[:n])
    assert hidden.sum() >= 5          # deblending left most of them inside their host
    off = _fit(hidden_pairs, residual_detection=False)
    on = _fit(hidden_pairs)
    assert "RESIDUAL_SOURCES" not in off.meta and len(off) == len(sources)
    new = on.meta["RESIDUAL_SOURCES"]
    assert len(on) == len(sources) + len(new)
    assert (np.asarray(new["FLAGS_DET"]) & int(DetectionFlag.RESIDUAL)).all()
    assert len(set(new["SEGMENT_ID"]) & set(sources["SEGMENT_ID"])) == 0
    seg = on.meta["RESIDUAL_SEGMAP"]
    for row in new:
        assert seg[int(round(row["y"])), int(round(row["x"]))] == row["SEGMENT_ID"]
    # the new rows are the hidden neighbours, fitted
    d = np.hypot(np.asarray(new["x"])[:, None] - np.asarray(truth["X_DET"][n:])[None, :],
                 np.asarray(new["y"])[:, None] - np.asarray(truth["Y_DET"][n:])[None, :])
    assert (d.min(axis=1) < 2).mean() >= 0.8
    assert (d.min(axis=0)[hidden] < 2).mean() >= 0.6
    fitted_new = np.asarray(on["FLUX_MODEL_F277W"][len(sources):], float)
    assert np.isfinite(fitted_new).all() and np.median(fitted_new) > 6.0
    # their hosts no longer take their light
    before = _bright_dmag(off, sources, truth, n)
    after = _bright_dmag(on, vstack([sources, new], metadata_conflicts="silent"), truth, n)
    assert np.median(before) < -0.01
    assert abs(np.median(after)) < 0.5 * abs(np.median(before)), (before, after)


def test_residual_sources_outside_the_core_are_left_to_the_tile_that_owns_them(hidden_pairs):
    scene, sources, _, _, _ = hidden_pairs
    shape = scene.detection.shape
    core = (slice(0, shape[0]), slice(0, shape[1] // 2))
    scene.detection.meta["core"] = core
    try:
        on = _fit(hidden_pairs)
    finally:
        del scene.detection.meta["core"]
    new = on.meta["RESIDUAL_SOURCES"]
    assert len(new) and (np.asarray(new["x"]) < shape[1] // 2 - 0.5).all()


def test_detect_residual_keeps_away_from_detected_sources():
    rng = np.random.default_rng(3)
    img = rng.normal(0, 1.0, (60, 60))
    yy, xx = np.mgrid[:60, :60]
    img += 40 * np.exp(-((xx - 20) ** 2 + (yy - 30) ** 2) / 4.0)   # a known source's mismatch
    img += 40 * np.exp(-((xx - 42) ** 2 + (yy - 30) ** 2) / 4.0)   # a new one
    det = _cutout("DETECTION", np.zeros((60, 60)), np.ones((60, 60)))
    det.segmap = np.zeros((60, 60), np.int32)
    det.segmap[25:35, 15:25] = 7
    res = _cutout("RESIDUAL", img, np.ones((60, 60)))
    known = Table({"x": [20.2], "y": [29.9], "SEGMENT_ID": [7]})
    cfg = {**load_config()["detection"], "thresh": 3.0}
    new, seg = detect_residual(det, res, known, cfg, min_separation=2.0)
    assert len(new) == 1 and abs(new["x"][0] - 42) < 0.5
    assert new["SEGMENT_ID"][0] == 8 and new["PARENT_ID"][0] == 8
    assert seg[30, 42] == 8 and seg[30, 20] == 7


def _field_with_a_hidden_neighbour(folder):
    """``write_field``'s noise images with a bright round galaxy and, 9
    detection pixels (0.36") from it, a faint compact one that detection
    does not split from it (Gaussian profiles through the Gaussian PSF files)."""
    from astropy.io import fits
    from fieldfiles import gaussian_psf_args, write_field
    images = write_field(folder / "images")
    for path in sorted(images.glob("*_sci.fits")):
        with fits.open(path, mode="update") as hdul:
            data = hdul[0].data
            f = data.shape[0] // 160      # band pixels per detection pixel
            yy, xx = np.mgrid[:data.shape[0], :data.shape[1]]
            for x, y, peak, sigma in ((100.0, 80.0, 150.0, 3.0), (109.0, 80.0, 15.0, 1.0)):
                cx, cy = (x + 0.5) * f - 0.5, (y + 0.5) * f - 0.5
                s = np.hypot(sigma * f, 2.0)          # the PSF files' sigma: 2 band pixels
                data += peak * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s ** 2))
    psf_args = gaussian_psf_args(folder)
    return images, dict(a.split("=", 1) for a in psf_args[1::2])


def test_a_run_catalogs_the_hidden_neighbour_with_its_flag_and_takes_its_light_off_the_host(tmp_path):
    import json

    import dja_sepp
    images, psfs = _field_with_a_hidden_neighbour(tmp_path)
    runs = {}
    for on in (False, True):
        runs[on] = dja_sepp.run(images, tmp_path / f"run_{on}", psfs=psfs, workers=1, mosaic=False,
                                progress=False, tiling__tile_size=10.0, tiling__overlap=2.0,
                                fit__residual_detection=on)
    off, on = runs[False].catalog, runs[True].catalog
    assert len(off) == 1                              # detection: one source
    assert len(on) == 2 and len(set(on["ID"])) == 2
    flagged = (np.asarray(on["FLAGS_DET"]) & int(DetectionFlag.RESIDUAL)) > 0
    assert flagged.tolist().count(True) == 1
    new, host = on[flagged][0], on[~flagged][0]
    assert abs(new["X_IMAGE"] - 110.0) < 1.0 and abs(new["Y_IMAGE"] - 81.0) < 1.0   # 1-based
    assert np.isfinite(new["RA_MODEL"]) and new["FLUX_MODEL_F444W"] > 5 * new["FLUX_MODEL_F444W_err"]
    # the light the new row has is light its host no longer takes
    given = off["FLUX_MODEL_F444W"][0] - host["FLUX_MODEL_F444W"]
    assert given > 0.5 * new["FLUX_MODEL_F444W"]
    status = [json.loads(p.read_text()) for p in (tmp_path / "run_True" / "tiles").glob("*/status.json")]
    assert sum(s.get("n_residual_sources", 0) for s in status) == 1


def test_a_residual_source_must_be_seen_in_two_thirds_of_the_bands():
    from types import SimpleNamespace

    from dja_sepp.fit.residual_pass import ResidualPass

    def significant(snr, noise=None):
        state = SimpleNamespace(det=SimpleNamespace(meta={"noise_correlation": noise or {}}),
                                fit_snr={0: snr}, opts={"residual_min_snr": 5.0, "residual_band_snr": 2.5})
        return ResidualPass._significant(state, 0)

    assert significant({"F277W": 10.0, "F356W": 10.0, "F444W": 0.5})
    assert not significant({"F277W": 0.5, "F356W": 0.5, "F444W": 9.0})     # one band only
    assert not significant({"F277W": 2.6, "F356W": 2.6, "F444W": 2.6})     # S/N 4.5 in all
    # flux errors times the band's correlated-noise factor
    assert significant({"F277W": 6.0, "F356W": 6.0, "F444W": 6.0}, {"F277W": 2.0, "F356W": 2.0})
    assert not significant({"F277W": 6.0, "F356W": 6.0, "F444W": 6.0}, {"F277W": 3.0, "F356W": 3.0})


def test_dropped_residual_sources_leave_no_row_and_give_their_pixels_back(hidden_pairs):
    scene, sources, _, _, _ = hidden_pairs
    n = len(scene.truth) // 2
    off = _fit(hidden_pairs, residual_detection=False)
    strict = _fit(hidden_pairs, residual_band_snr=1e4)
    assert "RESIDUAL_SOURCES" not in strict.meta and len(strict) == len(sources)
    before = _bright_dmag(off, sources, scene.truth, n)
    after = _bright_dmag(strict, sources, scene.truth, n)
    assert np.all(np.abs(after - before) < 0.01), (before, after)
