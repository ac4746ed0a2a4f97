"""From model parameters to component geometry, with the chain-rule factors.

Each component of a model has a geometry ``g = (x0, y0, log re, q, phi, n)``
bound by the model file to parameters (or constants, or the ``e1e2`` pair).
:func:`component_geometry` returns ``g`` and ``dg/dtheta`` for one source.
"""
from __future__ import annotations

import numpy as np

from ..models.definition import Component, ModelDefinition
from .profiles import N_GEOMETRY

__all__ = ["component_geometry", "ellipticity"]


def ellipticity(e1: float, e2: float) -> tuple[float, float, np.ndarray]:
    """``q, phi`` of SE++'s ``e1, e2`` (q = |1 - e| / (1 + e),
    phi = atan2(e1, e2) / 2) and ``d(q, phi)/d(e1, e2)``."""
    e = float(np.hypot(e1, e2))
    e_safe = max(e, 1e-9)
    q = abs(1.0 - e) / (1.0 + e)
    dq_de = (-1.0 if e < 1 else 1.0) / (1.0 + e) - abs(1.0 - e) / (1.0 + e) ** 2
    phi = 0.5 * np.arctan2(e1, e2)
    r2 = max(e * e, 1e-18)
    jac = np.array([[dq_de * e1 / e_safe, dq_de * e2 / e_safe],
                    [0.5 * e2 / r2, -0.5 * e1 / r2]])
    return max(q, 1e-4), float(phi), jac


def component_geometry(model: ModelDefinition, comp: Component, theta: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Geometry of ``comp`` for parameter values ``theta`` (one source).

    Returns
    -------
    g : ndarray (6,)
        ``x0, y0, log re, q, phi, n``.
    dg : ndarray (6, n_params)
        ``d g / d theta``.
    """
    names = model.parameter_names
    idx = {p: i for i, p in enumerate(names)}
    g = np.zeros(N_GEOMETRY)
    dg = np.zeros((N_GEOMETRY, len(names)))
    g[0], g[1] = theta[idx["x"]], theta[idx["y"]]
    dg[0, idx["x"]] = dg[1, idx["y"]] = 1.0
    if comp.profile == "point":
        g[2], g[3], g[5] = 0.0, 1.0, 1.0
        return g, dg
    geo = comp.geometry
    _bind(g, dg, 2, geo["re"], idx, theta, log=True)
    if geo.get("q") == "e1e2" or geo.get("angle") == "e1e2":
        q, phi, jac = ellipticity(theta[idx["e1"]], theta[idx["e2"]])
        g[3], g[4] = q, phi
        for row, k in ((3, 0), (4, 1)):
            dg[row, idx["e1"]], dg[row, idx["e2"]] = jac[k]
    if geo.get("q") != "e1e2":
        _bind(g, dg, 3, geo["q"], idx, theta)
    if geo.get("angle") != "e1e2":
        _bind(g, dg, 4, geo["angle"], idx, theta)
    n_fixed = comp.sersic_n
    if n_fixed is not None:
        g[5] = n_fixed
    else:
        _bind(g, dg, 5, geo["n"], idx, theta)
    return g, dg


def _bind(g, dg, row, ref, idx, theta, log=False) -> None:
    if isinstance(ref, (int, float)):
        g[row] = np.log(ref) if log else float(ref)
        return
    value = float(theta[idx[ref]])
    if log:
        g[row] = np.log(max(value, 1e-12))
        dg[row, idx[ref]] = 1.0 / max(value, 1e-12)
    else:
        g[row] = value
        dg[row, idx[ref]] = 1.0
