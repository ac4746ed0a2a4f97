"""Source detection on a tile's detection cutout, with ``sep``.

The settings (``detection:`` in ``config/defaults.yaml``) are the
predecessor's SourceXtractor++ run: background mesh 128 px smoothed over 5
cells; 0.8 sigma threshold on the image filtered by a 3x3 Gaussian of FWHM
1.5 px; minimum area 7; core threshold 1.5 sigma over 9 px; 42 deblending
thresholds at contrast 1e-4; cleaning with minimum area 15. The threshold is
relative to the per-pixel noise from the inverse-variance weight map, as SE++
does with ``weight_type=weight``.
"""
from __future__ import annotations

from typing import Any, Mapping

import astropy.units as u
import numpy as np
import sep
from astropy.table import Table
from scipy import ndimage

from ..io.cutout import BandCutout
from .cleaning import DetectionFlag, apply_merges, cleaning_merges, core_counts
from ..settings import default_config
from .noise import noise_correlation

__all__ = ["detect_sources", "gaussian_kernel", "DETECTION_COLUMNS", "DEFAULTS", "REJECTED_COLUMNS"]

#: Used when a key is absent from the ``detection:`` configuration section
#: (the shipped ``config/defaults.yaml``: defaults live there only).
DEFAULTS: dict[str, Any] = default_config()["detection"]

DETECTION_COLUMNS = (
    "x", "y", "X_IMAGE", "Y_IMAGE", "RA", "DEC", "FLUX_ISO", "FLUXERR_ISO", "FLUX_AUTO",
    "FLUXERR_AUTO", "MAG_AUTO", "KRON_RADIUS", "FLUX_RADIUS", "A_IMAGE", "B_IMAGE",
    "THETA_IMAGE", "MU_MAX", "NPIX", "SNR", "FLAGS_DET", "SEGMENT_ID", "PARENT_ID",
    "XMIN", "XMAX", "YMIN", "YMAX")

#: Columns of the rejected detections: the detection columns, why, and the host of a cleaned one.
REJECTED_COLUMNS = DETECTION_COLUMNS + ("REJECT_REASON", "MERGED_INTO")

_UNITS = {"X_IMAGE": u.pix, "Y_IMAGE": u.pix, "RA": u.deg, "DEC": u.deg, "MAG_AUTO": u.mag,
          "KRON_RADIUS": None, "FLUX_RADIUS": u.pix, "A_IMAGE": u.pix, "B_IMAGE": u.pix,
          "THETA_IMAGE": u.deg, "MU_MAX": u.mag / u.arcsec ** 2}


def gaussian_kernel(fwhm: float, size: int) -> np.ndarray:
    """Normalised ``size x size`` Gaussian filter of the given FWHM (pixels)."""
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    r = np.arange(size) - (size - 1) / 2.0
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return (k / k.sum()).astype(np.float32)


def detect_sources(det: BandCutout, config: Mapping[str, Any] | None = None,
                   return_rejected: bool = False):
    """Detect and measure sources on a detection cutout.

    Parameters
    ----------
    det : BandCutout
        Detection image and inverse-variance weight of the tile window.
    config : mapping, optional
        The ``detection:`` settings (missing keys take :data:`DEFAULTS`).
    return_rejected : bool
        Also return the detections removed by the core threshold or merged
        by cleaning.

    Returns
    -------
    Table
        One row per source with :data:`DETECTION_COLUMNS` (``x``, ``y``
        0-based in the cutout; ``X_IMAGE``, ``Y_IMAGE`` 1-based in the mosaic).
    ndarray
        int32 segmentation map (``k`` = the source with ``SEGMENT_ID == k``).
    Table, only with ``return_rejected``
        The removed detections, measured on sep's own segmentation, with
        ``REJECT_REASON`` (``core_threshold`` or ``cleaned``) and
        ``MERGED_INTO`` (the ``SEGMENT_ID`` of the host of a cleaned one, else 0).
    """
    cfg = {**DEFAULTS, **(config or {})}
    sci = np.ascontiguousarray(det.sci, dtype=np.float32)
    wht = np.ascontiguousarray(det.wht, dtype=np.float32)
    mask = ~(np.isfinite(sci) & np.isfinite(wht) & (wht > 0))
    if mask.all():
        return _result(_empty_table(), np.zeros(sci.shape, dtype=np.int32), None, return_rejected)
    sci = np.where(mask, 0.0, sci).astype(np.float32)
    err = np.where(mask, 0.0, 1.0 / np.sqrt(np.where(mask, 1.0, wht))).astype(np.float32)
    back = _background(sci, mask, cfg)
    data = np.where(mask, 0.0, sci - back).astype(np.float32)
    kernel = gaussian_kernel(cfg["filter_fwhm"], int(cfg["filter_size"]))
    objects, segmap = _extract(data, err, mask, kernel, cfg, det)
    if len(objects) == 0:
        return _result(_empty_table(), segmap.astype(np.int32), None, return_rejected)
    snr = _snr_image(data, err, kernel, str(cfg["filter_type"]))
    keep, reason, host = _clean(objects, snr, segmap, cfg)
    new_id = np.zeros(len(objects) + 1, dtype=np.int32)
    new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    noise = np.flatnonzero(~keep & (host < 0)) + 1
    merged = {int(k): int(host[k]) for k in np.flatnonzero(host >= 0)}
    clean_seg = new_id[apply_merges(np.where(np.isin(segmap, noise), 0, segmap), merged)]
    table = _measure(objects[keep], data, err, mask, clean_seg, det, cfg)
    factor = noise_correlation(data, np.where(mask, 0, wht), clean_seg > 0) \
        if cfg.get("noise_correlation") else 1.0
    _correct_errors(table, factor)
    table["FLAGS_DET"] |= _our_flags(table, cfg, det.pixel_scale, keep, host, snr, clean_seg)
    rejected = None
    if return_rejected:
        rejected = _measure(objects[~keep], data, err, mask, segmap, det, cfg,
                            seg_ids=np.flatnonzero(~keep) + 1)
        _correct_errors(rejected, factor)
        rejected["REJECT_REASON"] = np.asarray(reason[~keep], dtype="U24")
        rejected["MERGED_INTO"] = np.where(host[~keep] >= 0, new_id[host[~keep] + 1], 0).astype(np.int32)
    return _result(table, clean_seg.astype(np.int32), rejected, return_rejected)


def _correct_errors(table: Table, factor: float) -> None:
    """Flux errors of correlated noise (see :mod:`.noise`): errors from the
    weight map times the measured factor; recorded as ``NOISECOR``."""
    for col in ("FLUXERR_AUTO", "FLUXERR_ISO"):
        table[col] *= factor
    table["SNR"] /= factor
    table.meta["NOISECOR"] = round(factor, 4)  # flux errors x this: correlated noise


def _result(table, segmap, rejected, return_rejected):
    if not return_rejected:
        return table, segmap
    if rejected is None:
        rejected = _empty_table()
        rejected["REJECT_REASON"] = np.zeros(0, dtype="U24")
        rejected["MERGED_INTO"] = np.zeros(0, dtype=np.int32)
    return table, segmap, rejected


def _extract(data, err, mask, kernel, cfg, det):
    sep.set_extract_pixstack(max(300_000, int(data.size // 4)))
    sep.set_sub_object_limit(max(1024, int(cfg["deblend_nthresh"]) * 64))
    try:
        return sep.extract(
            data, float(cfg["thresh"]), err=err, mask=mask, minarea=int(cfg["minarea"]),
            filter_kernel=kernel, filter_type=str(cfg["filter_type"]),
            deblend_nthresh=int(cfg["deblend_nthresh"]), deblend_cont=float(cfg["deblend_cont"]),
            clean=bool(cfg["clean"]), clean_param=float(cfg["clean_param"]),
            segmentation_map=True)
    except Exception as exc:
        raise RuntimeError(f"sep extraction failed on a {data.shape} detection window at "
                           f"origin {det.origin}: {exc}") from exc


def _snr_image(data: np.ndarray, err: np.ndarray, kernel: np.ndarray, filter_type: str) -> np.ndarray:
    """The filtered image in units of the noise its threshold is compared with
    (``conv``: the unfiltered sigma, as SE++; ``matched``: the filtered one)."""
    filtered = ndimage.convolve(data.astype(np.float64), kernel.astype(np.float64), mode="constant")
    sigma = err.astype(np.float64)
    if filter_type == "matched":
        sigma = np.sqrt(ndimage.convolve(sigma ** 2, kernel.astype(np.float64) ** 2, mode="constant"))
    return np.divide(filtered, sigma, out=np.zeros_like(filtered), where=sigma > 0)


def _clean(objects, snr, segmap, cfg):
    """Which objects stay (bool), why the others go, and the host of merged ones (-1: none)."""
    n = len(objects)
    keep = np.ones(n, bool)
    reason = np.full(n, "", dtype="U24")
    host = np.full(n, -1, dtype=int)
    if cfg.get("core_thresh") and int(cfg.get("core_minarea") or 0) > 0:
        weak = core_counts(snr, segmap, n, float(cfg["core_thresh"])) < int(cfg["core_minarea"])
        keep[weak] = False
        reason[weak] = "core_threshold"
    if cfg.get("clean") and int(cfg.get("clean_minarea") or 0) > 0:
        live = np.where(keep[segmap - 1] & (segmap > 0), segmap, 0)
        parent = _parents(live, n)
        ix = np.clip(np.round(objects["xcpeak"]).astype(int), 0, snr.shape[1] - 1)
        iy = np.clip(np.round(objects["ycpeak"]).astype(int), 0, snr.shape[0] - 1)
        params = {k: objects[k] for k in ("x", "y", "a", "b", "theta", "npix")}
        params["cpeak"] = snr[iy, ix]
        parent = np.where(keep, parent, -1 - np.arange(n))  # dropped ones are nobody's sibling
        for k, h in cleaning_merges(params, snr, live, parent, cfg).items():
            keep[k], reason[k], host[k] = False, "cleaned", h
    return keep, reason, host


def _our_flags(table, cfg, pixscale, keep, host, snr, segmap) -> np.ndarray:
    """:class:`DetectionFlag` bits of the kept rows."""
    flags = np.zeros(len(table), dtype=np.int32)
    flags[np.asarray(table["SNR"], float) < float(cfg["snr_doubtful"])] |= int(DetectionFlag.LOW_SNR)
    kept_index = np.cumsum(keep) - 1
    hosts = np.unique(kept_index[host[host >= 0]])
    flags[hosts] |= int(DetectionFlag.ABSORBED_FRAGMENTS)
    if cfg.get("core_thresh") and int(cfg.get("core_minarea") or 0) > 0:
        counts = core_counts(snr, segmap, len(table), float(cfg["core_thresh"]))
        flags[counts < 2 * int(cfg["core_minarea"])] |= int(DetectionFlag.WEAK_CORE)
    flags[_near_bright(table, float(cfg["near_bright_dmag"]),
                       float(cfg["near_bright_radius"]) / pixscale)] |= int(DetectionFlag.NEAR_BRIGHT)
    return flags


def _near_bright(table, dmag: float, radius_pix: float) -> np.ndarray:
    """Rows within ``radius_pix`` of a source at least ``dmag`` brighter."""
    flux = np.nan_to_num(np.asarray(table["FLUX_AUTO"], float), nan=0.0)
    x, y = np.asarray(table["x"], float), np.asarray(table["y"], float)
    out = np.zeros(len(table), bool)
    bright = np.flatnonzero(flux > 0)
    for k in bright[np.argsort(-flux[bright])][:200]:  # the brightest matter; bounded cost
        near = np.hypot(x - x[k], y - y[k]) < radius_pix
        fainter = flux < flux[k] * 10 ** (-0.4 * dmag)
        out |= near & fainter
    return out


def _background(sci: np.ndarray, mask: np.ndarray, cfg: Mapping[str, Any]) -> np.ndarray:
    size = int(cfg["back_size"])
    ny, nx = sci.shape
    bw, bh = min(size, nx), min(size, ny)
    fsize = int(cfg["back_filter_size"])
    bkg = sep.Background(sci, mask=mask, bw=bw, bh=bh, fw=fsize, fh=fsize)
    return bkg.back()


def _ellipse(objects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a, b, theta`` of sep objects as sep's aperture functions accept them:
    theta within [-pi/2, pi/2] (sep stores it in float32, and the float32
    nearest pi/2 lies just above it: "invalid aperture parameters" on one
    tile of a benchmark field), 0 < b <= a."""
    a = objects["a"].astype(float)
    a = np.where(np.isfinite(a) & (a > 0), a, 0.5)
    b = objects["b"].astype(float)
    b = np.clip(np.where(np.isfinite(b) & (b > 0), b, a), 1e-3, a)
    theta = np.clip(np.nan_to_num(objects["theta"].astype(float)), -np.pi / 2, np.pi / 2)
    return a, b, theta


def _measure(objects, data, err, mask, segmap, det: BandCutout, cfg, seg_ids=None) -> Table:
    """Measure ``objects``, whose segments in ``segmap`` are ``seg_ids``
    (default 1..n). Isophotal quantities come from the segmentation map, so a
    host that absorbed cleaned fragments includes their pixels."""
    n = len(objects)
    x, y = objects["x"].astype(float), objects["y"].astype(float)
    a, b, theta = _ellipse(objects)
    seg_id = np.arange(1, n + 1, dtype=np.int32) if seg_ids is None else np.asarray(seg_ids, np.int32)
    nseg = max(int(segmap.max()), int(seg_id.max(initial=0))) + 1
    flat = segmap.ravel()
    # FLUXERR_ISO: noise summed over each source's own segment pixels.
    var = np.bincount(flat, weights=(err.astype(float) ** 2).ravel(), minlength=nseg)[seg_id]
    flux_iso = np.bincount(flat, weights=data.astype(float).ravel(), minlength=nseg)[seg_id]
    npix = np.bincount(flat, minlength=nseg)[seg_id]
    boxes = _bboxes(segmap, seg_id, objects)
    kronrad, kflag = sep.kron_radius(data, x, y, a, b, theta, 6.0, mask=mask,
                                     seg_id=seg_id, segmap=segmap)
    kronrad = np.where(np.isfinite(kronrad) & (kronrad > 0), kronrad, 0.0)
    # SExtractor's PHOT_AUTOPARAMS k, Rmin: aperture k * kronrad, at least Rmin (units of a, b).
    scale = np.maximum(cfg["kron_factor"] * kronrad, cfg["kron_min_radius"])
    flux, fluxerr, aflag = sep.sum_ellipse(data, x, y, a, b, theta, scale, err=err, mask=mask,
                                           subpix=1, seg_id=seg_id, segmap=segmap)
    rmax = np.maximum(6.0 * a, 3.0)
    rhalf, rflag = sep.flux_radius(data, x, y, rmax, 0.5, normflux=np.where(flux > 0, flux, np.nan),
                                   mask=mask, subpix=5, seg_id=seg_id, segmap=segmap)
    zp, area = det.zeropoint, det.pixel_scale ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        mag_auto = np.where(flux > 0, -2.5 * np.log10(flux) + zp, np.nan)
        mu_max = np.where(objects["peak"] > 0, -2.5 * np.log10(objects["peak"] / area) + zp, np.nan)
        snr = np.where(fluxerr > 0, flux / fluxerr, 0.0)
    ra, dec = det.wcs.pixel_to_world_values(x, y)
    y0, x0 = det.origin
    cols = {
        "x": x, "y": y, "X_IMAGE": x + x0 + 1.0, "Y_IMAGE": y + y0 + 1.0,
        "RA": np.asarray(ra, float), "DEC": np.asarray(dec, float),
        "FLUX_ISO": flux_iso, "FLUXERR_ISO": np.sqrt(var),
        "FLUX_AUTO": flux, "FLUXERR_AUTO": fluxerr, "MAG_AUTO": mag_auto,
        "KRON_RADIUS": scale, "FLUX_RADIUS": rhalf, "A_IMAGE": a, "B_IMAGE": b,
        "THETA_IMAGE": np.degrees(theta), "MU_MAX": mu_max, "NPIX": npix.astype(np.int32),
        "SNR": snr, "FLAGS_DET": (objects["flag"] | kflag | aflag | rflag).astype(np.int32),
        "SEGMENT_ID": seg_id, "PARENT_ID": _parents(segmap, seg_id),
        "XMIN": boxes[:, 0], "XMAX": boxes[:, 1], "YMIN": boxes[:, 2], "YMAX": boxes[:, 3],
    }
    table = Table(cols)
    for name, unit in _UNITS.items():
        if unit is not None:
            table[name].unit = unit
    return table


def _parents(segmap: np.ndarray, seg_id) -> np.ndarray:
    """Sources deblended from one detection share a parent: the touching
    segments form one connected component of the segmentation map.
    ``seg_id``: the segments asked for (an int n means 1..n)."""
    seg_id = np.arange(1, seg_id + 1) if np.isscalar(seg_id) else np.asarray(seg_id)
    labels, _ = ndimage.label(segmap > 0, structure=np.ones((3, 3), dtype=bool))
    parent = np.zeros(max(int(segmap.max()), int(seg_id.max(initial=0))) + 1, dtype=np.int32)
    # any pixel of each segment gives its component
    flat_seg, flat_lab = segmap.ravel(), labels.ravel()
    nz = flat_seg > 0
    parent[flat_seg[nz]] = flat_lab[nz]
    return parent[seg_id]


def _bboxes(segmap: np.ndarray, seg_id: np.ndarray, objects) -> np.ndarray:
    """(xmin, xmax, ymin, ymax) of each segment; sep's box where it has no pixels."""
    slices = ndimage.find_objects(segmap)
    out = np.stack([objects["xmin"], objects["xmax"], objects["ymin"], objects["ymax"]], 1).astype(np.int32)
    for i, s in enumerate(seg_id):
        sl = slices[s - 1] if 0 < s <= len(slices) else None
        if sl is not None:
            out[i] = (sl[1].start, sl[1].stop - 1, sl[0].start, sl[0].stop - 1)
    return out


def _empty_table() -> Table:
    ints = {"NPIX", "FLAGS_DET", "SEGMENT_ID", "PARENT_ID", "XMIN", "XMAX", "YMIN", "YMAX"}
    return Table({c: np.zeros(0, dtype=np.int32 if c in ints else float) for c in DETECTION_COLUMNS})
