"""Render PSF-convolved profiles and their derivatives on a band's pixels.

A profile is defined on the detection frame; a band sees it through the local
affine map ``band = A @ det + t`` of its WCS (so 0.02" and 0.04" grids, or any
rotation, work alike). Each band pixel gets the profile's *mean over the
pixel* by supersampling, refined towards the centre where the profile is steep
(Sersic cusps), and the stamp is convolved with the PSF in one batched real
FFT together with its derivative images.

The PSF images are effective PSFs (optics convolved with the pixel, as stars
and PSFEx give them). Convolving a pixel-averaged profile with them would
apply the pixel twice, so the kernel is the PSF's transform divided by the
pixel transfer function ``sinc(fx) sinc(fy)``: the model is then exactly the
profile convolved with the effective PSF, sampled at pixel centres.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft

from .kernels import sersic_box
from .profiles import N_GEOMETRY, _norm_terms, polygon_flux, sersic

__all__ = ["BandGrid", "psf_kernel", "render_profile", "render_point", "supersample"]


@dataclass
class BandGrid:
    """A window of one band where models are rendered.

    Attributes
    ----------
    shape : (ny, nx)
        Window shape (band pixels).
    affine : ndarray (2, 2)
        ``A``: band pixel offsets per detection pixel offset (x, y order).
    shift : ndarray (2,)
        ``t``: band window position of the detection cutout origin.
    psf : ndarray
        Effective PSF on the band's pixels (odd sides, unit sum over its full
        stamp; cropping for the kernel does not renormalise it, so fitted fluxes
        stay total fluxes).
    pad : int
        Half-width of the PSF kernel (its wings reach this far).
    margin : int
        Width rendered around the window: profile light just outside the
        window that the PSF scatters in (a few pixels suffice).
    """

    shape: tuple[int, int]
    affine: np.ndarray
    shift: np.ndarray
    psf: np.ndarray
    pad: int
    margin: int = 6
    _kernels: dict = field(default_factory=dict, repr=False)

    @property
    def det_affine(self) -> float:
        return float(abs(np.linalg.det(self.affine)))

    def to_band(self, x: float, y: float) -> np.ndarray:
        return self.affine @ np.array([x, y]) + self.shift

    @property
    def fft_shape(self) -> tuple[int, int]:
        # rendered region = window + margin on each side; the PSF spreads it
        # by ``pad``, which must not wrap around onto the window
        ny, nx = self.shape
        m = self.margin
        return (sfft.next_fast_len(ny + 2 * m + self.pad, real=True),
                sfft.next_fast_len(nx + 2 * m + self.pad, real=True))

    def kernel(self, divide_pixel: bool = True) -> np.ndarray:
        key = (self.fft_shape, divide_pixel)
        if key not in self._kernels:
            self._kernels[key] = psf_kernel(self.psf, self.fft_shape, self.pad, divide_pixel)
        return self._kernels[key]


def psf_kernel(psf: np.ndarray, fft_shape: tuple[int, int], half: int,
               divide_pixel: bool = True) -> np.ndarray:
    """rfft2 of the PSF cropped to ``2 half + 1`` and centred on pixel (0, 0),
    divided by the pixel transfer function when ``divide_pixel``."""
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    hy, hx = min(half, cy), min(half, cx)
    crop = psf[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1]
    # fold the kernel onto the FFT grid (it may be wider than the grid): with
    # the grid >= rendered region + half, the folded wings never reach the window
    iy = np.arange(-hy, hy + 1) % fft_shape[0]
    ix = np.arange(-hx, hx + 1) % fft_shape[1]
    big = np.zeros(fft_shape)
    np.add.at(big, (iy[:, None], ix[None, :]), crop)
    k = sfft.rfft2(big)
    if divide_pixel:
        fy = sfft.fftfreq(fft_shape[0])[:, None]
        fx = sfft.rfftfreq(fft_shape[1])[None, :]
        k = k / (np.sinc(fy) * np.sinc(fx))
    return k


def _offsets(os: int) -> np.ndarray:
    return (np.arange(os) + 0.5) / os - 0.5


def supersample(func, y0: int, x0: int, ny: int, nx: int, os: int):
    """Mean of ``func(X, Y)`` over each pixel of a box, ``os x os`` samples per pixel.

    ``func`` returns ``(value, derivatives or None)`` on arrays of band
    coordinates; the result has shape ``(ny, nx)`` (and ``(k, ny, nx)``).
    """
    off = _offsets(os)
    ys = (np.arange(y0, y0 + ny)[:, None] + off[None, :]).ravel()
    xs = (np.arange(x0, x0 + nx)[:, None] + off[None, :]).ravel()
    val, der = func(xs[None, :], ys[:, None])
    val = val.reshape(ny, os, nx, os).mean(axis=(1, 3))
    if der is not None:
        der = der.reshape(der.shape[0], ny, os, nx, os).mean(axis=(2, 4))
    return val, der


def render_profile(grid: BandGrid, x0: float, y0: float, re: float, q: float, phi: float,
                   n: float, derivatives: bool = True, oversample: int | None = None):
    """Unit-flux Sersic (detection-frame geometry) convolved with the band PSF.

    The profile is averaged over sub-pixels (``oversample`` per band pixel,
    refined further towards the centre); its transform at the band's own
    frequencies is taken from that fine grid, where aliasing of the cusp is
    negligible, divided by the sub-pixel response, multiplied by the PSF's
    transform and brought back to band pixels.

    Returns
    -------
    model : ndarray (ny, nx)
    dmodel : ndarray (6, ny, nx) or None
        Derivatives with respect to ``x0, y0`` (detection pixels), ``log re``,
        ``q``, ``phi``, ``n``.
    """
    ainv = np.linalg.inv(grid.affine)
    jac = 1.0 / grid.det_affine
    cb = grid.to_band(x0, y0) + grid.margin  # centre on the rendered grid (band pixels)
    re_band = re * np.sqrt(grid.det_affine * q)  # circularised radius, band pixels
    if oversample is None:
        oversample = choose_oversampling(re_band, n)
    fo = int(oversample)
    c0 = -0.5 + 0.5 / fo  # band coordinate of the first fine pixel's centre

    ny, nx = (grid.shape[0] + 2 * grid.margin) * fo, (grid.shape[1] + 2 * grid.margin) * fo
    re_fine = re_band * fo
    b, log_norm, dlog_norm_dn, db_dn = _norm_terms(float(n))
    img = np.empty((ny, nx))
    der = np.empty((N_GEOMETRY, ny, nx)) if derivatives else np.empty((N_GEOMETRY, 1, 1))

    def fill(y_lo, y_hi, x_lo, x_hi, os):
        sub = np.empty((y_hi - y_lo, x_hi - x_lo))
        dsub = np.empty((N_GEOMETRY,) + sub.shape) if derivatives else der
        sersic_box(sub, dsub, y_lo, x_lo, os, c0, float(fo), cb[0], cb[1], ainv, re, q, phi, n,
                   b, log_norm, dlog_norm_dn, db_dn, jac, derivatives)
        img[y_lo:y_hi, x_lo:x_hi] = sub
        if derivatives:
            der[:, y_lo:y_hi, x_lo:x_hi] = dsub

    # One sample per fine pixel is enough where the profile is smooth on that
    # scale; boxes around the centre are resampled ever finer (the cusp).
    fill(0, ny, 0, nx, 1)
    ic, jc = (int(np.floor((cb[1] - c0) * fo + 0.5)), int(np.floor((cb[0] - c0) * fo + 0.5)))
    for half, os in ((int(min(2 * re_fine + 2, 16)), 4), (2, 16)):
        y_lo, y_hi = max(ic - half, 0), min(ic + half + 1, ny)
        x_lo, x_hi = max(jc - half, 0), min(jc + half + 1, nx)
        if y_hi > y_lo and x_hi > x_lo:
            fill(y_lo, y_hi, x_lo, x_hi, os)
    if not derivatives:
        der = None
    _exact_cusp(img, ic, jc, fo, c0, cb, grid.affine, re, q, phi, n)
    return _convolve_fine(grid, img, der, fo, c0)


def _exact_cusp(img, ic, jc, fo, c0, cb, affine, re, q, phi, n) -> None:
    """Replace the 3x3 fine pixels around the centre by their exact flux."""
    ainv = np.linalg.inv(affine)
    area = (1.0 / fo) ** 2  # fine pixel area in band pixels
    ii, jj = np.mgrid[ic - 1:ic + 2, jc - 1:jc + 2]
    keep = (ii >= 0) & (ii < img.shape[0]) & (jj >= 0) & (jj < img.shape[1])
    ii, jj = ii[keep], jj[keep]
    xb = c0 + (jj[:, None] + np.array([-0.5, 0.5, 0.5, -0.5])) / fo - cb[0]
    yb = c0 + (ii[:, None] + np.array([-0.5, -0.5, 0.5, 0.5])) / fo - cb[1]
    corners = np.stack([ainv[0, 0] * xb + ainv[0, 1] * yb, ainv[1, 0] * xb + ainv[1, 1] * yb], -1)
    img[ii, jj] = polygon_flux(n, re, q, phi, corners) / area


def choose_oversampling(re_band: float, n: float) -> int:
    """Sub-pixels per band pixel needed for ~1e-3 accuracy (measured against
    GalSim, see tests/test_render.py): compact or cuspy profiles need 3."""
    if re_band >= 4 and n <= 2.5:
        return 1
    return 2


def _convolve_fine(grid: BandGrid, img: np.ndarray, der: np.ndarray | None, fo: int, c0: float):
    # float32 transforms: twice as fast, and 1e-7 precision is plenty here.
    # Position derivatives are not transformed: they are the exact gradient of
    # the rendered image (Fourier shift theorem), cusp correction included.
    stack = (img[None] if der is None else np.concatenate([img[None], der[2:]], axis=0)).astype(np.float32)
    Ny, Nx = grid.fft_shape
    spec = sfft.rfft2(stack, s=(Ny * fo, Nx * fo))
    if fo > 1:  # keep the band's own frequencies
        hy = Ny // 2
        spec = np.concatenate([spec[:, :hy + 1, :Nx // 2 + 1],
                               spec[:, Ny * fo - (Ny - hy - 1):, :Nx // 2 + 1]], axis=1)
    fy = sfft.fftfreq(Ny)[:, None]
    fx = sfft.rfftfreq(Nx)[None, :]
    # fine-sample positions start at c0; the sub-pixel response is sinc(f / fo)
    factor = np.exp(-2j * np.pi * (fx + fy) * c0) / (fo * fo * np.sinc(fy / fo) * np.sinc(fx / fo))
    kern = (factor * grid.kernel(divide_pixel=False)).astype(np.complex64)
    spec = spec * kern
    if der is not None:
        gx, gy = 2j * np.pi * fx * spec[0], 2j * np.pi * fy * spec[0]  # d/d(band x, y)
        a = grid.affine
        spec = np.concatenate([spec[:1], [-(gx * a[0, 0] + gy * a[1, 0]),
                                          -(gx * a[0, 1] + gy * a[1, 1])], spec[1:]], axis=0)
    out = sfft.irfft2(spec, s=(Ny, Nx)).astype(np.float64)
    ny, nx = grid.shape
    p = grid.margin
    out = out[:, p:p + ny, p:p + nx]
    return out[0], (out[1:] if der is not None else None)


def render_point(grid: BandGrid, x0: float, y0: float, derivatives: bool = True):
    """Unit-flux point source: the effective PSF shifted to the position.

    Returns the image and derivatives with respect to ``x0, y0`` (detection
    pixels), padded with zeros to ``N_GEOMETRY`` rows for a uniform interface.
    """
    cb = grid.to_band(x0, y0) + grid.margin
    fy = sfft.fftfreq(grid.fft_shape[0])[:, None]
    fx = sfft.rfftfreq(grid.fft_shape[1])[None, :]
    phase = np.exp(-2j * np.pi * (fx * cb[0] + fy * cb[1]))
    spec = grid.kernel(divide_pixel=False) * phase
    stack = [spec]
    if derivatives:
        gx, gy = -2j * np.pi * fx * spec, -2j * np.pi * fy * spec  # d/d(band x), d/d(band y)
        a = grid.affine
        stack += [-(gx * a[0, 0] + gy * a[1, 0]), -(gx * a[0, 1] + gy * a[1, 1])]
    out = sfft.irfft2(np.array(stack), s=grid.fft_shape)
    ny, nx = grid.shape
    p = grid.margin
    out = out[:, p:p + ny, p:p + nx]
    if not derivatives:
        return out[0], None
    der = np.zeros((N_GEOMETRY, ny, nx))
    der[0], der[1] = -out[1], -out[2]
    return out[0], der
