"""The Sersic core, transformed exactly: a tapered cusp's Hankel transform.

A Sersic profile of high index is a cusp (``rho^(1/n)`` at the centre): its
transform falls off as a slow power law, so any pixel grid aliases it, and the
error depends on where the centre falls within a pixel (percent-level peak
errors at n = 6 on twice-oversampled pixels). The renderer therefore splits
the profile with a smooth taper ``w = exp(-(rho / rho_c)^4)``::

    I = I (1 - w)  +  I w
        (grid)        (core)

The grid part vanishes like ``rho^(4 + 1/n)`` at the centre, smooth enough for
the fine pixel grid. The core is circular in the frame where the profile is
(``z = (u / re, v / (q re))``), so its transform at a band frequency ``k`` is
the Hankel transform ``H(kappa)`` of a 1-d function at ``kappa = 2 pi |M^T k|``
(``M`` maps ``z`` to band pixels): no aliasing at all. ``H`` is tabulated on
a few dozen ``kappa`` by quadrature and interpolated (cubic Hermite with the
exact slope) at every frequency.

The taper is 4 band pixels on the core's short axis, so the grid part needs
one sample per band pixel; cores so long that they would wrap around the FFT
grid onto the window get a thinner taper and a finer grid (``core_plan``).
"""
from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["core_matrix", "core_plan", "hankel_table", "core_spectrum", "add_core_spectrum"]

TAPER_PX = 4.0   # taper radius on the core's short axis (band px): one sample per pixel suffices
MIN_TAPER_FINE = 3.0  # ... else this many fine pixels (measured, any PSF: < 2e-4 of the peak)
_REACH = 12.0 ** 0.25  # w < 1e-5 beyond rho_c * _REACH: the core's extent
_RHO_MAX = 40.0 ** 0.25  # w < e^-40 beyond rho_c * _RHO_MAX: the quadrature's extent
_MAX_OVERSAMPLE = 2  # finer only helps below q ~ 0.03 (8e-4 of the peak at q = 0.005), at 4x the cost
_PANEL_PERIODS = 2.0  # periods of J0 per 8-node panel: 2e-7 of the flux (1: 1e-13, 3: 3e-5)
_KAPPA_SCALE = 2.0  # table nodes: uniform in kappa below 2 / rho_c, geometric above
_GL8 = np.polynomial.legendre.leggauss(8)
_GL16 = np.polynomial.legendre.leggauss(16)


def core_matrix(affine: np.ndarray, re: float, q: float, phi: float) -> np.ndarray:
    """``M``: band-pixel offset per unit of the circular frame ``z``."""
    c, s = np.cos(phi), np.sin(phi)
    rot_t = np.array([[c, -s], [s, c]])  # detection offset = R^T (u, v)
    return affine @ rot_t @ np.diag([re, q * re])


def core_plan(m: np.ndarray, reach_px: float) -> tuple[float, int]:
    """Taper radius ``rho_c`` and the fine-grid oversampling it needs.

    The taper is ``TAPER_PX`` on the core's short axis unless its long axis
    would then reach beyond ``reach_px`` (the core's transform is periodic on
    the FFT grid: it must not wrap onto the window); a thinner taper needs
    finer samples for the grid part, ``MIN_TAPER_FINE`` fine pixels across
    (at most ``_MAX_OVERSAMPLE`` per band pixel).
    """
    sv = np.linalg.svd(m, compute_uv=False)
    rho_c = min(TAPER_PX / sv[-1], max(reach_px, 1.0) / (_REACH * sv[0]))
    taper = rho_c * sv[-1]
    if taper >= TAPER_PX * (1 - 1e-9):
        return rho_c, 1
    return rho_c, int(min(max(np.ceil(MIN_TAPER_FINE / taper), 2), _MAX_OVERSAMPLE))


def _nodes(rho_c: float, kappa_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Radial quadrature ``(rho, weight * 2 pi rho)`` for the tapered core.

    The innermost panel maps ``rho = rho_1 u^n``-like (here ``u^4``, enough
    for the cusp); beyond it, panels double in size (the profile varies on
    log-radius) and never exceed ``_PANEL_PERIODS`` periods of ``J0(kappa_max rho)``.
    """
    rho_max = _RHO_MAX * rho_c
    rho_1 = min(0.05 * rho_c, 0.5 / max(kappa_max, 1e-9))
    u, wu = _GL16
    u = 0.5 * (u + 1)
    rho0 = rho_1 * u ** 4
    w0 = rho_1 * 4 * u ** 3 * 0.5 * wu
    period = _PANEL_PERIODS * 2 * np.pi / max(kappa_max, 1e-9)
    edges = [rho_1]
    while edges[-1] < rho_max:
        edges.append(min(edges[-1] + min(edges[-1], period), rho_max))
    edges = np.asarray(edges)
    x, wx = _GL8
    half = 0.5 * np.diff(edges)[:, None]
    rho = (edges[:-1, None] + half * (x[None, :] + 1)).ravel()
    w = (half * wx[None, :]).ravel()
    rho = np.concatenate([rho0, rho])
    w = np.concatenate([w0, w])
    return rho, w * 2 * np.pi * rho


def hankel_table(n: float, rho_c: float, kappa_max: float, norm_terms, size: int = 40):
    """``H``, ``H' / kappa`` and ``dH/dn`` of the unit tapered core on ``kappa`` nodes.

    Returns
    -------
    kappa, h, d, hn : ndarray
        Nodes (0 first, uniform then geometric up to ``kappa_max``), transform,
        its slope over ``kappa`` and its derivative with respect to ``n``
        (``rho_c`` held).
    """
    b, log_norm, dlog_norm_dn, db_dn = norm_terms
    rho, wq = _nodes(rho_c, kappa_max)
    t = rho ** (1.0 / n)
    prof = np.exp(-b * (t - 1.0) - log_norm - (rho / rho_c) ** 4) * wq
    dprof = prof * (-db_dn * (t - 1.0) + b * t * np.log(rho) / (n * n) - dlog_norm_dn)
    # uniform where H turns over (kappa ~ 1 / rho_c), geometric in its power-law tail
    k_s = _KAPPA_SCALE / rho_c
    kappa = k_s * np.sinh(np.linspace(0.0, np.arcsinh(max(kappa_max, k_s) / k_s), size))
    x = kappa[:, None] * rho[None, :]
    j0 = special.j0(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        j1x = np.where(x > 1e-8, special.j1(x) / np.where(x > 1e-8, x, 1.0), 0.5)
    return kappa, j0 @ prof, -(j1x @ (prof * rho * rho)), j0 @ dprof


def _hermite(kappa_nodes, h, slope, kappa):
    """Cubic Hermite interpolation of ``h`` (slope ``dh/dkappa``) at ``kappa``."""
    i = np.clip(np.searchsorted(kappa_nodes, kappa) - 1, 0, len(kappa_nodes) - 2)
    k0, k1 = kappa_nodes[i], kappa_nodes[i + 1]
    dk = k1 - k0
    s = np.clip((kappa - k0) / dk, 0.0, 1.0)
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * h[i] + (s3 - 2 * s2 + s) * dk * slope[i]
            + (-2 * s3 + 3 * s2) * h[i + 1] + (s3 - s2) * dk * slope[i + 1])


def _major_minor(fy, fx, affine, phi):
    """Band frequencies ``(fy, fx)`` in the profile's frame: ``A^T k`` along
    its major and minor axes."""
    ax = affine[0, 0] * fx + affine[1, 0] * fy
    ay = affine[0, 1] * fx + affine[1, 1] * fy
    c, s = np.cos(phi), np.sin(phi)
    return c * ax + s * ay, -s * ax + c * ay


def core_spectrum(fy: np.ndarray, fx: np.ndarray, affine, centre, re, q, phi, n, rho_c,
                  norm_terms, derivatives: bool):
    """Transform of the tapered core on band frequencies ``(fy, fx)`` (cycles/pixel).

    Returns the spectrum ``(Ny, Nx)`` and, with ``derivatives``, the spectra of
    its derivatives with respect to ``log re, q, phi, n`` ``(4, Ny, Nx)``
    (the position derivatives come from the renderer's Fourier gradient).
    """
    ku, kv = _major_minor(fy, fx, affine, phi)
    scale = (2 * np.pi * re) ** 2
    kappa2 = scale * (ku * ku + q * q * kv * kv)
    kappa = np.sqrt(kappa2)
    nodes, h, d, hn = hankel_table(n, rho_c, float(kappa.max()), norm_terms)
    phase = np.exp(-2j * np.pi * fy * centre[1]) * np.exp(-2j * np.pi * fx * centre[0])  # separable
    spec = _hermite(nodes, h, d * nodes, kappa) * phase
    if not derivatives:
        return spec, None
    dk = np.interp(kappa, nodes, d) * phase        # H'(kappa) / kappa
    dn = np.interp(kappa, nodes, hn) * phase
    return spec, np.stack([dk * kappa2, dk * scale * q * kv * kv,
                           dk * scale * (1 - q * q) * ku * kv, dn])


def add_core_spectrum(spec: np.ndarray, fy: np.ndarray, fx: np.ndarray, affine, centre, re, q, phi, n,
                      rho_c, norm_terms, derivatives: bool) -> None:
    """:func:`core_spectrum` added into ``spec`` (``(1 or 5, Ny, Nx)``) in
    place by one numba pass (:func:`dja_sepp.fit.kernels.core_spectrum_add`)."""
    from .kernels import core_spectrum_add
    if spec.shape[0] < (5 if derivatives else 1) or spec.shape[1:] != (fy.size, fx.size):
        raise ValueError(f"spectrum of shape {spec.shape} cannot hold the core's on {fy.size} x {fx.size} "
                         "frequencies" + (" with 4 derivatives" if derivatives else ""))
    c, s = np.cos(phi), np.sin(phi)
    scale = (2 * np.pi * re) ** 2
    # kappa is a convex function of the frequency: its largest value is at a corner of the grid
    ku, kv = _major_minor(np.array([fy.min(), fy.max()])[:, None], np.array([fx.min(), fx.max()])[None, :],
                          affine, phi)
    kmax = float(np.sqrt(scale * (ku * ku + q * q * kv * kv)).max())
    nodes, h, d, hn = hankel_table(n, rho_c, kmax, norm_terms)
    core_spectrum_add(spec, np.ascontiguousarray(fy.ravel()), np.ascontiguousarray(fx.ravel()),
                      np.ascontiguousarray(affine, dtype=np.float64), float(centre[0]), float(centre[1]),
                      float(c), float(s), float(q), float(scale), nodes, h, d, hn, bool(derivatives))
