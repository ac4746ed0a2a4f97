"""Fit one group of sources: variable projection + Levenberg-Marquardt.

Nonlinear parameters (shape, shared by all bands) live in an unbounded space
``z`` (sigmoid / log-sigmoid maps of their ranges). At every evaluation the
fluxes of every component in every band are solved exactly by weighted linear
least squares (non-negative when a model has several components, so B/T stays
in [0, 1]); the Jacobian of the projected residuals follows Kaufman's
approximation. Priors enter as extra residuals; the B/T band prior (a
Gaussian on the transformed B/T, as SE++ applies it) is part of the exact
flux solve and its residuals join the others.

Products over a window's pixels with a small result (projections onto the
flux templates, normal matrices) use ``np.dot``: numpy's ``matmul`` keeps the
GIL when its output is small and takes a slow loop for some of these layouts,
while ``np.dot`` calls BLAS without the GIL, so fits on several threads
(``fit.threads``) overlap. For the same reason least squares go through
scipy's QR rather than ``lstsq``'s SVD, which holds the GIL throughout.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.linalg import qr as scipy_qr
from scipy.optimize import least_squares, nnls

from ..models.definition import ModelDefinition, evaluate
from ..models.transforms import Range
from .geometry import component_geometry
from .render import (BandGrid, convolve_spectrum, profile_spectrum, render_point, render_profile,
                     spectrum_key)

__all__ = ["BandData", "GroupFit", "fit_group", "render_group"]


@dataclass
class BandData:
    """One band's pixels over a group's window."""

    name: str
    grid: BandGrid
    data: np.ndarray
    weight: np.ndarray
    wavelength: float | None = None

    def __post_init__(self):
        self.sw = np.sqrt(np.clip(self.weight, 0, None)).ravel()
        self.y = self.data.ravel() * self.sw
        self.npix = int(np.count_nonzero(self.sw))


@dataclass
class GroupFit:
    """Result of a group fit (per member arrays first axis = member)."""

    theta: np.ndarray            # (m, p) world parameter values
    theta_err: np.ndarray        # (m, p)
    fluxes: dict                 # band -> (m, c) fluxes
    flux_err: dict               # band -> (m, c)
    chi2_reduced: float
    n_iter: int
    stop_reason: str
    success: bool
    at_bound: np.ndarray         # (m, p) int8: -1 at the lower end of the range, +1 upper, 0 inside
    models: dict = field(default_factory=dict)  # band -> model image of the group
    chi2: float = float("nan")   # sum of squared weighted pixel residuals
    n_pix: int = 0               # pixels with weight
    objective: float = float("nan")  # chi2 + every prior's squared residual (what LM minimised)
    flux_cov: dict = field(default_factory=dict)  # band -> (m, c, c) covariance of each member's fluxes


class _Problem:
    def __init__(self, model: ModelDefinition, starts: np.ndarray, ranges: list[list[Range]],
                 contexts: Sequence[Mapping[str, float]], bands: Sequence[BandData]):
        self.model, self.bands = model, list(bands)
        self.ranges = ranges
        self.m, self.p = starts.shape
        self.c = len(model.components)
        self.z0 = np.array([[r.to_unbounded(v) for v, r in zip(row, rr)]
                            for row, rr in zip(starts, ranges)]).ravel()
        self.priors = self._prior_terms(contexts)
        self._cache: dict = {}   # the last two evaluations (z bytes -> results)

    def _prior_terms(self, contexts):
        terms = []
        pri = [p.prior for p in self.model.parameters if p.prior] + list(self.model.priors)
        for i, ctx in enumerate(contexts):
            for prior in pri:
                terms.append((i, prior.transform, evaluate(prior.mean, ctx, "prior mean"),
                              evaluate(prior.sigma, ctx, "prior sigma")))
        return terms

    def theta(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zz = z.reshape(self.m, self.p)
        th = np.empty_like(zz)
        dth = np.empty_like(zz)
        for i in range(self.m):
            for j in range(self.p):
                th[i, j], dth[i, j] = self.ranges[i][j].to_value(zz[i, j])
        return th, dth

    # -- model evaluation -------------------------------------------------
    def templates(self, band: BandData, th: np.ndarray, derivatives=True, spectra=None):
        """Unit-flux images (m*c, npix) and d/dtheta (m, c, p, npix).

        ``spectra`` (a dict kept for one evaluation) shares each profile's
        transform between bands on the same pixel grid: only the PSF differs."""
        spectra = {} if spectra is None else spectra
        npix = band.data.size
        tmpl = np.empty((self.m * self.c, npix))
        dtmpl = np.empty((self.m, self.c, self.p, npix)) if derivatives else None  # all filled below
        for i in range(self.m):
            for k, comp in enumerate(self.model.components):
                g, dg = component_geometry(self.model, comp, th[i])
                if comp.profile == "point":
                    img, dimg = render_point(band.grid, g[0], g[1], derivatives)
                else:
                    key = (i, k, derivatives, spectrum_key(band.grid))
                    if key not in spectra:
                        spectra[key] = profile_spectrum(band.grid, g[0], g[1], float(np.exp(g[2])),
                                                        g[3], g[4], g[5], derivatives)
                    img, dimg = convolve_spectrum(band.grid, spectra[key], derivatives)
                tmpl[i * self.c + k] = img.ravel()
                if derivatives:
                    dtmpl[i, k] = dg.T @ dimg.reshape(dimg.shape[0], -1)
        return tmpl, dtmpl

    def solve_fluxes(self, band: BandData, tmpl: np.ndarray):
        """Fluxes ``f`` (m*c) of one band, the weighted design matrix ``a``,
        that matrix with the band prior's Gauss-Newton rows at ``f``
        appended (for the flux covariance), the band prior's residuals, and
        an orthonormal basis of ``a``'s columns with a flux (the directions
        Kaufman's Jacobian projects out).

        With a B/T band prior (two components, as SE++ has it: a Gaussian on
        the transformed B/T of each member) the fluxes minimise
        ``|a f - y|^2 + sum_i ((T(bt_i) - mu) / sigma)^2`` over ``f >= 0``
        exactly: see :func:`_solve_bt_prior`."""
        a = tmpl.T * band.sw[:, None]
        y = band.y
        prior = self._band_prior(band)
        if prior is not None:
            f, rows, resid = _solve_bt_prior(a, y, self.m, self.c, *prior)
            return f, a, np.vstack([a, rows]), resid, _thin_qr(a[:, f != 0])[0]
        if self.c > 1:
            f, _ = nnls(a, y, maxiter=50 * a.shape[1])
            return f, a, a, np.zeros(0), _thin_qr(a[:, f != 0])[0]
        q, r = _thin_qr(a)
        f = _qr_solve(q, r, y[:, None], a)[:, 0]
        return f, a, a, np.zeros(0), q

    def _band_prior(self, band: BandData):
        """``(k, table, mu, sigma)`` of the model's B/T prior in this band
        (``k`` the bulge component; ``table`` the transform on a B/T grid),
        or None (no prior, no wavelength, or not two components)."""
        if not self.model.band_priors or band.wavelength is None or self.c != 2:
            return None
        bp = self.model.band_priors[0]
        k = [c.name for c in self.model.components].index(bp.component)
        mu = evaluate(bp.mean, {"L": band.wavelength}, "band prior mean")
        sig = evaluate(bp.sigma, {"L": band.wavelength}, "band prior sigma")
        return k, _transform_table(bp.transform), mu, sig

    def evaluate(self, z: np.ndarray, final: bool = False):
        """Residuals, Jacobian, pixel residuals, fluxes, flux covariances and
        models (both empty unless ``final``), ``theta`` and its slope in ``z``.

        The last two evaluations are kept: MINPACK asks for the Jacobian where
        it has just evaluated the residuals, and the final call (covariances,
        models) comes where it stopped, one of the two points it evaluated last."""
        key = z.tobytes()
        if key not in self._cache:
            self._cache = {k: v for k, v in list(self._cache.items())[-1:]}
            self._cache[key] = self._compute(z)
        out, pieces = self._cache[key]
        if not final:
            return out
        covs, models = {}, {}
        dth = out[-1]
        for name, (a, a_full, f, cols, tmpl, shape) in pieces.items():
            covs[name] = (_flux_cov(a_full, f, self.c > 1),
                          _flux_sensitivity(a, f, cols, dth.ravel(), self.c > 1))
            models[name] = (tmpl.T @ f).reshape(shape)
        return out[:4] + (covs, models) + out[6:]

    def _compute(self, z: np.ndarray):
        th, dth = self.theta(z)
        res, jac, fluxes, res_prior, pieces = [], [], {}, [], {}
        spectra: dict = {}
        for band in self.bands:
            tmpl, dtmpl = self.templates(band, th, spectra=spectra)
            f, a, a_full, r_prior, q = self.solve_fluxes(band, tmpl)
            r = a @ f - band.y
            fm = f.reshape(self.m, self.c)
            cols = np.einsum("mcpn,mc->mpn", dtmpl, fm).reshape(self.m * self.p, -1) * band.sw[None, :]
            pieces[band.name] = (a, a_full, f, cols, tmpl, band.data.shape)  # for the final call
            res.append(r)
            jac.append((cols - np.dot(np.dot(cols, q), q.T)).T)  # project out the flux directions (Kaufman)
            if r_prior.size:  # the B/T prior's residuals; they move with the shape only through
                res_prior.append(r_prior)  # the fluxes, to first order not at all (Kaufman)
            fluxes[band.name] = fm
        r_pix = np.concatenate(res)
        r_pri, j_pri = self._priors(z, th)
        r_band = np.concatenate(res_prior) if res_prior else np.zeros(0)
        # one Jacobian array, filled in place (the band blocks, then the priors;
        # the band prior's rows stay zero): it is the largest array of a fit
        full = np.zeros((r_pix.size + r_pri.size + r_band.size, z.size))
        row = 0
        for block in jac:
            full[row:row + block.shape[0]] = block
            row += block.shape[0]
        full[:row] *= dth.ravel()[None, :]
        full[row:row + r_pri.size] = j_pri
        out = (np.concatenate([r_pix, r_pri, r_band]), full, r_pix, fluxes, {}, {}, th, dth)
        return out, pieces

    def _priors(self, z: np.ndarray, th: np.ndarray):
        if not self.priors:
            return np.zeros(0), np.zeros((0, z.size))
        values = np.array([self._prior_value(t, th[t[0]]) for t in self.priors])
        jac = np.zeros((len(values), z.size))
        h = 1e-6
        zz = z.reshape(self.m, self.p)
        # a source's priors depend on its own parameters only: block-diagonal Jacobian
        for j in range(self.p):
            for row, term in enumerate(self.priors):
                i = term[0]
                shifted = th[i].copy()
                shifted[j] = self.ranges[i][j].to_value(zz[i, j] + h)[0]
                jac[row, i * self.p + j] = (self._prior_value(term, shifted) - values[row]) / h
        return values, jac

    def _prior_value(self, term, th_i: np.ndarray) -> float:
        _, transform, mean, sigma = term
        names = self.model.parameter_names
        return (evaluate(transform, dict(zip(names, th_i)), "prior") - mean) / sigma


_BT_GRID = np.linspace(0.0, 1.0, 2001)


@functools.lru_cache(maxsize=16)
def _transform_table(transform: str) -> tuple[np.ndarray, np.ndarray]:
    """The band prior's transform ``T(bt)`` and its slope on :data:`_BT_GRID`."""
    vals = np.array([evaluate(transform, {"bt": g}, "band prior") for g in _BT_GRID])
    return vals, np.gradient(vals, _BT_GRID)


def _solve_bt_prior(a: np.ndarray, y: np.ndarray, m: int, c: int, k: int, table, mu: float,
                    sigma: float):
    """Two-component fluxes of ``m`` members under SE++'s B/T prior, exactly.

    Minimises ``|a f - y|^2 + sum_i ((T(bt_i) - mu) / sigma)^2`` over
    ``f >= 0``, ``bt_i`` the share of component ``k`` in member ``i``. For a
    given ``bt`` a member's total flux is linear and solved in closed form,
    so each member's problem is one-dimensional in ``bt``: evaluated on a
    fine grid (vectorised, through the normal matrix ``a^T a``) and refined by
    a parabola through the best three nodes. Members are solved in turn
    (Gauss-Seidel sweeps from the non-negative least-squares solution until
    the fluxes stop changing), each with the others fixed.

    Returns the fluxes (m*c), the prior's Gauss-Newton rows at them (for the
    flux covariance) and the prior's residuals (m).
    """
    vals, slope = table
    gram, proj = np.dot(a.T, a), np.dot(a.T, y)
    f = nnls(a, y, maxiter=50 * a.shape[1])[0] if m > 1 else np.zeros(m * c)
    w = np.empty((_BT_GRID.size, c))  # unit-total flux split of one member per grid B/T
    w[:, k] = _BT_GRID
    w[:, 1 - k] = 1.0 - _BT_GRID
    for _sweep in range(50 if m > 1 else 1):
        before = f.copy()
        for i in range(m):
            sl = slice(i * c, (i + 1) * c)
            g_i = proj[sl] - gram[sl, :] @ f + gram[sl, sl] @ f[sl]   # others fixed
            num = w @ g_i
            den = np.einsum("nc,cd,nd->n", w, gram[sl, sl], w)
            gain = np.where(num > 0, num * num / np.maximum(den, 1e-300), 0.0)
            cost = -gain + ((vals - mu) / sigma) ** 2
            j = int(np.argmin(cost))
            bt = _BT_GRID[j]
            if 0 < j < _BT_GRID.size - 1:  # parabola through the three nodes around the minimum
                c0, c1, c2 = cost[j - 1:j + 2]
                curv = c0 - 2 * c1 + c2
                if curv > 0:
                    bt = float(np.clip(bt + 0.5 * (c0 - c2) / curv * (_BT_GRID[1] - _BT_GRID[0]),
                                       _BT_GRID[j - 1], _BT_GRID[j + 1]))
            share = np.empty(c)
            share[k], share[1 - k] = bt, 1.0 - bt
            total = max(float(share @ g_i) / max(float(share @ gram[sl, sl] @ share), 1e-300), 0.0)
            f[sl] = total * share
        if np.max(np.abs(f - before)) <= 1e-7 * max(np.max(np.abs(f)), 1e-300):
            break
    rows = np.zeros((m, m * c))
    resid = np.zeros(m)
    for i in range(m):
        sl = slice(i * c, (i + 1) * c)
        total = f[sl].sum()
        bt = f[i * c + k] / total if total > 0 else 0.0
        resid[i] = (float(np.interp(bt, _BT_GRID, vals)) - mu) / sigma
        if total > 0:
            dbt = np.full(c, -bt / total)
            dbt[k] += 1.0 / total
            rows[i, sl] = float(np.interp(bt, _BT_GRID, slope)) / sigma * dbt
    return f, rows, resid


def _thin_qr(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin QR of ``a`` (scipy's: it holds the GIL for a third of the time numpy's does)."""
    return scipy_qr(a, mode="economic", check_finite=False)


def _qr_solve(q: np.ndarray, r: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``lstsq(a, b)`` from ``a``'s thin QR (``q``, ``r``): the pseudo-inverse of
    the small ``r`` with lstsq's cut-off, so a (nearly) rank-deficient ``a``
    gets lstsq's minimum-norm solution."""
    return np.linalg.pinv(r, rcond=np.finfo(float).eps * max(a.shape)) @ np.dot(q.T, b)


def _flux_cov(a: np.ndarray, f: np.ndarray, constrained: bool) -> np.ndarray:
    free = (f != 0) if constrained else np.ones(f.size, bool)
    cov = np.full((f.size, f.size), np.nan)
    if free.any():
        r = _thin_qr(a[:, free])[1]
        # pinv(a^T a) = R+ R+^T; R's singular values are a's, so the cut-off is
        # the square root of the one pinv applies to a^T a
        r_pinv = np.linalg.pinv(r, rcond=np.sqrt(1e-15))
        idx = np.flatnonzero(free)
        cov[np.ix_(idx, idx)] = r_pinv @ r_pinv.T
    return cov


def _flux_sensitivity(a: np.ndarray, f: np.ndarray, cols: np.ndarray, dth: np.ndarray,
                      constrained: bool) -> np.ndarray:
    """``df/dz`` of the linear fluxes at fixed data (first order: the
    residual-curvature term is dropped, as in Kaufman's Jacobian)."""
    free = (f != 0) if constrained else np.ones(f.size, bool)
    sens = np.zeros((f.size, cols.shape[0]))
    if free.any():
        sub = a[:, free]
        sens[free] = -_qr_solve(*_thin_qr(sub), (cols * dth[:, None]).T, sub)
    return sens


_STOP = {0: "max_iterations", 1: "gradient_small", 2: "chi2_converged", 3: "step_small",
         4: "converged", -1: "error"}


def fit_group(model: ModelDefinition, starts: np.ndarray, ranges: list[list[Range]],
              contexts: Sequence[Mapping[str, float]], bands: Sequence[BandData],
              max_iterations: int = 500, tolerance: float = 1e-6) -> GroupFit:
    """Fit a group of sources jointly (see module docstring)."""
    prob = _Problem(model, starts, ranges, contexts, bands)
    n_par = prob.z0.size
    n_pix = sum(b.npix for b in bands)
    # MINPACK bounds its first step by 100 |D x0|, and by 100 alone when x0 = 0
    # (every parameter at the centre of its range, as a point source starts):
    # that first step saturates the sigmoids and LM stops where it started. The
    # unknowns are therefore z + 1, which changes nothing else.
    shift = 1.0
    result = least_squares(lambda u: prob.evaluate(u - shift)[0], prob.z0 + shift,
                           jac=lambda u: prob.evaluate(u - shift)[1],
                           method="lm" if n_pix + len(prob.priors) > n_par else "trf",
                           x_scale="jac", max_nfev=max_iterations, xtol=tolerance, ftol=tolerance)
    _, jac, r_pix, fluxes, covs, models, th, dth = prob.evaluate(result.x - shift, final=True)
    n_flux = len(bands) * prob.m * prob.c
    dof = max(n_pix - n_par - n_flux, 1)
    cov_z = np.linalg.pinv(np.dot(jac.T, jac))
    err = np.sqrt(np.clip(np.diag(cov_z), 0, None)).reshape(prob.m, prob.p) * np.abs(dth)
    at_bound = np.array([[prob.ranges[i][j].bound_side(th[i, j]) for j in range(prob.p)]
                         for i in range(prob.m)], dtype=np.int8)
    # flux errors marginalised over the shape: conditional covariance of the
    # linear solve plus the shape covariance propagated through df/dz
    full = {b: c + g @ cov_z @ g.T for b, (c, g) in covs.items()}
    flux_err = {b: np.sqrt(np.clip(np.diag(v), 0, None)).reshape(prob.m, prob.c) for b, v in full.items()}
    # each member's own block (its components' fluxes covary: a bulge takes what its disk leaves)
    flux_cov = {b: np.stack([v[k * prob.c:(k + 1) * prob.c, k * prob.c:(k + 1) * prob.c] for k in range(prob.m)])
                for b, v in full.items()}
    chi2 = float(np.sum(r_pix ** 2))
    return GroupFit(th, err, fluxes, flux_err, chi2 / dof, int(result.nfev),
                    _STOP.get(result.status, str(result.status)), bool(result.status > 0),
                    at_bound, models, chi2, n_pix, float(2.0 * result.cost), flux_cov)


def render_group(model: ModelDefinition, theta: np.ndarray, fluxes: np.ndarray,
                 grid: BandGrid) -> np.ndarray:
    """Model image of fitted members (``theta`` (m, p), ``fluxes`` (m, c) in
    one band) on any ``grid``: used to subtract a fit beyond its window."""
    image = np.zeros(grid.shape)
    for i in range(theta.shape[0]):
        for k, comp in enumerate(model.components):
            if not np.isfinite(fluxes[i, k]) or fluxes[i, k] == 0:
                continue
            g, _ = component_geometry(model, comp, theta[i])
            if comp.profile == "point":
                img, _ = render_point(grid, g[0], g[1], False)
            else:
                img, _ = render_profile(grid, g[0], g[1], float(np.exp(g[2])), g[3], g[4], g[5], False)
            image += fluxes[i, k] * img
    return image
