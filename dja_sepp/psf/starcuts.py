"""Cutouts of PSF stars for their curve of growth: loading, masks of the
other sources, the stars' 2-D stack, and the removal of neighbouring point
sources' light (:func:`remove_neighbours`).

Used by :mod:`dja_sepp.psf.energy`; a cutout reaches out to the background
annulus (~5"), so on a star-rich field it holds many other stars.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from astropy.table import Table

if TYPE_CHECKING:
    from .energy import EnergyCurve

__all__ = ["StarCutout", "load_star", "star_cutouts", "first_mask", "core_light", "model_stack",
           "residual_mask", "light_model", "remove_neighbours", "pixel_noise"]


def _window(image, x: float, y: float, half: int):
    """Science and weight around ``(x, y)``; pixels beyond the mosaic get zero
    weight (partial annuli are fine: they are means over valid pixels)."""
    ix, iy = int(round(x)), int(round(y))
    ny, nx = image.shape
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    sci = np.zeros((2 * half + 1,) * 2, np.float64)
    wht = np.zeros_like(sci)
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if cy1 <= cy0 or cx1 <= cx0:
        return None
    s, w = image.read((slice(cy0, cy1), slice(cx0, cx1)))
    sci[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = s
    wht[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = w
    return sci, wht, (x - x0, y - y0), (x0, y0)


@dataclass
class StarCutout:
    """One PSF star's cutout (band pixels): science, weight, the star's
    position in it and the cutout's origin in the image, the mask of other
    sources, the star's light within the normalisation radius, and the
    neighbours' light taken off ``sci`` with where it is too uncertain."""

    sci: np.ndarray
    wht: np.ndarray
    xy: tuple[float, float]
    origin: tuple[int, int] = (0, 0)   # image pixel of the cutout's first one
    scale: float = 1.0
    mask: np.ndarray | None = None
    flux: float = 0.0
    removed: np.ndarray | None = None      # neighbours' light taken off ``sci``
    subtracted: np.ndarray | None = None   # where that light is too uncertain to look


def load_star(image, x: float, y: float, half: int) -> StarCutout | None:
    """Cutout of one star, centre refined on its peak (the catalog position
    may be off by a fraction of a pixel)."""
    from photutils.centroids import centroid_quadratic
    got = _window(image, x, y, half)
    if got is None:
        return None
    sci, wht, xy, origin = got
    ix, iy = int(round(xy[0])), int(round(xy[1]))
    if np.any(wht[iy - 3:iy + 4, ix - 3:ix + 4] <= 0):
        return None
    cx, cy = centroid_quadratic(sci[iy - 3:iy + 4, ix - 3:ix + 4], fit_boxsize=5)
    if np.isfinite(cx) and np.isfinite(cy) and np.hypot(cx + ix - 3 - xy[0], cy + iy - 3 - xy[1]) < 1.5:
        xy = (float(cx + ix - 3), float(cy + iy - 3))
    return StarCutout(sci, wht, xy, origin, image.pixel_scale)


def _segments(data: np.ndarray, err: np.ndarray, valid: np.ndarray, thresh: float,
              deblend_cont: float, ellipse: float = 0.0, smooth: float = 0.0) -> np.ndarray:
    """Segmentation map (0 = sky); with ``ellipse`` > 0 every object is also
    covered out to ``ellipse`` times its second-moment ellipse (faint wings
    of galaxies lie far outside their isophotes)."""
    import sep
    kernel = _gauss_kernel(smooth) if smooth > 0 else None
    data = np.ascontiguousarray(np.where(valid, data, 0), dtype=np.float32)
    objs, seg = sep.extract(data, thresh, err=np.ascontiguousarray(err, dtype=np.float32), minarea=5,
                            segmentation_map=True, deblend_cont=deblend_cont, mask=~valid,
                            **({"filter_kernel": kernel} if kernel is not None else {}))
    if ellipse > 0 and len(objs):
        cover = np.zeros(seg.shape, dtype=bool)
        sep.mask_ellipse(cover, objs["x"], objs["y"], objs["a"], objs["b"], objs["theta"], r=ellipse)
        seg = np.where((seg == 0) & cover, len(objs) + 1, seg)
    return seg


def _gauss_kernel(sigma: float) -> np.ndarray:
    h = int(np.ceil(3 * sigma))
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    return np.exp(-0.5 * (xx ** 2 + yy ** 2) / sigma ** 2).astype(np.float32)


def pixel_noise(star: StarCutout) -> np.ndarray:
    valid = star.wht > 0
    return np.where(valid, 1 / np.sqrt(np.where(valid, star.wht, 1)), 0.0)


def first_mask(star: StarCutout, s: Mapping[str, Any]) -> np.ndarray:
    """Generous mask: deblended neighbours (may include fragments of the
    star's own spikes; only used to build the 2-D stack, where fainter stars
    fill them in)."""
    from scipy.ndimage import binary_dilation
    valid = star.wht > 0
    seg = _segments(star.sci, pixel_noise(star), valid, float(s["neighbour_thresh"]), 0.005)
    c = seg[int(round(star.xy[1])), int(round(star.xy[0]))]
    return binary_dilation((seg > 0) & (seg != c), iterations=int(s["neighbour_grow"])) | ~valid


def _shift(img: np.ndarray, dx: float, dy: float, order: int = 3) -> np.ndarray:
    from scipy.ndimage import shift
    return shift(img, (dy, dx), order=order, mode="constant", cval=0.0)


def core_light(star: StarCutout, norm_radius: float) -> float:
    """The star's light within ``norm_radius`` of its centre."""
    from photutils.aperture import CircularAperture
    return float(CircularAperture(star.xy, norm_radius).do_photometry(star.sci, method="exact")[0][0])


def model_stack(stars: list[StarCutout], norm_radius: float) -> np.ndarray:
    """2-D stack of the stars centred on the central pixel, unit flux within
    ``norm_radius``: inverse-variance weighted mean of the unmasked pixels."""
    num = np.zeros_like(stars[0].sci)
    den = np.zeros_like(num)
    c = (num.shape[1] - 1) / 2.0
    for st in stars:
        st.flux = core_light(st, norm_radius)
        if st.flux <= 0:
            continue
        dx, dy = c - st.xy[0], c - st.xy[1]
        good = _shift((~st.mask).astype(float), dx, dy, order=1) > 0.99   # every neighbour unmasked
        w = st.flux ** 2 * float(np.median(st.wht[st.wht > 0]))
        num += np.where(good, _shift(np.where(st.mask, 0, st.sci), dx, dy) / st.flux, 0) * w
        den += good * w
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def residual_mask(star: StarCutout, model: np.ndarray, s: Mapping[str, Any]) -> np.ndarray:
    """Other sources: what the star minus the scaled stack leaves above the
    noise (plus a tolerance of the model, so core mismatches stay unmasked)."""
    from scipy.ndimage import binary_dilation
    c = (model.shape[1] - 1) / 2.0
    scaled = star.flux * _shift(model, star.xy[0] - c, star.xy[1] - c)
    valid = star.wht > 0
    err = np.hypot(pixel_noise(star), float(s["model_tolerance"]) * np.abs(scaled))
    err = np.where(valid, err, 1.0)
    seg = _segments(star.sci - scaled, err, valid, float(s["neighbour_thresh"]), 1.0,
                    float(s["neighbour_ellipse"]), float(s["neighbour_smooth"]))
    mask = binary_dilation(seg > 0, iterations=int(s["neighbour_grow"]))
    # the stars are isolated (no bright neighbour within ``psf.stars.isolation``):
    # what is left near the core is the star's own mismatch with the stack
    yy, xx = np.indices(mask.shape)
    mask &= np.hypot(xx - star.xy[0], yy - star.xy[1]) > float(s["core_radius"]) / star.scale
    if star.subtracted is not None:
        mask |= star.subtracted
    return mask | ~valid


def star_cutouts(image, stars: Table, edges: np.ndarray, s: Mapping[str, Any]) -> list:
    """The brightest ``max_stars`` stars' cutouts out to the background annulus."""
    if "MAG_AUTO" in stars.colnames and len(stars) > int(s["max_stars"]):
        stars = stars[np.argsort(np.asarray(stars["MAG_AUTO"], float))[:int(s["max_stars"])]]
    half = int(np.ceil(edges[-1])) + 3
    return [st for xi, yi in zip(*_pixels(image, stars))
            if (st := load_star(image, float(xi), float(yi), half)) is not None]


def _pixels(image, table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Band-pixel positions of a table's ``RA``/``DEC``."""
    x, y = image.wcs.world_to_pixel_values(np.asarray(table["RA"], float), np.asarray(table["DEC"], float))
    return np.atleast_1d(x), np.atleast_1d(y)


def remove_neighbours(image, cut: list[StarCutout], neighbours: Table, model: np.ndarray,
                      norm_radius: float, tolerance: float) -> int:
    """Subtract every neighbouring point source's light from the star
    cutouts it reaches: the stars' 2-D stack ``model`` (:func:`light_model`)
    scaled to the neighbour's light within ``norm_radius``. Returns how many
    were removed somewhere.

    On a star-rich field the background annulus holds mostly other stars'
    wings and spikes, below any masking threshold (measured: 9.7x the star's
    own wing in F150W); the local background then takes 0.7-1 % of the total
    light off the curve of growth. The azimuthal mean is not enough: where
    a neighbour's spikes are masked, the pixels between them hold less than
    the mean. What is removed adds ``tolerance`` of itself to the error of
    the star's profile (:func:`dja_sepp.psf.energy.measure_energy`).
    """
    size = model.shape[0]
    c = (size - 1) // 2
    removed = 0
    for xn, yn in zip(*_pixels(image, neighbours)):
        near = [st for st in cut if _reaches(st, xn, yn, size)]
        got = _core_flux(image, float(xn), float(yn), norm_radius) if near else None
        if got is None:
            continue
        (px, py), flux = got
        ix, iy = int(round(px)), int(round(py))
        light = flux * _shift(model, px - ix, py - iy)
        for st in near:
            lx, ly = ix - st.origin[0], iy - st.origin[1]
            if np.hypot(lx - st.xy[0], ly - st.xy[1]) < 2.0:
                continue   # the star itself
            _subtract_at(st, light, lx - c, ly - c, tolerance)
        removed += 1
    return removed


def light_model(cut: list[StarCutout], curve: EnergyCurve, norm_radius: float) -> np.ndarray:
    """The stars' 2-D stack (unit light within ``norm_radius``, with the
    masks of the curve's measurement), nothing beyond the cutout's inscribed
    circle. Beyond the curve's reach the stack is mostly sky: its median
    level there is replaced by the wing model's mean (scaled to a star 100x
    brighter than most PSF stars, a pedestal would outweigh the light)."""
    model = model_stack(cut, norm_radius)
    c = (model.shape[0] - 1) / 2.0
    yy, xx = np.indices(model.shape)
    r = np.hypot(xx - c, yy - c)
    r_out = c - 3.0
    ring = (r >= min(curve.reach, r_out - 2.0)) & (r <= r_out)
    pedestal = float(np.median(model[ring])) - float(np.mean(curve.surface_at(r[ring]))) / curve.at(norm_radius)
    return np.where(r <= r_out, model - pedestal, 0.0)


def _subtract_at(star: StarCutout, light: np.ndarray, dx: int, dy: int, tolerance: float) -> None:
    """Take ``light`` (its pixel (0, 0) on the cutout's ``(dx, dy)``) off a
    star's cutout; where ``tolerance`` of it exceeds the pixel noise (a
    bright neighbour's core and inner spikes, which the stack matches to a
    few %) the star's profile must not look."""
    ty0, tx0 = max(dy, 0), max(dx, 0)
    ty1, tx1 = min(dy + light.shape[0], star.sci.shape[0]), min(dx + light.shape[1], star.sci.shape[1])
    if ty1 <= ty0 or tx1 <= tx0:
        return
    here, there = (slice(ty0, ty1), slice(tx0, tx1)), (slice(ty0 - dy, ty1 - dy), slice(tx0 - dx, tx1 - dx))
    star.sci[here] -= light[there]
    if star.subtracted is None:
        star.subtracted = np.zeros(star.sci.shape, bool)
        star.removed = np.zeros(star.sci.shape)
    star.removed[here] += light[there]
    star.subtracted[here] |= tolerance * light[there] > pixel_noise(star)[here]


def _reaches(st: StarCutout, x: float, y: float, size: int) -> bool:
    """Whether a stack of ``size`` pixels centred on image pixel ``(x, y)``
    overlaps the star's cutout."""
    lx, ly = x - st.origin[0], y - st.origin[1]
    return -size / 2 < lx < st.sci.shape[1] + size / 2 and -size / 2 < ly < st.sci.shape[0] + size / 2


def _core_flux(image, x: float, y: float, norm_radius: float):
    """A point source's centre (refined on its peak, image pixels) and its
    light within ``norm_radius``; None off the data or when not positive."""
    star = load_star(image, x, y, int(np.ceil(norm_radius)) + 2)
    if star is None:
        return None
    star.sci = np.where(star.wht > 0, star.sci, 0.0)
    inside = core_light(star, norm_radius)
    centre = (star.origin[0] + star.xy[0], star.origin[1] + star.xy[1])
    return (centre, inside) if inside > 0 else None
