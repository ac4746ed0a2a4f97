"""numba kernel: pixel-averaged Sersic intensity and derivatives on a box.

The same mathematics as :func:`dja_sepp.fit.profiles.sersic` (which stays the
readable reference the tests compare with), times the grid taper
``1 - exp(-(rho / rho_c)^4)`` of :mod:`dja_sepp.fit.core` (the cusp is
transformed exactly there), fused with the sub-pixel average so no large
temporaries are built: the inner loop of every fit.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["sersic_box", "core_spectrum_add"]


@njit(cache=True, fastmath=True, nogil=True)  # nogil: the worker's event loop stays live
def sersic_box(out, dout, y0, x0, os, c0, fo, cbx, cby, ainv, re, q, phi, n,
               b, log_norm, dlog_norm_dn, db_dn, jac, rho_c, derivatives):  # pragma: no cover - jitted
    """Fill ``out[i, j]`` (and ``dout[:, i, j]``) for fine pixels of the box
    starting at ``(y0, x0)``; each fine pixel is averaged over ``os x os``
    samples. Fine pixel ``m`` is centred on band coordinate ``c0 + m / fo``.
    The profile is multiplied by ``1 - w``, ``w = exp(-(rho / rho_c)^4)``
    (``rho_c`` held fixed in the derivatives)."""
    ny, nx = out.shape
    cphi, sphi = np.cos(phi), np.sin(phi)
    inv_q2 = 1.0 / (q * q)
    log_pre = -log_norm - 2.0 * np.log(re) - np.log(q)
    rmin2 = (1e-7 * re) ** 2
    log_re = np.log(re)
    inv_n = 1.0 / n
    w = 1.0 / (os * os)
    inv_rc2 = 1.0 / (rho_c * rho_c * re * re)  # (rho / rho_c)^2 = r2 * inv_rc2
    for i in range(ny):
        for j in range(nx):
            acc = 0.0
            d0 = d1 = d2 = d3 = d4 = d5 = 0.0
            for sy in range(os):
                yb = c0 + (y0 + i + (sy + 0.5) / os - 0.5) / fo - cby
                for sx in range(os):
                    xb = c0 + (x0 + j + (sx + 0.5) / os - 0.5) / fo - cbx
                    dx = ainv[0, 0] * xb + ainv[0, 1] * yb
                    dy = ainv[1, 0] * xb + ainv[1, 1] * yb
                    u = cphi * dx + sphi * dy
                    v = -sphi * dx + cphi * dy
                    r2 = u * u + v * v * inv_q2
                    if r2 < rmin2:
                        r2 = rmin2
                    # one log and two exp per sample: rho^(1/n) = exp(log(rho) / n)
                    log_rho = 0.5 * np.log(r2) - log_re
                    t = np.exp(log_rho * inv_n)
                    p = np.exp(-b * (t - 1.0) + log_pre)
                    e2 = r2 * inv_rc2
                    e4 = e2 * e2
                    om = -math.expm1(-e4)        # 1 - w without cancellation
                    val = p * om
                    acc += val
                    if derivatives:
                        # d/dtheta [p (1 - w)] = (1 - w) dp + 4 p w e4 dlog(rho)
                        cl = p * (-b * t * inv_n * om + 4.0 * (1.0 - om) * e4) / r2
                        d0 += cl * (-u * cphi + v * inv_q2 * sphi)
                        d1 += cl * (-u * sphi - v * inv_q2 * cphi)
                        d2 += -cl * r2 - 2.0 * val
                        d3 += cl * (-(v * v) / (q * q * q)) - val / q
                        d4 += cl * (u * v - v * inv_q2 * u)
                        d5 += (-db_dn * (t - 1.0) + b * t * log_rho * inv_n * inv_n - dlog_norm_dn) * val
            out[i, j] = acc * w * jac
            if derivatives:
                dout[0, i, j] = d0 * w * jac
                dout[1, i, j] = d1 * w * jac
                dout[2, i, j] = d2 * w * jac
                dout[3, i, j] = d3 * w * jac
                dout[4, i, j] = d4 * w * jac
                dout[5, i, j] = d5 * w * jac


@njit(cache=True, fastmath=True, nogil=True)
def core_spectrum_add(spec, fy, fx, a, cx, cy, cphi, sphi, q, scale, nodes, h, d, hn,
                      derivatives):  # pragma: no cover - jitted
    """Add the tapered core's transform (and, with ``derivatives``, those of
    its ``log re, q, phi, n`` derivatives) to ``spec[0]`` (``spec[1:5]``) in
    place: :func:`dja_sepp.fit.core.core_spectrum` fused in one pass over the
    frequencies, with no full-size temporaries (that function stays the
    readable reference the tests compare with).

    ``a`` is the band's affine map, ``(cx, cy)`` the centre on the rendered
    grid, ``nodes, h, d, hn`` the Hankel table (``d``: ``H' / kappa``)."""
    ny, nx = spec.shape[1], spec.shape[2]
    last = nodes.shape[0] - 2
    two_pi = 2.0 * np.pi
    px = np.empty(nx, np.complex128)
    for j in range(nx):
        px[j] = complex(math.cos(two_pi * fx[j] * cx), -math.sin(two_pi * fx[j] * cx))
    q2 = q * q
    for i in range(ny):
        f_y = fy[i]
        py = complex(math.cos(two_pi * f_y * cy), -math.sin(two_pi * f_y * cy))
        for j in range(nx):
            f_x = fx[j]
            ax = a[0, 0] * f_x + a[1, 0] * f_y          # A^T k
            ay = a[0, 1] * f_x + a[1, 1] * f_y
            ku = cphi * ax + sphi * ay
            kv = -sphi * ax + cphi * ay
            kappa2 = scale * (ku * ku + q2 * kv * kv)
            kappa = math.sqrt(kappa2)
            k = np.searchsorted(nodes, kappa) - 1
            k = min(max(k, 0), last)
            k0, k1 = nodes[k], nodes[k + 1]
            dk = k1 - k0
            s = min(max((kappa - k0) / dk, 0.0), 1.0)
            s2 = s * s
            s3 = s2 * s
            value = ((2 * s3 - 3 * s2 + 1) * h[k] + (s3 - 2 * s2 + s) * dk * d[k] * k0
                     + (-2 * s3 + 3 * s2) * h[k + 1] + (s3 - s2) * dk * d[k + 1] * k1)
            phase = py * px[j]
            spec[0, i, j] += value * phase
            if derivatives:
                slope = (d[k] + (d[k + 1] - d[k]) * s) * phase       # H'(kappa) / kappa
                spec[1, i, j] += slope * kappa2
                spec[2, i, j] += slope * (scale * q * kv * kv)
                spec[3, i, j] += slope * (scale * (1.0 - q2) * ku * kv)
                spec[4, i, j] += (hn[k] + (hn[k + 1] - hn[k]) * s) * phase
