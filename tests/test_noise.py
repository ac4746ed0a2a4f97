"""Flux errors on drizzle-like correlated noise: the per-band factor the tile
step measures makes the engine's flux errors describe the real scatter."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("galsim")

from dja_sepp.detect import detect_sources  # noqa: E402
from dja_sepp.fit.base import get_engine  # noqa: E402
from dja_sepp.pipeline.tile_task import _band_noise, _scale_flux_errors  # noqa: E402
from dja_sepp.settings import load_config  # noqa: E402
from dja_sepp.sim.noise import correlated_normal, noise_correlation_factor  # noqa: E402
from dja_sepp.sim.scenes import galaxy_grid, make_scene, robust_scatter  # noqa: E402

BANDS = ("F277W", "F444W")
WIDTH = 2.0          # drizzle drop width: noise of large sums 2.67x the weight map's prediction
SIGMA = 0.02


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(31)
    # ~28 pulls at S/N 10-50 per band: a robust scatter of so few is uncertain by
    # ~0.2, so the width is judged on both bands pooled
    truth = galaxy_grid(rng, 8, 8, 40, BANDS, flux_range=(12.0, 35.0))
    shape = (8 * 40, 8 * 40)
    scene = make_scene(truth, shape, {b: 1 for b in BANDS}, sigma=1e-6, seed=32)
    for cut in scene.bands:    # replace the white noise by correlated noise of the same pixel sigma
        cut.sci = (cut.sci + SIGMA * correlated_normal(rng, shape, WIDTH)).astype(np.float32)
        cut.wht = np.full(shape, 1 / SIGMA ** 2, np.float32)
    scene.detection.sci = np.mean([c.sci for c in scene.bands], axis=0).astype(np.float32)
    scene.detection.wht = np.full(shape, len(BANDS) / SIGMA ** 2, np.float32)
    cfg = load_config()
    sources, segmap = detect_sources(scene.detection, cfg["detection"])
    scene.detection.segmap = segmap
    sources["IN_CORE"] = np.ones(len(sources), bool)
    table = get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4",
                                      {**cfg["fit"], "passes": 1})
    d = np.hypot(np.asarray(sources["x"])[:, None] - np.asarray(truth["X_DET"])[None, :],
                 np.asarray(sources["y"])[:, None] - np.asarray(truth["Y_DET"])[None, :])
    rows = d.argmin(0)[d.min(0) < 2.0]
    trues = np.flatnonzero(d.min(0) < 2.0)
    noise = {c.band: _band_noise(c, scene.detection) for c in scene.bands}
    return truth[trues], table[rows], noise


def _pulls(truth, table, band):
    flux, err = np.asarray(table[f"FLUX_MODEL_{band}"]), np.asarray(table[f"FLUX_MODEL_{band}_err"])
    snr = flux / err
    sel = (snr > 10) & (snr <= 50)
    return (flux - np.asarray(truth[f"FLUX_{band}"]))[sel] / err[sel]


def test_band_factor_is_measured(fitted):
    _, _, noise = fitted
    for band in BANDS:
        assert noise[band] == pytest.approx(noise_correlation_factor(WIDTH), rel=0.05)


def test_flux_error_pulls_have_unit_width(fitted):
    truth, table, noise = fitted
    white = {b: robust_scatter(_pulls(truth, table, b)) for b in BANDS}
    corrected = table.copy()
    _scale_flux_errors(corrected, noise)
    pooled = []
    for band in BANDS:
        pulls = _pulls(truth, corrected, band)
        assert len(pulls) >= 25
        assert white[band] > 1.5, band       # weight-map errors alone are far too small
        pooled.append(pulls)
    assert 0.8 <= robust_scatter(np.concatenate(pooled)) <= 1.25
