"""Render PSF-convolved profiles and their derivatives on a band's pixels.

A profile is defined on the detection frame; a band sees it through the local
affine map ``band = A @ det + t`` of its WCS (so 0.02" and 0.04" grids, or any
rotation, work alike). A Sersic is split by a smooth taper into its core and
the rest (:mod:`dja_sepp.fit.core`): the core's transform is exact (a Hankel
transform: the cusp of high-n profiles aliases on any pixel grid), the rest is
smooth and sampled on the band's pixels (or a finer grid for thin tapers). The
sum is convolved with the PSF in one batched real FFT together with the
derivative images.

The PSF images are effective PSFs (optics convolved with the pixel, as stars
and PSFEx give them): the model is the profile convolved with the effective
PSF, sampled at pixel centres, so the profile enters as point samples (its
transform), never as pixel averages (that would apply the pixel twice).
"""
from __future__ import annotations

import functools

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft

from .core import add_core_spectrum, core_matrix, core_plan
from .kernels import sersic_box
from .profiles import N_GEOMETRY, _norm_terms

__all__ = ["BandGrid", "psf_kernel", "psf_reach", "render_profile", "render_point", "supersample",
           "profile_spectrum", "convolve_spectrum", "spectrum_key"]


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

    def kernel(self, divide_pixel: bool = True, single: bool = False) -> np.ndarray:
        """The PSF kernel on the FFT grid (cached; ``single``: complex64)."""
        key = (self.fft_shape, divide_pixel, single)
        if key not in self._kernels:
            k = psf_kernel(self.psf, self.fft_shape, self.pad, divide_pixel)
            self._kernels[key] = k.astype(np.complex64) if single else k
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


def psf_reach(psf: np.ndarray, level: float) -> int:
    """How far from the stamp's centre (px) the PSF still reaches ``level``
    somewhere (spikes and rings included): the radius of its outermost pixel
    at or above it, 0 when none is."""
    loud = np.abs(psf) >= level
    if not loud.any():
        return 0
    return int(np.ceil(np.sqrt(_radius2(psf.shape)[loud].max())))


@functools.lru_cache(maxsize=16)
def _radius2(shape: tuple[int, int]) -> np.ndarray:
    """Squared distance of each pixel of a stamp from its centre pixel
    (read-only; :func:`psf_reach` runs per group and band)."""
    yy, xx = np.indices(shape)
    r2 = ((yy - shape[0] // 2) ** 2 + (xx - shape[1] // 2) ** 2).astype(np.float64)
    r2.flags.writeable = False
    return r2


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

    The profile is split by a smooth taper (:mod:`dja_sepp.fit.core`): the
    cusp-free remainder is sampled on a grid ``oversample`` times finer than
    the band's (chosen with the taper when None) and transformed; the
    tapered core is transformed exactly (Hankel transform).
    Their sum at the band's own frequencies is multiplied by the PSF's
    transform and brought back to band pixels.

    Returns
    -------
    model : ndarray (ny, nx)
    dmodel : ndarray (6, ny, nx) or None
        Derivatives with respect to ``x0, y0`` (detection pixels), ``log re``,
        ``q``, ``phi``, ``n``.
    """
    spec = profile_spectrum(grid, x0, y0, re, q, phi, n, derivatives, oversample)
    return convolve_spectrum(grid, spec, derivatives)


def spectrum_key(grid: BandGrid) -> tuple:
    """Grids with equal keys share a profile's spectrum (:func:`profile_spectrum`):
    bands on one pixel grid (DJA's 0.02" or 0.04" mosaics) over the same
    window differ only by their PSF, which :func:`convolve_spectrum` applies."""
    return (grid.shape, grid.margin, grid.fft_shape, grid.affine.tobytes(), grid.shift.tobytes())


def profile_spectrum(grid: BandGrid, x0: float, y0: float, re: float, q: float, phi: float,
                     n: float, derivatives: bool = True, oversample: int | None = None) -> np.ndarray:
    """The unit-flux Sersic's transform at the band's frequencies, before the
    PSF: ``(1, Ny, Nx // 2 + 1)`` complex64, or ``(5, ...)`` with the
    derivatives with respect to ``log re, q, phi, n`` (see :func:`render_profile`)."""
    ainv = np.linalg.inv(grid.affine)
    jac = 1.0 / grid.det_affine
    cb = grid.to_band(x0, y0) + grid.margin  # centre on the rendered grid (band pixels)
    rho_c, fo = core_plan(core_matrix(grid.affine, re, q, phi), _core_reach(grid, cb))
    fo = int(oversample or fo)
    c0 = -0.5 + 0.5 / fo  # band coordinate of the first fine pixel's centre
    ny, nx = (grid.shape[0] + 2 * grid.margin) * fo, (grid.shape[1] + 2 * grid.margin) * fo
    terms = _norm_terms(float(n))
    img = np.empty((ny, nx))
    der = np.empty((N_GEOMETRY, ny, nx)) if derivatives else np.empty((N_GEOMETRY, 1, 1))
    sersic_box(img, der, 0, 0, 1, c0, float(fo), cb[0], cb[1], ainv, re, q, phi, n,
               *terms, jac, rho_c, derivatives)
    core = (cb, re, q, phi, n, rho_c, terms)
    return _fine_spectrum(grid, img, der if derivatives else None, fo, c0, core)


def _core_reach(grid: BandGrid, cb: np.ndarray) -> float:
    """Distance from the centre beyond which core light would wrap around the
    FFT grid onto the rendered region (band pixels)."""
    ny, nx = grid.shape[0] + 2 * grid.margin, grid.shape[1] + 2 * grid.margin
    Ny, Nx = grid.fft_shape
    return float(min(cb[0] + Nx - nx, Nx - cb[0], cb[1] + Ny - ny, Ny - cb[1]))


def _band_frequencies(Ny: int, Nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles/pixel) of the band's half spectrum, Nyquist at +1/2
    on both axes: the fine grid's transform and the core are evaluated there,
    and their parts must cancel at one and the same frequency."""
    fy = sfft.fftfreq(Ny)
    if Ny % 2 == 0:
        fy[Ny // 2] = 0.5
    return fy[:, None], sfft.rfftfreq(Nx)[None, :]


def _fine_spectrum(grid: BandGrid, img: np.ndarray, der: np.ndarray | None, fo: int, c0: float,
                   core: tuple) -> np.ndarray:
    # float32 transforms: twice as fast, and 1e-7 precision is plenty here.
    # Position derivatives are not transformed: they are the exact gradient of
    # the rendered image (Fourier shift theorem), core included.
    stack = (img[None] if der is None else np.concatenate([img[None], der[2:]], axis=0)).astype(np.float32)
    Ny, Nx = grid.fft_shape
    spec = sfft.rfft2(stack, s=(Ny * fo, Nx * fo))
    if fo > 1:  # keep the band's own frequencies
        hy = Ny // 2
        spec = np.concatenate([spec[:, :hy + 1, :Nx // 2 + 1],
                               spec[:, Ny * fo - (Ny - hy - 1):, :Nx // 2 + 1]], axis=1)
    fy, fx = _band_frequencies(Ny, Nx)
    # fine samples are point values of a smooth function (no pixel response
    # to undo) at positions starting at c0, each standing for 1 / fo^2 pixel
    if fo > 1:
        shift = np.exp(-2j * np.pi * fy * c0) * np.exp(-2j * np.pi * fx * c0) / (fo * fo)
        spec *= shift.astype(np.complex64)
    add_core_spectrum(spec, fy, fx, grid.affine, *core, derivatives=der is not None)
    return spec


def convolve_spectrum(grid: BandGrid, spec: np.ndarray, derivatives: bool = True):
    """A profile's spectrum (:func:`profile_spectrum`, made on this grid or on
    one with the same :func:`spectrum_key`) times this grid's PSF, on the
    window's pixels: the image and, with ``derivatives``, its 6 geometry
    derivatives (the position ones from the image's gradient)."""
    spec = spec * grid.kernel(divide_pixel=False, single=True)
    Ny, Nx = grid.fft_shape
    if derivatives:
        fy, fx = _band_frequencies(Ny, Nx)
        gx, gy = 2j * np.pi * fx * spec[0], 2j * np.pi * fy * spec[0]  # d/d(band x, y)
        a = grid.affine
        spec = np.concatenate([spec[:1], [-(gx * a[0, 0] + gy * a[1, 0]),
                                          -(gx * a[0, 1] + gy * a[1, 1])], spec[1:]], axis=0)
    out = sfft.irfft2(spec, s=(Ny, Nx))
    ny, nx = grid.shape
    p = grid.margin
    out = out[:, p:p + ny, p:p + nx].astype(np.float64)  # the window only
    return out[0], (out[1:] if derivatives else None)


def render_point(grid: BandGrid, x0: float, y0: float, derivatives: bool = True):
    """Unit-flux point source: the effective PSF shifted to the position.

    Returns the image and derivatives with respect to ``x0, y0`` (detection
    pixels), padded with zeros to ``N_GEOMETRY`` rows for a uniform interface.
    """
    cb = grid.to_band(x0, y0) + grid.margin
    fy = sfft.fftfreq(grid.fft_shape[0])[:, None]
    fx = sfft.rfftfreq(grid.fft_shape[1])[None, :]
    # separable phase, single precision like the profiles' transforms (1e-7 of the peak)
    phase = (np.exp(-2j * np.pi * fy * cb[1]) * np.exp(-2j * np.pi * fx * cb[0])).astype(np.complex64)
    spec = grid.kernel(divide_pixel=False, single=True) * phase
    stack = [spec]
    if derivatives:
        gx, gy = -2j * np.pi * fx * spec, -2j * np.pi * fy * spec  # d/d(band x), d/d(band y)
        a = grid.affine
        stack += [-(gx * a[0, 0] + gy * a[1, 0]), -(gx * a[0, 1] + gy * a[1, 1])]
    out = sfft.irfft2(np.array(stack, dtype=np.complex64), s=grid.fft_shape)
    ny, nx = grid.shape
    p = grid.margin
    out = out[:, p:p + ny, p:p + nx].astype(np.float64)
    if not derivatives:
        return out[0], None
    der = np.zeros((N_GEOMETRY, ny, nx))
    der[0], der[1] = -out[1], -out[2]
    return out[0], der
