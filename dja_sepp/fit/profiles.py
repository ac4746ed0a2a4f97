"""Unit-flux elliptical Sersic profiles and their analytic derivatives.

Geometry ``g = (x0, y0, log re, q, phi, n)`` on the detection frame: ``re`` is
the semi-major half-light radius (pixels), ``q = b/a``, ``phi`` the major-axis
angle (radians, CCW from +x). With ``u, v`` the offsets along the major and
minor axes and ``rho = sqrt(u^2 + (v/q)^2) / re``::

    I = exp(-b_n (rho^(1/n) - 1)) / (2 pi q re^2 n e^b_n b_n^(-2n) Gamma(2n))

integrates to 1; ``b_n`` solves ``gamma(2n, b_n) = Gamma(2n) / 2`` exactly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special

__all__ = ["sersic_b", "sersic_log_norm", "sersic", "enclosed_fraction", "N_GEOMETRY"]

N_GEOMETRY = 6  # x0, y0, log re, q, phi, n


@lru_cache(maxsize=4096)
def sersic_b(n: float) -> float:
    """Exact ``b_n`` (half of the light inside ``re``)."""
    return float(special.gammaincinv(2.0 * n, 0.5))


@lru_cache(maxsize=4096)
def _norm_terms(n: float) -> tuple[float, float, float]:
    """``(b, log N(n), d log N / dn, d b / dn)`` with ``N = 2 pi n e^b b^-2n Gamma(2n)``."""
    def log_norm(m):
        b = sersic_b(m)
        return np.log(2 * np.pi * m) + b - 2 * m * np.log(b) + special.gammaln(2 * m)
    h = 1e-5 * max(n, 0.1)
    b = sersic_b(n)
    return b, log_norm(n), (log_norm(n + h) - log_norm(n - h)) / (2 * h), \
        (sersic_b(n + h) - sersic_b(n - h)) / (2 * h)


def sersic_log_norm(n: float) -> float:
    return _norm_terms(n)[1]


def enclosed_fraction(n: float, rho: np.ndarray) -> np.ndarray:
    """Fraction of the light inside elliptical radius ``rho`` (units of re)."""
    return special.gammainc(2.0 * n, sersic_b(n) * np.asarray(rho) ** (1.0 / n))


def sersic(dx: np.ndarray, dy: np.ndarray, re: float, q: float, phi: float, n: float,
           derivatives: bool = True):
    """Intensity (per detection pixel^2) at offsets ``(dx, dy)`` from the centre.

    Returns
    -------
    I : ndarray
    dI : ndarray or None
        ``(6,) + I.shape``: derivatives with respect to ``x0, y0`` (the
        centre: ``dx = X - x0``), ``log re``, ``q``, ``phi`` and ``n``.
    """
    b, log_norm, dlog_norm_dn, db_dn = _norm_terms(float(n))
    c, s = np.cos(phi), np.sin(phi)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    r2 = u * u + (v * v) / (q * q)
    r = np.sqrt(np.maximum(r2, (1e-7 * re) ** 2))
    rho = r / re
    t = rho ** (1.0 / n)
    log_i = -b * (t - 1.0) - log_norm - 2.0 * np.log(re) - np.log(q)
    intensity = np.exp(log_i)
    if not derivatives:
        return intensity, None
    # d log I / d rho = -b t / (n rho); chain through r.
    dlogi_dr = -b * t / (n * r)
    # r dr/du = u, r dr/dv = v/q^2 ; du/dx0 = -c, dv/dx0 = s ; du/dy0 = -s, dv/dy0 = -c
    inv_r = 1.0 / r
    dr_dx0 = (u * -c + (v / (q * q)) * s) * inv_r
    dr_dy0 = (u * -s + (v / (q * q)) * -c) * inv_r
    dr_dphi = (u * v - (v / (q * q)) * u) * inv_r     # du/dphi = v, dv/dphi = -u
    dr_dq = -(v * v) / (q ** 3) * inv_r
    out = np.empty((N_GEOMETRY,) + np.shape(intensity))
    out[0] = dlogi_dr * dr_dx0
    out[1] = dlogi_dr * dr_dy0
    out[2] = b * t / n - 2.0                           # d/d log re: d rho/d log re = -rho
    out[3] = dlogi_dr * dr_dq - 1.0 / q
    out[4] = dlogi_dr * dr_dphi
    log_rho = np.log(rho)
    out[5] = -db_dn * (t - 1.0) + b * t * log_rho / (n * n) - dlog_norm_dn
    out *= intensity
    return intensity, out


def polygon_flux(n: float, re: float, q: float, phi: float, corners: np.ndarray,
                 n_theta: int = 256) -> np.ndarray:
    """Exact unit-Sersic flux inside convex polygons (offsets from the centre).

    ``corners`` has shape ``(k, m, 2)`` (k polygons of m corners) or
    ``(m, 2)``. In the frame where the profile is circular (minor axis
    stretched by 1/q) a ray from the centre crosses a polygon between
    distances ``t_lo`` and ``t_hi``, and the flux along it is the difference
    of the analytic enclosed fractions; the angular integral is a dense
    quadrature. Used for the pixels around the cusp, where supersampling
    converges slowly.
    """
    corners = np.asarray(corners, dtype=float)
    single = corners.ndim == 2
    if single:
        corners = corners[None]
    c, s = np.cos(phi), np.sin(phi)
    u = c * corners[..., 0] + s * corners[..., 1]
    w = (-s * corners[..., 0] + c * corners[..., 1]) / q
    pts = np.stack([u, w], axis=-1)                       # (k, m, 2)
    nxt = np.roll(pts, -1, axis=1)
    edge = nxt - pts
    normal = np.stack([edge[..., 1], -edge[..., 0]], axis=-1)
    orient = np.sign(np.sum(pts[..., 0] * nxt[..., 1] - nxt[..., 0] * pts[..., 1], axis=1))
    normal = normal * orient[:, None, None]               # counter-clockwise: outward normals
    offset = np.sum(normal * pts, axis=-1)                # polygon = {p : normal . p <= offset}
    theta = (np.arange(n_theta) + 0.5) * (2 * np.pi / n_theta)
    e = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (t, 2)
    proj = np.einsum("td,kmd->ktm", e, normal)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = offset[:, None, :] / proj
    t_hi = np.min(np.where(proj > 0, t, np.inf), axis=2)
    t_lo = np.maximum(np.max(np.where(proj < 0, t, -np.inf), axis=2), 0.0)
    inside = t_hi > t_lo
    frac = enclosed_fraction(n, np.where(inside, t_hi, 0) / re) \
        - enclosed_fraction(n, np.where(inside, t_lo, 0) / re)
    out = np.sum(np.where(inside, frac, 0.0), axis=1) / n_theta
    return out[0] if single else out
