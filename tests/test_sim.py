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
