"""A PSF that varies over the field (PSFEx polynomial) is evaluated where
each source is, in the fit and in the rendered models."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dja_sepp.detect import detect_sources
from dja_sepp.fit.base import BandCutout, get_engine
from dja_sepp.psf import load_psf

SHAPE = (64, 600)                 # band pixels; the PSF width changes along x
SCALE = 0.04
XS = np.array([30.0, 150.0, 300.0, 450.0, 570.0])
FLUX = 5000.0


def _gauss(sigma, n=25):
    yy, xx = np.indices((n, n)) - n // 2
    g = np.exp(-0.5 * (xx ** 2 + yy ** 2) / sigma ** 2)
    return g / g.sum()


def _write_psfex(path, narrow=1.0, wide=2.2):
    """A degree-1 PSFEx file: a narrow PSF at the left edge, a wide one at
    the right (coefficients [1, dx, dy], dx = -1 .. +1 across the image)."""
    a, b = _gauss(narrow), _gauss(wide)
    basis = np.stack([(a + b) / 2, (b - a) / 2, np.zeros_like(a)]).astype(np.float32)
    col = fits.Column(name="PSF_MASK", format=f"{basis.size}E", dim=f"({25}, {25}, 3)", array=basis[None])
    hdu = fits.BinTableHDU.from_columns([col], name="PSF_DATA")
    h = hdu.header
    h["PSF_SAMP"], h["POLNAXIS"], h["POLDEG1"] = 1.0, 2, 1
    h["POLZERO1"], h["POLSCAL1"] = (SHAPE[1] + 1) / 2.0, SHAPE[1] / 2.0
    h["POLZERO2"], h["POLSCAL2"] = (SHAPE[0] + 1) / 2.0, SHAPE[0] / 2.0
    h["EEFRAC"] = 1.0
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return str(path)


def _field(psf, rng):
    """Stars drawn with the PSF of their own position; white noise."""
    img = np.zeros(SHAPE)
    for x in XS:
        stamp = psf.stamp(x=x, y=SHAPE[0] / 2)
        h = stamp.shape[0] // 2
        y0 = int(SHAPE[0] / 2)
        img[y0 - h:y0 + h + 1, int(x) - h:int(x) + h + 1] += FLUX * stamp
    sigma = 0.5
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix = [53.0, -27.8], [SHAPE[1] / 2, SHAPE[0] / 2]
    wcs.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
    sci = (img + rng.normal(0, sigma, SHAPE)).astype(np.float32)
    return sci, np.full(SHAPE, 1 / sigma ** 2, np.float32), wcs


def _fit(sci, wht, wcs, psf):
    cut = BandCutout("F200W", sci, wht, wcs, pixel_scale=SCALE, psf=psf, wavelength=2.0)
    det = BandCutout("DETECTION", sci, wht, wcs, pixel_scale=SCALE)
    sources, det.segmap = detect_sources(det, {"thresh": 5.0})
    sources["IN_CORE"] = np.ones(len(sources), bool)
    table = get_engine("builtin").fit(sources, det, [cut], "point", {"passes": 1})
    order = np.argsort(np.asarray(sources["x"]))
    return table[order], cut


@pytest.fixture(scope="module")
def variable(tmp_path_factory):
    path = _write_psfex(tmp_path_factory.mktemp("vpsf") / "F200W.psf")
    psf = load_psf(path, band="F200W", pixel_scale=SCALE)
    sci, wht, wcs = _field(psf, np.random.default_rng(5))
    return path, psf, sci, wht, wcs


def test_fluxes_do_not_depend_on_the_position(variable):
    _, psf, sci, wht, wcs = variable
    assert psf.variable
    table, _ = _fit(sci, wht, wcs, psf)
    flux = np.asarray(table["FLUX_MODEL_F200W"], float)
    assert len(flux) == len(XS)
    assert np.max(np.abs(flux / FLUX - 1)) < 0.01, flux


def test_the_field_centre_psf_alone_would_bias_the_edges(variable):
    path, _, sci, wht, wcs = variable
    centre = load_psf(path, band="F200W", pixel_scale=SCALE)
    centre.degree, centre.variable = 0, False      # the old behaviour: one PSF for all
    table, _ = _fit(sci, wht, wcs, centre)
    flux = np.asarray(table["FLUX_MODEL_F200W"], float)
    assert np.max(np.abs(flux / FLUX - 1)) > 0.03   # so the test above can fail


def test_rendered_models_follow_the_psf_across_the_field(variable):
    _, psf, sci, wht, wcs = variable
    table, cut = _fit(sci, wht, wcs, psf)
    model = get_engine("builtin").render(table, cut, "point")
    resid = (sci - model) * np.sqrt(wht)
    for x in XS:   # the residual around each star is noise
        box = resid[22:42, int(x) - 10:int(x) + 10]
        assert np.std(box) < 1.3, (x, np.std(box))
