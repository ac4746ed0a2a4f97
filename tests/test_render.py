"""The renderer against GalSim (an independent code) on the same profile and PSF.

Reference: GalSim Sersic with tight GSParams, convolved with the same PSF image
(InterpolatedImage, Lanczos-7) and sampled at pixel centres ('no_pixel': the
PSF image already holds the pixel response, as in our convention). Lanczos-7
itself differs from the band-limited PSF by 4-9e-4 of the peak (a point
source), which is the floor of these comparisons.

GalSim's Sersic stops at n = 6.2; the grid of shapes up to n = 8 is compared
with the profile's exact transform (GalSim's, stored in
data/sersic_hankel.txt) times the PSF's, on a large periodic grid: no
Lanczos floor there.

The goal (issue 11) is 1e-3 of the peak everywhere. Fluxes inside the window
fall short by up to 1e-3 for extended high-n profiles: the renderer keeps the
profile light within ``margin`` (6 px) of the window only, and the PSF wings
would scatter a little more in.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import fft as sfft
from scipy.interpolate import CubicSpline

galsim = pytest.importorskip("galsim")

from dja_sepp.fit.render import BandGrid, render_point, render_profile  # noqa: E402
from dja_sepp.sim.psf import psf_image  # noqa: E402

GSP = galsim.GSParams(folding_threshold=1e-4, maxk_threshold=1e-5, kvalue_accuracy=1e-7,
                      maximum_fft_size=16384)
TRANSFORMS = Path(__file__).parent / "data" / "sersic_hankel.txt"
TABLE_NS = (4.0, 6.2, 8.0)  # columns of TRANSFORMS after kappa

# n, re (px, semi-major), q, flux tolerance; the peak tolerance is 1e-3 for all
# (measured 3.0-4.4e-4, was 4.5e-4 to 1.5e-2 before the exact core)
CASES = [
    (0.5, 2.0, 0.7, 1e-4),
    (1.0, 5.0, 0.1, 1e-4),
    (1.0, 0.5, 0.5, 1e-4),
    (2.0, 1.0, 0.3, 1e-4),
    (4.0, 3.0, 0.4, 6e-4),
    (4.0, 30.0, 0.6, 1e-3),
    (6.0, 10.0, 0.2, 1e-3),
    (6.0, 0.7, 0.5, 2e-4),
    (6.2, 0.5, 0.1, 1e-4),
    (6.2, 1.0, 0.1, 2e-4),
]


@pytest.fixture(scope="module")
def psf():
    return psf_image("F444W", 0.04, size=61)


def _galsim(psf, n, re, q, phi, shape, centre):
    gal = galsim.Sersic(n=n, half_light_radius=re * np.sqrt(q), gsparams=GSP)
    gal = gal.shear(q=q, beta=phi * galsim.radians)
    kernel = galsim.InterpolatedImage(galsim.ImageD(psf, scale=1.0), x_interpolant="lanczos7",
                                      gsparams=GSP)
    return galsim.Convolve(gal, kernel).drawImage(
        nx=shape[1], ny=shape[0], scale=1.0, method="no_pixel",
        center=galsim.PositionD(centre[0] + 1, centre[1] + 1)).array


def _stamp(re):
    size = int(min(max(8 * re, 40), 301)) | 1
    return (size, size), (size // 2 + 0.3, size // 2 - 0.2)


def _render(psf, n, re, q, phi, shape, centre):
    grid = BandGrid(shape, np.eye(2), np.zeros(2), psf, pad=30, margin=6)
    return render_profile(grid, centre[0], centre[1], re, q, phi, n, derivatives=False)[0]


@pytest.mark.parametrize("n, re, q, flux_tol", CASES)
def test_sersic_matches_galsim(psf, n, re, q, flux_tol):
    shape, centre = _stamp(re)
    ref = _galsim(psf, n, re, q, 0.6, shape, centre)
    img = _render(psf, n, re, q, 0.6, shape, centre)
    assert np.abs(img - ref).max() / ref.max() < 1e-3
    assert abs(img.sum() / ref.sum() - 1) < flux_tol


@pytest.fixture(scope="module")
def transforms():
    """``n -> spline of F(log kappa)`` and ``F(0)``: GalSim's unit-Sersic transforms."""
    tab = np.loadtxt(TRANSFORMS)
    kappa = tab[:, 0]
    cols = dict(zip(TABLE_NS, tab[:, 1:].T))
    cols[1.0] = _galsim_transform(1.0, kappa)  # cheap enough to take live
    return kappa, {n: (CubicSpline(np.log(kappa[1:]), f[1:]), f[0]) for n, f in cols.items()}


def _galsim_transform(n, kappa):
    prof = galsim.Sersic(n=n, half_light_radius=1.0, gsparams=galsim.GSParams(kvalue_accuracy=1e-8))
    return np.array([prof.kValue(k, 0.0).real for k in kappa])


def _exact(psf, kappa_nodes, spline, f0, re, q, phi, shape, centre, big=512):
    """The profile's transform times the PSF's, on a ``big`` periodic grid, at
    the stamp's pixel centres. The wings beyond ``big / 2`` fold back as a faint
    pedestal: 4e-5 of the peak at n = 8, re = 20 px (but +0.8 % of the stamp's
    flux, so fluxes are not compared here)."""
    fy, fx = sfft.fftfreq(big)[:, None], sfft.rfftfreq(big)[None, :]
    ku = np.cos(phi) * fx + np.sin(phi) * fy
    kv = -np.sin(phi) * fx + np.cos(phi) * fy
    kappa = 2 * np.pi * re * np.sqrt(ku ** 2 + (q * kv) ** 2)
    low = kappa < kappa_nodes[1]
    f = np.where(low, f0, spline(np.log(np.where(low, kappa_nodes[1], kappa))))
    off = (big - shape[0]) // 2
    phase = np.exp(-2j * np.pi * (fx * (centre[0] + off) + fy * (centre[1] + off)))
    h = psf.shape[0] // 2
    kern = np.zeros((big, big))
    kern[np.ix_(np.arange(-h, h + 1) % big, np.arange(-h, h + 1) % big)] = psf
    img = sfft.irfft2(f * phase * sfft.rfft2(kern), s=(big, big))
    return img[off:off + shape[0], off:off + shape[1]]


def test_transform_table_is_galsims(transforms):
    """The stored n = 8 column is GalSim's Hankel integrator, which matches
    GalSim's own Sersic transform where that exists (to 7e-7 of the flux: the
    Sersic's high-k asymptotic form; the integrator is the exact one there,
    ``(1 + (k / b_1)^2)^-1.5`` for n = 1)."""
    kappa, splines = transforms
    k = np.array([0.5, 3.0, 40.0])
    hankel = galsim.integ.hankel(_unit_sersic(1.0), k, rel_err=1e-8, abs_err=1e-11)
    np.testing.assert_allclose(hankel, _galsim_transform(1.0, k), atol=1e-6)
    b1 = 1.6783469900166612
    np.testing.assert_allclose(hankel, (1 + (k / b1) ** 2) ** -1.5, atol=1e-9)
    np.testing.assert_allclose(splines[8.0][0](np.log(k[:1])),
                               galsim.integ.hankel(_unit_sersic(8.0), k[:1], rel_err=1e-8,
                                                   abs_err=1e-11), atol=1e-7)


def _unit_sersic(n):
    from scipy import special
    b = special.gammaincinv(2 * n, 0.5)
    log_norm = np.log(2 * np.pi * n) + b - 2 * n * np.log(b) + special.gammaln(2 * n)
    return lambda r: 2 * np.pi * np.exp(-b * (np.asarray(r) ** (1 / n) - 1) - log_norm)


@pytest.mark.parametrize("n", [1.0, 4.0, 6.2, 8.0])
def test_sersic_grid_matches_exact_transform(psf, transforms, n):
    """Peak error < 1e-3 for q down to 0.1 and re from 1 to 20 px, n up to 8."""
    kappa, splines = transforms
    for q in (1.0, 0.3, 0.1):
        for re in (1.0, 5.0, 20.0):
            shape, centre = _stamp(re)
            ref = _exact(psf, kappa, *splines[n], re, q, 0.6, shape, centre)
            img = _render(psf, n, re, q, 0.6, shape, centre)
            assert np.abs(img - ref).max() / ref.max() < 1e-3, (q, re)


def test_band_affine_maps_shape_between_grids(psf):
    """A profile defined on the 0.04" detection grid, rendered on a 0.02" grid
    through the affine map, equals GalSim drawing it at twice the size."""
    psf_sw = psf_image("F200W", 0.02, size=81)
    n, re, q, phi = 1.5, 3.0, 0.5, 0.3
    shape, centre = (121, 121), (60.4, 59.7)         # on the fine grid
    ref = _galsim(psf_sw, n, 2 * re, q, phi, shape, centre)
    affine = 2.0 * np.eye(2)                         # detection px -> band px
    shift = np.array(centre) - affine @ np.array([30.0, 30.0])
    grid = BandGrid(shape, affine, shift, psf_sw, pad=40, margin=6)
    img, _ = render_profile(grid, 30.0, 30.0, re, q, phi, n, derivatives=False)
    direct, _ = render_profile(BandGrid(shape, np.eye(2), np.zeros(2), psf_sw, pad=40, margin=6),
                               centre[0], centre[1], 2 * re, q, phi, n, derivatives=False)
    np.testing.assert_allclose(img, direct, atol=1e-6 * direct.max())  # the map is exact
    assert np.abs(img - ref).max() / ref.max() < 3e-3                  # measured 2.4e-3
    assert abs(img.sum() / ref.sum() - 1) < 1e-3


def test_derivatives_match_finite_differences(psf):
    """Analytic shape derivatives and Fourier-gradient position derivatives.

    Steps of 1e-3 because transforms run in float32; 1 % because the core's
    derivative tables are interpolated linearly (measured 0.2-0.6 %; it was
    6 % while the cusp was refined on boxes that followed the centre).
    """
    for affine, args in ((np.eye(2), [20.3, 19.8, 3.0, 0.6, 0.4, 2.5]),   # x, y, re, q, phi, n
                         (2 * np.eye(2), [10.3, 9.8, 1.5, 0.6, 0.4, 4.0]),
                         (np.eye(2), [20.3, 19.8, 1.0, 0.15, 0.4, 8.0])):
        grid = BandGrid((41, 41), affine, np.zeros(2), psf, pad=20, margin=6)
        _, der = render_profile(grid, *args)
        for k in range(len(args)):
            up, down = list(args), list(args)
            h = 1e-3
            if k == 2:  # the re derivative is with respect to log re
                up[k], down[k] = args[k] * np.exp(h), args[k] * np.exp(-h)
            else:
                up[k], down[k] = args[k] + h, args[k] - h
            num = (render_profile(grid, *up, derivatives=False)[0]
                   - render_profile(grid, *down, derivatives=False)[0]) / (2 * h)
            assert np.abs(der[k] - num).max() < 0.01 * np.abs(num).max(), k


def test_point_source_is_the_psf(psf):
    grid = BandGrid((41, 41), np.eye(2), np.zeros(2), psf, pad=30, margin=6)
    img, _ = render_point(grid, 20.0, 20.0, derivatives=False)
    c = psf.shape[0] // 2
    np.testing.assert_allclose(img, psf[c - 20:c + 21, c - 20:c + 21] / psf.sum(), atol=1e-6)


def test_bands_on_one_grid_share_a_profile_spectrum():
    """Two bands on the same pixel grid (same window) share the profile's
    transform: convolving it with each band's PSF gives what each band's own
    render gives, and the spectrum key tells them from another grid."""
    from dja_sepp.fit.render import convolve_spectrum, profile_spectrum, spectrum_key
    psf_a = psf_image("F200W", 0.04, size=41)
    psf_b = psf_image("F444W", 0.04, size=41)
    shape = (48, 52)
    ga = BandGrid(shape, np.eye(2), np.zeros(2), psf_a, pad=20)
    gb = BandGrid(shape, np.eye(2), np.zeros(2), psf_b, pad=20)
    gc = BandGrid(shape, 2 * np.eye(2), np.zeros(2), psf_b, pad=20)
    assert spectrum_key(ga) == spectrum_key(gb) != spectrum_key(gc)
    args = (24.3, 23.6, 3.0, 0.6, 0.4, 2.5)
    spec = profile_spectrum(ga, *args)
    for grid in (ga, gb):
        img, der = convolve_spectrum(grid, spec)
        own, own_der = render_profile(grid, *args)
        np.testing.assert_allclose(img, own, atol=1e-7 * own.max())
        np.testing.assert_allclose(der, own_der, atol=1e-6 * np.abs(own_der).max())
    # and the two PSFs do give different images (the test can fail)
    assert np.abs(convolve_spectrum(ga, spec)[0] - convolve_spectrum(gb, spec)[0]).max() > 0.01 * img.max()


def test_psf_reach_is_the_outermost_pixel_at_the_level():
    """Subtraction and mosaics draw a model as far as its PSF light reaches a
    level: a spike pixel far out counts, whatever lies inside it."""
    from dja_sepp.fit.render import psf_reach
    psf = np.zeros((101, 101))
    psf[50, 50] = 1.0
    psf[50, 50 + 30] = 1e-3     # a spike pixel 30 px out
    psf[50 + 10, 50] = 1e-4
    assert psf_reach(psf, 1e-3) == 30
    assert psf_reach(psf, 1e-4) == 30
    assert psf_reach(psf, 2e-3) == 0
    assert psf_reach(psf, 2.0) == 0
    psf[0, 0] = -1e-2           # negative wings (noise) count by their size
    assert psf_reach(psf, 1e-2) == int(np.ceil(np.hypot(50, 50)))


@pytest.mark.parametrize("affine, re, q, phi, n", [
    (np.eye(2), 3.0, 0.6, 0.7, 2.5),
    (np.array([[2.0, 0.1], [-0.05, 2.0]]), 1.5, 0.2, 2.0, 6.0),   # a 0.02" band, rotated a little
    (2 * np.eye(2), 10.0, 1.0, 0.0, 0.6),
])
def test_fused_core_spectrum_equals_the_reference(affine, re, q, phi, n):
    """The numba pass that adds the core's transform and its 4 derivatives
    into a single-precision spectrum gives the readable numpy reference
    (:func:`core_spectrum`) to float32 precision, and refuses a spectrum
    that cannot hold them (it writes without bounds checks)."""
    from dja_sepp.fit.core import add_core_spectrum, core_matrix, core_plan, core_spectrum
    from dja_sepp.fit.profiles import _norm_terms
    from dja_sepp.fit.render import _band_frequencies
    Ny, Nx = 101, 108
    fy, fx = _band_frequencies(Ny, Nx)
    rho_c, _ = core_plan(core_matrix(affine, re, q, phi), 30.0)
    args = (affine, np.array([40.3, 37.8]), re, q, phi, n, rho_c, _norm_terms(n))
    ref, dref = core_spectrum(fy, fx, *args, derivatives=True)
    spec = np.zeros((5, Ny, Nx // 2 + 1), np.complex64)
    spec[0] = 1.0   # added to, not overwritten
    add_core_spectrum(spec, fy, fx, *args, derivatives=True)
    np.testing.assert_allclose(spec[0], ref + 1.0, atol=2e-7 * np.abs(ref).max() + 2e-7)
    for k in range(4):
        np.testing.assert_allclose(spec[1 + k], dref[k], atol=2e-7 * np.abs(dref[k]).max())
    with pytest.raises(ValueError, match="cannot hold"):
        add_core_spectrum(np.zeros((1, Ny, Nx // 2 + 1), np.complex64), fy, fx, *args, derivatives=True)
