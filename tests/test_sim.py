"""The GalSim field simulator: DJA naming, aligned grids, flux truth, PSF, blank band."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

galsim = pytest.importorskip("galsim")

from dja_sepp.io.field import Field
from dja_sepp.sim import psf_image, simulate_field


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """One isolated galaxy, no noise, no blank band."""
    out = tmp_path_factory.mktemp("exact")
    return simulate_field(out, field="ex", size_arcsec=10.0, bands=("F200W", "F444W"), n_galaxies=0,
                          n_stars=0, extra_positions=[(120.3, 130.6)], blank=None, noise=False,
                          gzip=False, seed=5)


def test_files_are_dja_named_and_grids_aligned(exact):
    fld = Field.from_directory(exact.images_dir)  # raises if grids are not aligned
    assert fld.name == "ex" and list(fld.bands) == ["F200W", "F444W"]
    assert fld.bands["F200W"].shape == (500, 500) and fld.bands["F444W"].shape == (250, 250)
    hdr = fits.getheader(exact.images_dir / "ex-f200w-clear_drc_sci.fits")
    assert hdr["FILTER"] == "F200W" and hdr["ZP"] == pytest.approx(28.9)


def test_image_sums_equal_truth_fluxes(exact):
    truth = Table.read(exact.truth_path)
    for band in ("F200W", "F444W"):
        data = fits.getdata(exact.images_dir / f"ex-{band.lower()}-clear_drc_sci.fits")
        # the Airy wings beyond the 5" half-width of the image hold ~1-2% of the light
        assert 0.97 < data.sum() / truth[f"FLUX_{band}"][0] < 1.0


def test_source_position_on_both_grids(exact):
    truth = Table.read(exact.truth_path)
    for band, f in (("F200W", 2), ("F444W", 1)):
        data = fits.getdata(exact.images_dir / f"ex-{band.lower()}-clear_drc_sci.fits").astype(float)
        yy, xx = np.mgrid[:data.shape[0], :data.shape[1]]
        w = np.clip(data, 0, None)
        xc, yc = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        assert xc == pytest.approx((truth["X_DET"][0] + 0.5) * f - 0.5, abs=0.15 * f)
        assert yc == pytest.approx((truth["Y_DET"][0] + 0.5) * f - 0.5, abs=0.15 * f)
    # RA/Dec of the truth follow the detection WCS
    wcs = WCS(fits.getheader(exact.images_dir / "ex-ir_drc_sci.fits"))
    x, y = wcs.world_to_pixel_values(truth["RA"][0], truth["DEC"][0])
    assert (x, y) == pytest.approx((120.3, 130.6), abs=1e-6)


def test_psf_grows_with_wavelength_and_has_spikes():
    def fwhm(img, scale):
        return 2 * np.sqrt(np.count_nonzero(img >= img.max() / 2) / np.pi) * scale
    short, long_ = psf_image("F150W", 0.01, size=121), psf_image("F444W", 0.01, size=121)
    assert fwhm(long_, 0.01) > 2.2 * fwhm(short, 0.01)
    # six spikes: flux at radius r along the spike directions beats the azimuthal median
    img = psf_image("F200W", 0.02, size=101)
    c, r = 50, 25
    ang = np.radians(np.arange(0, 360, 1.0))
    ring = img[np.round(c + r * np.sin(ang)).astype(int), np.round(c + r * np.cos(ang)).astype(int)]
    spikes = [ring[int(a)] for a in (0, 60, 120, 180, 240, 300)]
    assert np.median(spikes) > 3 * np.median(ring)


def test_blank_band_noise_detection_and_determinism(tmp_path):
    kw = dict(field="bl", size_arcsec=6.0, bands=("F200W", "F277W", "F444W"), n_galaxies=0,
              n_stars=0, blank=("F200W", 0.5), gzip=False, seed=9)
    sim = simulate_field(tmp_path / "a", **kw)
    sci = fits.getdata(sim.images_dir / "bl-f200w-clear_drc_sci.fits")
    wht = fits.getdata(sim.images_dir / "bl-f200w-clear_drc_wht.fits")
    assert (sci[:, :150] == 0).all() and (wht[:, :150] == 0).all() and (wht[:, 150:] > 0).all()
    # detection = inverse-variance weighted mean of the long-wave bands
    bands = {b: (fits.getdata(sim.images_dir / f"bl-{b}-clear_drc_sci.fits").astype(float),
                 fits.getdata(sim.images_dir / f"bl-{b}-clear_drc_wht.fits").astype(float))
             for b in ("f277w", "f444w")}
    num = sum(s * w for s, w in bands.values())
    den = sum(w for _, w in bands.values())
    det = fits.getdata(sim.images_dir / "bl-ir_drc_sci.fits")
    np.testing.assert_allclose(det, num / den, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fits.getdata(sim.images_dir / "bl-ir_drc_wht.fits"), den, rtol=1e-5)
    # the noise matches the weight map (an empty field: galaxy light would add to it)
    right = (sci[:, 150:] * np.sqrt(wht[:, 150:])).ravel()
    assert 1.4826 * np.median(np.abs(right - np.median(right))) == pytest.approx(1.0, rel=0.05)
    again = simulate_field(tmp_path / "b", **kw)
    np.testing.assert_array_equal(fits.getdata(again.images_dir / "bl-f277w-clear_drc_sci.fits"),
                                  fits.getdata(sim.images_dir / "bl-f277w-clear_drc_sci.fits"))


# --- correlated (drizzle-like) noise -------------------------------------------------------------

def _box_sum_ratio(sim, band, box):
    """RMS of sums over ``box`` x ``box`` pixel boxes / the weight map's white-noise prediction,
    and the per-pixel std in units of the weight map's sigma."""
    stem = sim.images_dir / f"{sim.field}-{band.lower()}-clear_drc"
    sci = fits.getdata(f"{stem}_sci.fits").astype(float)
    var = 1.0 / fits.getdata(f"{stem}_wht.fits").astype(float)
    n = sci.shape[0] // box * box
    sums = sci[:n, :n].reshape(n // box, box, n // box, box).sum(axis=(1, 3))
    pred = np.sqrt(var[:n, :n].reshape(n // box, box, n // box, box).sum(axis=(1, 3)))
    per_pixel = (sci / np.sqrt(var)).ravel()
    return float(np.std(sums / pred)), float(np.std(per_pixel))


@pytest.fixture(scope="module")
def noise_fields(tmp_path_factory):
    """Empty 24" F444W fields: white and drizzle-correlated (drop 1.5 px) noise, same seed."""
    kw = dict(size_arcsec=24.0, bands=("F444W",), n_galaxies=0, n_stars=0, blank=None,
              gzip=False, seed=11)
    out = tmp_path_factory.mktemp("noise")
    return {w: simulate_field(out / str(w), field="nz", correlated_noise=w, **kw) for w in (None, 1.5)}


def test_correlated_noise_keeps_pixel_sigma_and_inflates_aperture_sums(noise_fields):
    from dja_sepp.sim.noise import noise_correlation_factor
    white, corr = noise_fields[None], noise_fields[1.5]
    assert white.noise_correlation["F444W"] == 1.0
    factor = corr.noise_correlation["F444W"]
    assert factor == pytest.approx(2.0) == noise_correlation_factor(1.5)
    r_white, s_white = _box_sum_ratio(white, "F444W", 24)
    r_corr, s_corr = _box_sum_ratio(corr, "F444W", 24)
    # per pixel the weight map is right in both cases ...
    assert s_white == pytest.approx(1.0, rel=0.02) and s_corr == pytest.approx(1.0, rel=0.03)
    # ... but 24 x 24 px sums are noisier than it predicts by the documented factor
    assert r_white == pytest.approx(1.0, rel=0.1)
    assert r_corr == pytest.approx(factor, rel=0.1)
    assert Table.read(corr.truth_path).meta["NC_F444W"] == pytest.approx(2.0)


def test_drizzle_kernel():
    from dja_sepp.sim.noise import drizzle_kernel_1d, noise_correlation_factor
    np.testing.assert_allclose(drizzle_kernel_1d(1.0), [1.0])
    w = drizzle_kernel_1d(2.0)        # overlaps 0.5, 1, 0.5
    np.testing.assert_allclose(w / w[1], [0.5, 1.0, 0.5])
    assert np.sum(w ** 2) == pytest.approx(1.0)
    assert noise_correlation_factor(None) == 1.0
    assert noise_correlation_factor(1.25) == pytest.approx(1.5625 / 1.03125)
    with pytest.raises(ValueError):
        drizzle_kernel_1d(0.5)


# --- crowded, realistic population -----------------------------------------------------------------

def test_crowded_population_counts_sizes_and_stars():
    from dja_sepp.sim.population import crowded_population
    rng = np.random.default_rng(3)
    n_pix = 3000                       # 120" = 4 arcmin^2: enough galaxies for the trends
    t = crowded_population(rng, n_pix, ("F200W", "F444W"), density=150.0, mag_limit=28.0,
                           n_stars=20, bright_stars=4)
    gal, star = t[t["KIND"] != "star"], t[t["KIND"] == "star"]
    assert len(gal) == 600 and len(star) == 20
    assert gal["MAG_REF"].max() <= 28.0 and gal["MAG_REF"].min() >= 20.0
    counts, _ = np.histogram(gal["MAG_REF"], bins=[24, 25, 26, 27, 28])
    assert (np.diff(counts) > 0).all()                      # counts rise towards faint mags
    med = [np.median(gal["RE"][(gal["MAG_REF"] > m) & (gal["MAG_REF"] < m + 2)]) for m in (22, 24, 26)]
    assert med[0] > med[1] > med[2]                         # sizes shrink with mag
    assert ((star["MAG_REF"] >= 19.5) & (star["MAG_REF"] <= 21.0)).sum() == 4
    assert ((t["X_DET"] > 0) & (t["X_DET"] < n_pix) & (t["Y_DET"] > 0) & (t["Y_DET"] < n_pix)).all()
    assert set(t["KIND"]) == {"sersic", "bulge+disk", "star"}
    # blends: some galaxies have a neighbour within 0.8"
    xy = np.c_[gal["X_DET"], gal["Y_DET"]] * 0.04
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert (d.min(axis=1) < 0.8).sum() >= 0.1 * len(gal)


def test_crowded_field_renders_and_scores_itself(tmp_path):
    """A small crowded field: truth written, the truth table scores perfectly against itself."""
    from dja_sepp.sim.score import score_catalog
    sim = simulate_field(tmp_path, field="cw", size_arcsec=12.0, bands=("F200W", "F444W"),
                         density=150.0, n_stars=2, bright_stars=1, blank=None, gzip=False, seed=2,
                         correlated_noise=1.25)
    truth = Table.read(sim.truth_path)
    assert (np.asarray(truth["KIND"]).astype(str) == "star").sum() == 2 and len(truth) == 8
    assert sim.noise_correlation["F200W"] == pytest.approx(1.5625 / 1.03125)
    cat = Table({"RA": truth["RA"], "DEC": truth["DEC"]})
    for b in ("F200W", "F444W"):
        cat[f"FLUX_MODEL_{b}"], cat[f"FLUX_MODEL_{b}_err"] = truth[f"FLUX_{b}"], truth[f"FLUX_{b}"] / 100
    s = score_catalog(cat, truth)
    assert s.purity == 1.0 and s.n_matched == len(truth) and s.reference_band == "F444W"


def test_bright_star_stamp_holds_its_wings():
    """A star's stamp holds its spikes and rings: >= 99.8 % of the light even on the 0.02" grid."""
    from dja_sepp.sim.field import render_sources
    from dja_sepp.sim.psf import psf_model
    t = Table({"KIND": ["star"], "X_DET": [350.0], "Y_DET": [350.0], "ANGLE": [0.0],
               "FLUX_F200W": [1e4]})
    assert render_sources(t, "F200W", (1400, 1400), 0.02, 2, psf_model("F200W")).sum() / 1e4 > 0.998
