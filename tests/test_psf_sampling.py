"""Given PSF files: sampling read from the header (ours, STPSF-style) or given,
resampled to the band grid, refused when unknown; the enclosed-energy fraction
(EEFRAC) carried through; small unit-sum stamps warned about."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from dja_sepp.psf import load_psf
from dja_sepp.psf.base import ImagePSF, resample

pytest.importorskip("galsim")

BAND = "F444W"
SCALE = 0.04


@pytest.fixture(scope="module")
def psfs(tmp_path_factory):
    """The same GalSim PSF drawn at 0.04" (the band grid) and at 0.02"."""
    from dja_sepp.sim.psf import psf_image
    out = tmp_path_factory.mktemp("psf_files")
    fine = psf_image(BAND, SCALE / 2, size=201)
    coarse = psf_image(BAND, SCALE, size=101)
    return out, fine, coarse


def _write(path, data, **cards):
    hdu = fits.PrimaryHDU(data.astype(np.float32))
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    return str(path)


@pytest.fixture(scope="module")
def stars(psfs):
    """Noisy 0.04" images of point sources at random sub-pixel offsets."""
    from dja_sepp.sim.psf import psf_model
    rng = np.random.default_rng(3)
    model = psf_model(BAND)
    out = []
    for _ in range(12):
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        img = model.drawImage(nx=61, ny=61, scale=SCALE, method="auto", offset=(dx, dy)).array
        flux = 2000.0
        out.append((flux * img + rng.normal(0, 0.05, img.shape), 30 + dx, 30 + dy, flux))
    return out


def _fit_fluxes(stamp: np.ndarray, stars) -> np.ndarray:
    """PSF-fit fluxes (photutils, core 9 x 9, positions free)."""
    from photutils.psf import ImagePSF as Model, PSFPhotometry
    c = stamp.shape[0] // 2
    phot = PSFPhotometry(Model(stamp, flux=1.0, x_0=c, y_0=c), fit_shape=(9, 9), aperture_radius=4)
    out = []
    for img, x, y, _ in stars:
        res = phot(img, error=np.full(img.shape, 0.05), init_params=Table({"x": [x], "y": [y]}))
        out.append(float(res["flux_fit"][0]))
    return np.array(out)


def test_psf_sampled_finer_than_the_band_is_resampled(psfs, stars):
    out, fine, coarse = psfs
    given = load_psf(_write(out / "fine.fits", fine, PIXSCALE=SCALE / 2, OVERSAMP=1), BAND,
                     pixel_scale=SCALE)
    right = load_psf(_write(out / "right.fits", coarse, PIXSCALE=SCALE, OVERSAMP=1), BAND,
                     pixel_scale=SCALE)
    assert given.pixel_scale == SCALE and given.stamp().shape[0] % 2 == 1
    a, b = given.stamp(), right.stamp()
    c, h = a.shape[0] // 2, b.shape[0] // 2
    assert np.unravel_index(np.argmax(a), a.shape) == (c, c)      # centred
    assert abs(a.sum() - 1) < 1e-9                                 # flux conserved
    assert abs(a[c, c] / b[h, h] - 1) < 0.05                       # same core
    f_given, f_right = _fit_fluxes(a, stars), _fit_fluxes(b, stars)
    assert abs(np.median(f_given / f_right) - 1) < 0.01
    # the old contract (band scale taken as the PSF's own) gave a PSF twice too wide
    wrong = load_psf(str(out / "fine.fits"), BAND, psf_scale=SCALE, pixel_scale=SCALE).stamp()
    assert abs(np.median(_fit_fluxes(wrong, stars) / f_right) - 1) > 0.1


def test_stpsf_style_header_is_read(psfs):
    """STPSF writes PIXELSCL (arcsec per stored sample), OVERSAMP and DET_SAMP
    (samples per detector pixel) and even-sided oversampled arrays centred
    between pixels."""
    from dja_sepp.sim.psf import psf_model
    out, _, coarse = psfs
    n = 2 * 101   # 101 detector pixels x 2
    data = psf_model(BAND).drawImage(nx=n, ny=n, scale=SCALE / 2, method="auto").array
    path = _write(out / "stpsf.fits", data, PIXELSCL=SCALE / 2, OVERSAMP=2, DET_SAMP=2,
                  FILTER=BAND, EXTNAME="OVERSAMP")
    psf = load_psf(path, BAND, pixel_scale=SCALE)
    img = psf.stamp()
    assert img.shape == (101, 101)
    ref = coarse / coarse.sum()
    assert np.max(np.abs(img - ref)) < 0.02 * ref.max()
    # without a target grid it keeps its own sampling
    assert load_psf(path, BAND).pixel_scale == pytest.approx(SCALE / 2)


def test_psf_without_sampling_is_refused_naming_the_file(psfs):
    out, _, coarse = psfs
    path = _write(out / "nosampling.fits", coarse)
    with pytest.raises(ValueError, match="nosampling.fits.*sampling unknown"):
        load_psf(path, BAND, pixel_scale=SCALE)
    # a scale given by the user is used
    assert load_psf(path, BAND, pixel_scale=SCALE, psf_scale=SCALE).stamp().shape == coarse.shape


def test_psf_coarser_than_the_band_is_refused(psfs):
    out, _, coarse = psfs
    path = _write(out / "coarse.fits", coarse, PIXSCALE=SCALE)
    with pytest.raises(ValueError, match="coarse.fits.*coarser than the band"):
        load_psf(path, BAND, pixel_scale=SCALE / 2)


def test_enclosed_energy_fraction_round_trips(psfs, tmp_path):
    _, _, coarse = psfs
    ImagePSF(coarse, SCALE, band=BAND, ee_fraction=0.87).to_fits(tmp_path / "ee.fits")
    with fits.open(tmp_path / "ee.fits") as hdul:
        assert abs(hdul[0].data.sum() - 1) < 1e-4 and hdul[0].header["EEFRAC"] == pytest.approx(0.87)
    psf = load_psf(str(tmp_path / "ee.fits"), BAND, pixel_scale=SCALE)
    assert psf.stamp().sum() == pytest.approx(0.87, abs=1e-5)
    # resampling keeps the fraction (flux-conserving)
    fine = ImagePSF(np.pad(coarse, 1), SCALE / 2, band=BAND, ee_fraction=0.9)
    fine.to_fits(tmp_path / "ee_fine.fits")
    assert load_psf(str(tmp_path / "ee_fine.fits"), BAND, pixel_scale=SCALE).stamp().sum() == \
        pytest.approx(0.9, abs=1e-5)


def test_small_unit_sum_stamp_is_warned_about_once(psfs, tmp_path):
    _, _, coarse = psfs
    c = coarse.shape[0] // 2
    path = _write(tmp_path / "small.fits", coarse[c - 17:c + 18, c - 17:c + 18], PIXSCALE=SCALE)
    with pytest.warns(UserWarning, match="small.fits.*wings"):
        load_psf(path, BAND, pixel_scale=SCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_psf(path, BAND, pixel_scale=SCALE)      # once per file
    wide = _write(tmp_path / "wide.fits", coarse, PIXSCALE=SCALE)   # 4" wide: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_psf(wide, BAND, pixel_scale=SCALE)


def test_resample_conserves_flux_and_centre():
    rng = np.random.default_rng(0)
    data = rng.random((41, 41))
    for factor in (2.0, 3.0, 2.5):
        out = resample(data, factor)
        assert out.shape[0] % 2 == 1 and out.sum() == pytest.approx(data.sum())
    delta = np.zeros((41, 41))
    delta[20, 20] = 1.0
    out = resample(delta, 2.0)
    assert np.unravel_index(np.argmax(out), out.shape) == (out.shape[0] // 2,) * 2
