"""Sources on the edge of a band's coverage: flagged, no absurd fluxes (issue 17)."""
from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from newcomer import write_tiny_field

from dja_sepp.fit.base import BandCutout
from dja_sepp.fit.coverage import source_coverage
from dja_sepp.fit.flags import FitFlag

PARTIAL = int(FitFlag.PARTIAL_COVERAGE)


def test_coverage_is_the_share_of_the_segment_light_on_band_data():
    det = np.zeros((20, 40))
    det[5:15, 5:15] = 1.0            # source 1: 10 x 10 flat
    det[5:15, 25:35] = 1.0           # source 2
    det[8:12, 28:32] = 10.0          # ... with a bright core
    seg = np.zeros(det.shape, int)
    seg[5:15, 5:15], seg[5:15, 25:35] = 1, 2
    wht = np.ones((40, 80))          # a band on a 2x finer grid
    wht[:, :20] = 0                  # blank left of detection x = 10 (3/10 of source 1)
    wht[:, 60:] = 0                  # blank right of detection x = 30 (source 2's core half)
    cut = BandCutout("DETECTION", det, np.ones_like(det), WCS(naxis=2), segmap=seg)
    band = BandCutout("F200W", np.zeros_like(wht), wht, WCS(naxis=2))
    sources = Table({"x": [9.5, 29.5], "y": [9.5, 9.5], "SEGMENT_ID": [1, 2]})
    affine = (np.eye(2) * 2.0, np.array([0.5, 0.5]))
    cov = source_coverage(sources, cut, band, affine)
    assert abs(cov[0] - 0.5) < 1e-3   # columns 5..9 of 5..14 have data
    light = det[5:15, 25:35]
    assert abs(cov[1] - light[:, :5].sum() / light.sum()) < 1e-3


def _blank(images, band, cols):
    """Zero science and weight of ``band`` over ``cols`` x rows ``rows``."""
    for kind in ("sci", "wht"):
        path = next(images.glob(f"*-{band.lower()}-clear_drc_{kind}.fits"))
        with fits.open(path, mode="update") as hdul:
            hdul[0].data[cols] = 0.0


def test_partial_coverage_is_flagged_and_low_coverage_fluxes_are_nan(tmp_path):
    """F200W (0.02") blank left of the first source's centre by 1 sigma (84 %
    of its light covered: flagged, flux kept) and right of the fourth's
    centre (37 % covered: flagged, F200W flux NaN); the others untouched."""
    import dja_sepp
    images, psf_args = write_tiny_field(tmp_path)
    _blank(images, "F200W", (slice(None), slice(0, 118)))        # detection x <= 58
    _blank(images, "F200W", (slice(0, 160), slice(359, None)))   # detection x >= 180, y < 80
    psfs = dict(a.split("=", 1) for a in psf_args[1::2])
    result = dja_sepp.run(images, tmp_path / "run", psfs=psfs, workers=1, mosaic=False,
                          progress=False, tiling__tile_size=10.0, tiling__overlap=2.0,
                          fit__passes=1)
    cat = result.catalog
    for name in cat.colnames:   # NaN is read back from FITS as masked
        if cat[name].dtype.kind == "f":
            cat[name] = np.ma.filled(np.ma.asarray(cat[name], float), np.nan)
    assert result.complete and len(cat) == 4, cat
    x = np.asarray(cat["X_IMAGE"]) - 1

    def row(x0):
        return cat[int(np.argmin(np.abs(x - x0)))]

    edge, cut_off, inside = row(60.0), row(180.0), row(100.0)
    assert edge["FLAGS"] & PARTIAL and 0.7 < edge["COVERAGE_F200W"] < 0.95
    assert np.isfinite(edge["FLUX_MODEL_F200W"]) and edge["FLUX_MODEL_F200W"] > 0
    assert cut_off["FLAGS"] & PARTIAL and cut_off["COVERAGE_F200W"] < 0.5
    for col in ("FLUX_MODEL_F200W", "FLUX_MODEL_F200W_err", "MAG_MODEL_F200W"):
        assert np.isnan(cut_off[col]), col
    assert np.isfinite(cut_off["FLUX_MODEL_F444W"]) and cut_off["COVERAGE_F444W"] == 1.0
    assert not inside["FLAGS"] & PARTIAL and inside["COVERAGE_F200W"] == 1.0
    # every flux reported is sane: within 5 sigma of positive (no -3887 +- 6572)
    for band in ("F200W", "F444W"):
        f, e = np.asarray(cat[f"FLUX_MODEL_{band}"]), np.asarray(cat[f"FLUX_MODEL_{band}_err"])
        ok = np.isfinite(f)
        assert (f[ok] > 0).all() and (e[ok] < f[ok]).all(), (band, f, e)


def test_every_fit_flag_is_in_the_readme_flag_table():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `FLAGS` |")]
    for flag in FitFlag:
        assert any(f"| {int(flag)} | `{flag.name}` |" in row for row in rows), flag.name
