"""Encircled energy of a band out to large radius, from its PSF stars.

A PSF stamp of ~35 px holds only ~86-92 % of a JWST star's light (the rest is
in the Airy rings and diffraction spikes out to several arcsec); a model made
with a unit-sum stamp then gives fluxes 7-14 % low. This module measures the
curve of growth of the selected stars to large radius so that a stamp can
carry the share of the *total* light that falls in its footprint.

Per star: a cutout out to the background annulus; other sources masked in two
passes (a generous deblended mask builds a 2-D stack of all stars, in which
fainter stars fill what the mask took from bright stars' spikes; then what the
scaled stack does not explain is another source); the mean surface brightness
in exact annuli over the unmasked pixels (photutils'
:class:`~photutils.profiles.RadialProfile`) minus the star's local background
(outer annulus). On a star-rich field that annulus holds mostly other stars'
wings, below any mask: the light of every point source near a star (the
stars' 2-D stack scaled to it) is then taken off the cutouts
(:mod:`dja_sepp.psf.starcuts`) and the curve measured again. Profiles are
normalised by each star's flux within a fixed radius and stacked
(inverse-variance weights, clipped; the error is the larger of the pixel
noise and the scatter between stars). The stack is used out to
its *reach*, where its S/N falls below ``snr_reach``: on a crowded field the
neighbours' light left after masking, not the pixel noise, sets it. Over the
outer part of the measured range the stack is fitted by ``K r^-index`` (the
azimuthal mean of Airy rings and spikes falls as r^-3); the same model gives
the star's own light in the background annulus (added back) and the light
beyond the reach (the tail). In a run, each band's tail is then replaced by
the one the band measured furthest in units of wavelength implies
(:mod:`dja_sepp.psf.wings`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from astropy.table import Table

from ..settings import default_config
from .starcuts import (StarCutout, core_light, first_mask, light_model, model_stack, pixel_noise,
                       remove_neighbours, residual_mask, star_cutouts)

__all__ = ["EnergyCurve", "measure_energy", "curve_from_stack", "stamp_fraction", "match_profile", "DEFAULTS"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = default_config()["psf"]["energy"]


@dataclass
class EnergyCurve:
    """Encircled energy of one band as a fraction of the total light.

    Attributes
    ----------
    band : str
    pixel_scale : float
        Arcsec per band pixel.
    radius : ndarray
        Outer radii of the annuli (band pixels), up to ``r_max``.
    ee : ndarray
        Fraction of the total light within each ``radius``.
    tail : float
        Fraction beyond ``reach`` (from the wing model).
    reach : float
        Radius (band pixels) out to which the stack has ``snr_reach`` S/N
        (at most ``r_max``): measured inside, wing model beyond.
    n_stars : int
    wing_amplitude : float
        ``K`` of the wing model, per unit of total flux (band-pixel units).
    wing_index : float
    surface : ndarray
        Mean surface brightness per annulus (ending at ``radius``), per unit
        of total flux and band pixel.
    """

    band: str
    pixel_scale: float
    radius: np.ndarray
    ee: np.ndarray
    tail: float
    reach: float
    n_stars: int
    wing_amplitude: float
    wing_index: float
    surface: np.ndarray = None
    meta: dict = field(default_factory=dict)

    def at(self, r_pix: float) -> float:
        """Fraction of the total light within ``r_pix`` band pixels; beyond
        the reach from the wing model."""
        r_max = float(self.radius[-1])
        if r_pix <= r_max:
            return float(np.interp(r_pix, np.r_[0.0, self.radius], np.r_[0.0, self.ee]))
        return 1.0 - self.tail * (r_max / r_pix) ** (self.wing_index - 2)

    def surface_at(self, r_pix: np.ndarray) -> np.ndarray:
        """Azimuthal mean surface brightness (per unit total flux and band
        pixel) at ``r_pix``: the measured annuli within the reach, the wing
        model beyond."""
        r_pix = np.asarray(r_pix, float)
        mid = 0.5 * (np.r_[0.0, self.radius[:-1]] + self.radius)
        inside = np.interp(r_pix, mid, self.surface)
        beyond = self.wing_amplitude * np.maximum(r_pix, 1e-9) ** -self.wing_index
        return np.where(r_pix <= self.reach, inside, beyond)

    def with_tail(self, tail: float, source: str) -> "EnergyCurve":
        """The same measured light within the reach, normalised to a total
        whose share beyond the reach is ``tail`` (taken from ``source``)."""
        factor = (1.0 - tail) / (1.0 - self.tail)
        meta = {**self.meta, "tail_from": source, "own_tail": round(self.tail, 5)}
        k = tail * (self.wing_index - 2) / (2 * np.pi * self.reach ** (2 - self.wing_index))
        return EnergyCurve(self.band, self.pixel_scale, self.radius, self.ee * factor, float(tail),
                           self.reach, self.n_stars, k, self.wing_index, self.surface * factor, meta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (radii in arcsec)."""
        return {"radius_arcsec": np.round(self.radius * self.pixel_scale, 4).tolist(),
                "ee": np.round(self.ee, 5).tolist(), "tail_beyond_reach": round(self.tail, 5),
                "reach_arcsec": round(self.reach * self.pixel_scale, 3), "n_stars": self.n_stars,
                "wing_index": self.wing_index, **self.meta}


def _edges(norm_radius: float, r_max: float, bg: tuple[float, float]) -> np.ndarray:
    """Annulus edges (pixels): 1 px steps to past ``norm_radius`` (so that
    stamp-sized radii are edges), then 8 % steps to ``r_max``, then the
    background annulus as the last bin."""
    lin = np.arange(0.0, np.ceil(norm_radius) + 4.0)
    geo = [lin[-1]]
    while geo[-1] * 1.08 < r_max:
        geo.append(geo[-1] * 1.08)
    edges = np.r_[lin, geo[1:], r_max]
    if bg[0] > r_max:
        edges = np.r_[edges, bg[0]]
    return np.r_[edges, bg[1]]


def _background(star: StarCutout, r0: float, r1: float, mean: float, how) -> float:
    """Local background of a star in the annulus ``[r0, r1]``: the mean or
    (``how == "median"``) a sigma-clipped median of the unmasked pixels."""
    if how != "median":
        return mean
    from astropy.stats import sigma_clipped_stats
    yy, xx = np.indices(star.sci.shape)
    r = np.hypot(xx - star.xy[0], yy - star.xy[1])
    pix = star.sci[(r >= r0) & (r < r1) & ~star.mask]
    return float(sigma_clipped_stats(pix, sigma=3.0)[1])


def _star_profile(star: StarCutout, edges: np.ndarray, local_background="mean", tolerance: float = 0.0):
    """Background-subtracted mean surface brightness per annulus of one star,
    its error, and the valid area fraction per annulus. ``tolerance`` of
    the neighbours' light removed from an annulus adds to its error: a star
    whose background annulus held several times its own light in other
    stars' wings weighs little, however well they were removed."""
    from photutils.profiles import RadialProfile
    if star.mask[int(round(star.xy[1])), int(round(star.xy[0]))]:
        return None
    prof = RadialProfile(star.sci, star.xy, edges, error=pixel_noise(star), mask=star.mask)
    frac = np.asarray(prof.area, float) / (np.pi * np.diff(edges ** 2))
    mean = np.asarray(prof.profile, float)
    perr = np.asarray(prof.profile_error, float)
    if star.removed is not None and tolerance > 0:
        removed = RadialProfile(star.removed, star.xy, edges, mask=star.mask).profile
        perr = np.hypot(perr, tolerance * np.nan_to_num(np.asarray(removed, float)))
    if frac[-1] < 0.3 or np.any(frac[:4] < 0.9):
        return None   # no background measurement, or the core is masked
    if local_background:   # the last (outer) annulus
        mean = mean - _background(star, edges[-2], edges[-1], mean[-1], local_background)
        perr = np.hypot(perr, perr[-1])
    return mean, perr, frac


def _stack(profiles: list, norm_idx: int, full: np.ndarray, clip: float):
    """Normalise each profile by its flux within edge ``norm_idx`` and combine
    (inverse-variance weights, stars clipped per annulus against the stack)."""
    vals, errs = [], []
    for mean, perr, frac in profiles:
        norm = float(np.sum(mean[:norm_idx] * full[:norm_idx]))
        if norm <= 0:
            continue
        ok = frac > 0.2
        vals.append(np.where(ok, mean / norm, np.nan))
        errs.append(np.where(ok, perr / norm, np.nan))
    vals, errs = np.array(vals), np.array(errs)
    w = np.where(np.isfinite(vals) & (errs > 0), 1 / np.where(errs > 0, errs, 1) ** 2, 0.0)
    vals = np.nan_to_num(vals)
    for _ in range(3):
        stack = np.sum(w * vals, 0) / np.maximum(np.sum(w, 0), 1e-300)
        # the scatter between stars (sub-pixel centring, residual neighbours)
        # exceeds the pixel noise near the core: clip on both
        spread = _wmad(vals, w, stack)
        bad = np.abs(vals - stack) > clip * np.hypot(np.sqrt(1 / np.maximum(w, 1e-300)), spread)
        w = np.where(bad, 0.0, w)
    stack = np.sum(w * vals, 0) / np.maximum(np.sum(w, 0), 1e-300)
    # neighbours' light left after masking scatters the stars more than the
    # pixel noise says: the error is the larger of the two
    sw = np.maximum(np.sum(w, 0), 1e-300)
    empirical = np.sqrt(np.sum(w ** 2 * (vals - stack) ** 2, 0)) / sw
    err = np.maximum(1 / np.sqrt(sw), empirical)
    return stack, err, len(vals)


def _wmad(vals: np.ndarray, w: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Robust spread of the stars about ``centre`` per annulus."""
    dev = np.abs(vals - centre)
    out = np.zeros(vals.shape[1])
    for k in range(vals.shape[1]):
        use = w[:, k] > 0
        if use.sum() >= 3:
            out[k] = 1.4826 * np.median(dev[use, k])
    return out


def _ring_mean_power(r0: np.ndarray, r1: np.ndarray, index: float) -> np.ndarray:
    """Area mean of ``r^-index`` over annuli ``[r0, r1]`` (index != 2)."""
    p = 2.0 - index
    return 2.0 * (r1 ** p - r0 ** p) / p / (r1 ** 2 - r0 ** 2)


def _wing_annuli(r0: np.ndarray, lo: float, usable: np.ndarray) -> np.ndarray:
    """The annuli (inner radii ``r0``) a wing is fitted to: the usable ones
    from ``lo`` on, else the last three."""
    use = (r0 >= lo) & (r0 >= 1.0) & usable
    if use.sum() < 3:
        use = np.zeros(len(r0), bool)
        use[-3:] = True
    return use


def _fit_wing(stack, err, edges, lo: float, index: float, u_bg: float) -> float:
    """``K`` of ``S(r) = K r^-index`` fitted to the (background-subtracted)
    stack over the annuli from ``lo`` on (at least the last three)."""
    r0, r1 = edges[:-1], edges[1:]
    use = _wing_annuli(r0, lo, err > 0)
    m = _ring_mean_power(r0[use], r1[use], index) - u_bg
    w = 1 / err[use] ** 2
    return max(float(np.sum(w * m * stack[use]) / np.sum(w * m ** 2)), 0.0)


def _fit_wing_area(stack, edges, lo: float, index: float, u_bg: float) -> float:
    """``K`` of ``S(r) = K r^-index`` matching the light of the annuli from
    ``lo`` on (at least the last three) in total: each annulus weighs by its
    area, so the outer ones, where rings and the aberration halo modulate the
    wing least, carry the fit."""
    r0, r1 = edges[:-1], edges[1:]
    use = _wing_annuli(r0, lo, np.ones(len(r0), bool))
    area = np.pi * (r1[use] ** 2 - r0[use] ** 2)
    model = (_ring_mean_power(r0[use], r1[use], index) - u_bg) * area
    return max(float(np.sum(stack[use] * area) / np.sum(model)), 0.0)


def _wavelength(band: str) -> float | None:
    from ..bands import pivot_wavelength
    try:
        return pivot_wavelength(band)
    except KeyError:
        return None


def _reach(stack, err, edges, start: int, snr: float, r_max: float) -> int:
    """Number of annuli (from the centre) measured with S/N >= ``snr``,
    at least those inside the normalisation radius, at most to ``r_max``."""
    low = np.nonzero((stack[start:] < snr * err[start:]) | (edges[start + 1:] > r_max + 1e-9))[0]
    return start + (int(low[0]) if len(low) else len(stack) - 1 - start)


def measure_energy(image, stars: Table, settings: Mapping[str, Any] | None = None,
                   norm_radius: float = 17.0, neighbours: Table | None = None) -> EnergyCurve:
    """Encircled energy of ``image``'s band from ``stars`` (RA/DEC columns).

    Parameters
    ----------
    image : dja_sepp.io.field.Image
        The band mosaic.
    stars : Table
        Selected PSF stars (``RA``, ``DEC``).
    settings : mapping, optional
        Overrides of ``psf.energy`` (see ``config/defaults.yaml``).
    norm_radius : float
        Band pixels: each star is normalised by its flux within this radius
        (any radius well inside the stamp; the result does not depend on it).
    neighbours : Table, optional
        Point sources (``RA``, ``DEC``; :func:`dja_sepp.psf.stars.point_sources`)
        whose light is removed from the stars' cutouts before their profiles
        are measured (``remove_neighbours``): on a star-rich field their wings
        fill the background annulus.

    Raises
    ------
    ValueError
        When fewer than 3 stars give a usable profile.
    """
    s = {**DEFAULTS, **(settings or {})}
    scale = image.pixel_scale
    r_max = float(s["r_max"]) / scale
    bg = (float(s["background"][0]) / scale, float(s["background"][1]) / scale)
    edges = _edges(norm_radius, r_max, bg)
    cut = star_cutouts(image, stars, edges, s)
    curve = _curve(image, cut, edges, norm_radius, s)
    if s["remove_neighbours"] and neighbours is not None and len(neighbours):
        # the first curve is good to ~1 %: ample for light that is itself ~1 % of a star's
        model = light_model(cut, curve, norm_radius)
        removed = remove_neighbours(image, cut, neighbours, model, norm_radius, float(s["model_tolerance"]))
        curve = _curve(image, cut, edges, norm_radius, s, model)
        curve.meta["neighbours_removed"] = removed
    log.info("PSF %s: EE(%.2f\") = %.3f from %d stars (the reach), wing model beyond", image.band,
             curve.reach * scale, curve.ee[-1], curve.n_stars)
    return curve


def _curve(image, cut: list, edges: np.ndarray, norm_radius: float, s: Mapping[str, Any],
           model: np.ndarray | None = None) -> EnergyCurve:
    """The curve of growth of the star cutouts as they are now (``model``:
    a 2-D stack of them already made)."""
    profiles = _profiles(image, cut, edges, norm_radius, s, model)
    full = np.pi * np.diff(edges ** 2)
    norm_idx = int(np.searchsorted(edges, norm_radius))   # an edge by construction
    stack, err, n = _stack(profiles, norm_idx, full, float(s["clip"]))
    return curve_from_stack(image.band, image.pixel_scale, stack, err, edges, norm_idx, n, s)


def curve_from_stack(band: str, scale: float, stack: np.ndarray, err: np.ndarray, edges: np.ndarray,
                     norm_idx: int, n_stars: int, settings: Mapping[str, Any]) -> EnergyCurve:
    """The curve of growth of a stacked profile: measured out to the reach,
    the wing model beyond it.

    Parameters
    ----------
    stack, err : ndarray
        Mean surface brightness per annulus (its star's local background
        removed when ``local_background``) and its error, in any unit.
    edges : ndarray
        Annulus edges (band pixels), the background annulus last.
    norm_idx : int
        Annuli inside the stamp core: always measured.
    """
    s = settings
    index = float(s["wing_index"])
    r_max = float(s["r_max"]) / scale
    full = np.pi * np.diff(edges ** 2)
    # a local background removed each star's own wing light in the outer
    # annulus: the wing model says how much, and it is added back everywhere
    u_bg = _ring_mean_power(edges[-2], edges[-1], index) if s["local_background"] else 0.0
    reach_n = _reach(stack, err, edges, norm_idx, float(s["snr_reach"]), r_max)
    reach = float(edges[reach_n])
    # noise-free JWST-like PSFs: the S/N-weighted fit over 0.7-1 x the reach
    # misses the tail by up to 0.012 of the total from 0.9 "/um on, the
    # area-weighted one over 0.5-1 x by at most 0.006 from 0.8 "/um on (worse below)
    lam = _wavelength(band)
    if lam is not None and reach * scale / lam >= float(s["long_reach"]):
        k = _fit_wing_area(stack[:reach_n], edges[:reach_n + 1], float(s["wing_from_long"]) * reach,
                           index, u_bg)
    else:
        k = _fit_wing(stack[:reach_n], err[:reach_n], edges[:reach_n + 1], float(s["wing_from"]) * reach,
                      index, u_bg)
    flux = (stack[:reach_n] + k * u_bg) * full[:reach_n]
    # beyond the reach the neighbours' light left after masking outweighs
    # the star's: the wing model carries the rest
    tail = 2 * np.pi * k * reach ** (2 - index) / (index - 2)
    total = float(np.sum(flux) + tail)
    return EnergyCurve(band, scale, edges[1:reach_n + 1], np.cumsum(flux) / total, tail / total,
                       reach, n_stars, k / total, index, (stack[:reach_n] + k * u_bg) / total)


def _profiles(image, cut: list, edges: np.ndarray, norm_radius: float, s: Mapping[str, Any],
              model: np.ndarray | None = None) -> list:
    """Radial profiles of the usable stars, other sources masked in two
    passes (generous deblended mask -> 2-D stack -> what the scaled stack
    does not explain); with a ``model`` stack given, the second only."""
    if model is None:
        for st in cut:
            st.mask = first_mask(st, s)
        model = model_stack(cut, norm_radius) if cut else None
    else:
        for st in cut:
            st.flux = core_light(st, norm_radius)
    for st in cut:
        st.mask = residual_mask(st, model, s)
    profiles = [p for st in cut if st.flux > 0
                and (p := _star_profile(st, edges, s["local_background"], float(s["model_tolerance"]))) is not None]
    if len(profiles) < 3:
        raise ValueError(f"{image.sci_path}: only {len(profiles)} star(s) give a curve of growth "
                         f"in band {image.band}")
    return profiles


def stamp_fraction(curve: EnergyCurve, shape: tuple[int, int]) -> float:
    """Fraction of the total light inside a stamp footprint of ``shape``
    (odd sides, band pixels) centred on the star: the measured profile
    integrated over the parts of its annuli inside the box (the corners
    matter: ~1 % of the light), the wing model beyond the reach."""
    return float(np.sum(_box_targets(curve, shape, 0.0)[1]))


def _box_targets(curve: EnergyCurve, shape: tuple[int, int], r_min: float):
    """Annulus edges (the first bin is ``[0, r_min]``, merged) and the share
    of the total light in each annulus' part inside the box."""
    from photutils.aperture import CircularAperture
    box = np.ones(shape)
    c = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    diag = float(np.hypot(*shape)) / 2.0 + 1.0
    edges = np.r_[0.0, curve.radius]
    inside = np.array([0.0] + [float(CircularAperture(c, r).do_photometry(box, method="exact")[0][0])
                               for r in edges[1:]])
    flux = curve.surface * np.diff(inside)
    keep = np.r_[True, (edges[1:] > r_min) & (edges[:-1] < diag)]
    keep[int(np.searchsorted(edges, r_min))] = True
    cum = np.r_[0.0, np.cumsum(flux)]
    sel = np.nonzero(keep)[0]
    edges_out = edges[sel]
    targets = np.diff(cum[sel])
    if box.size > inside[-1] + 1e-6:   # box corners beyond the reach: wing model
        targets = np.r_[targets, curve.wing_amplitude * _box_wing(shape, curve.reach, curve.wing_index)]
        edges_out = np.r_[edges_out, diag]
    return edges_out, targets


def match_profile(stamp: np.ndarray, curve: EnergyCurve, r_min: float, iterations: int = 4) -> np.ndarray:
    """Rescale a stamp's annuli (beyond ``r_min`` band pixels) so that its
    encircled energy follows the stars' curve of growth, the light inside
    ``r_min`` scaled as a whole; the result sums to the stamp's share of the
    total light.

    The ePSF stack's shape is kept within each annulus (spikes, rings); only
    its radial distribution is taken from the curve of growth, which is
    measured with exact apertures at the stars' own centres and so does not
    share the stack's registration blur (measured: F444W core -2 %).
    """
    from photutils.aperture import CircularAperture
    edges, targets = _box_targets(curve, stamp.shape, r_min)
    c = ((stamp.shape[1] - 1) / 2.0, (stamp.shape[0] - 1) / 2.0)
    yy, xx = np.indices(stamp.shape)
    idx = np.clip(np.searchsorted(edges, np.hypot(xx - c[0], yy - c[1]), side="right") - 1,
                  0, len(targets) - 1)
    out = stamp / stamp.sum()
    for _ in range(iterations):
        # exact-aperture annulus fluxes (as the curve was measured); the
        # pixel-centre assignment of the scaling converges in a few passes
        enc = np.array([0.0] + [float(CircularAperture(c, r).do_photometry(out, method="exact")[0][0])
                                for r in edges[1:-1]] + [out.sum()])
        have = np.diff(enc)
        factor = np.where(have > 0, targets / np.where(have > 0, have, 1), 1.0)
        out = out * factor[idx]
    return out * (float(np.sum(targets)) / out.sum())


def _box_wing(shape: tuple[int, int], r0: float, index: float) -> float:
    """Integral of ``r^-index`` over the part of the box beyond ``r0``."""
    yy, xx = np.indices(shape, dtype=float)
    r = np.hypot(xx - (shape[1] - 1) / 2.0, yy - (shape[0] - 1) / 2.0)
    return float(np.sum(np.where(r > r0, np.maximum(r, 1e-9) ** -index, 0.0)))
