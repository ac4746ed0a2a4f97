"""What sep does not do: SE++'s core threshold and minimum-area cleaning.

Both steps work on sep's objects and segmentation map, on the filtered
detection image in units of the per-pixel sigma (SE++'s "SNR image": the
filtered image over the unfiltered noise, the quantity its detection
threshold is compared with).

* Core threshold (SE++ ``core_threshold_value`` / ``core_minimum_area``): a
  detection is real only if at least ``core_minarea`` of its pixels reach
  ``core_thresh`` sigma. A 0.8 sigma / 7 px detection threshold alone finds
  thousands of noise peaks; nine pixels at 1.5 sigma on the filtered image
  (~3.4 sigma of the filtered noise each) almost never come from noise.
* Cleaning (SE++ ``use_cleaning`` / ``cleaning_minimum_area``): every child
  deblended from one detection is compared with the Moffat wings of its
  siblings (profile of peak, shape and isophotal size of each sibling, slope
  ``clean_param``); a child keeping fewer than ``clean_minarea`` pixels above
  those wings is merged into the sibling that puts most light on it. Such
  children are the rings, spikes and lumps of a brighter source.
"""
from __future__ import annotations

from enum import IntFlag
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

__all__ = ["DetectionFlag", "core_counts", "cleaning_merges", "apply_merges"]


class DetectionFlag(IntFlag):
    """Bits of ``FLAGS_DET`` set by us (sep's own bits 1-128 keep their meaning:
    1 merged by deblending, 2 truncated at the image edge, 16 aperture
    truncated, 32 aperture has masked pixels, ...)."""

    LOW_SNR = 256               # detection S/N (FLUX_AUTO / error) below ``snr_doubtful``
    ABSORBED_FRAGMENTS = 512    # cleaning merged fragments (rings, spikes, lumps) into it
    NEAR_BRIGHT = 1024          # inside the spike / ring reach of a much brighter compact source
    WEAK_CORE = 2048            # passed the core threshold with fewer than twice its pixels
    RESIDUAL = 4096             # found on the residual of the fitted models (hidden in a brighter source's light)


def core_counts(snr: np.ndarray, segmap: np.ndarray, n: int, core_thresh: float) -> np.ndarray:
    """Number of pixels of each segment (1..n) at or above ``core_thresh`` in ``snr``."""
    hit = (snr >= core_thresh) & (segmap > 0)
    return np.bincount(segmap[hit], minlength=n + 1)[1:n + 1]


def _moffat(objects, k: int, xx: np.ndarray, yy: np.ndarray, thresh: float, beta: float) -> np.ndarray:
    """Moffat wings of object ``k`` at pixels ``(xx, yy)``: its peak at the
    centre, falling to the detection threshold on its isophotal ellipse."""
    a, b = max(float(objects["a"][k]), 0.3), max(float(objects["b"][k]), 0.3)
    th = float(objects["theta"][k])
    peak = max(float(objects["cpeak"][k]), thresh * 1.0001)
    dx, dy = xx - float(objects["x"][k]), yy - float(objects["y"][k])
    u = (dx * np.cos(th) + dy * np.sin(th)) / a
    v = (-dx * np.sin(th) + dy * np.cos(th)) / b
    r_iso2 = max(float(objects["npix"][k]) / (np.pi * a * b), 1.0)  # isophote in units of (a, b)
    alpha2 = r_iso2 / ((peak / thresh) ** (1.0 / beta) - 1.0)
    return peak * (1.0 + (u * u + v * v) / alpha2) ** (-beta)


def cleaning_merges(objects, snr: np.ndarray, segmap: np.ndarray, parent: np.ndarray,
                    cfg: Mapping[str, Any]) -> dict[int, int]:
    """Children to merge: 0-based object index -> index of the sibling it joins.

    Only children of one detection (same ``parent``) are compared, as SE++
    compares the sources of one group. ``snr`` is the filtered image in
    sigma units, ``objects`` sep's table with ``cpeak`` in the same units.
    """
    min_area = int(cfg["clean_minarea"])
    thresh, beta = float(cfg["thresh"]), float(cfg["clean_param"])
    merges: dict[int, int] = {}
    boxes = ndimage.find_objects(segmap)  # each segment's pixels are searched in its own box only
    for pid in np.unique(parent):
        members = np.flatnonzero(parent == pid)
        if len(members) < 2:
            continue
        for k in members:
            box = boxes[k] if k < len(boxes) else None
            if box is None:
                continue
            yy, xx = np.nonzero(segmap[box] == k + 1)
            yy, xx = yy + box[0].start, xx + box[1].start
            others = [j for j in members if j != k]
            influence = np.array([_moffat(objects, j, xx, yy, thresh, beta) for j in others])
            still = int(np.count_nonzero(snr[yy, xx] > influence.sum(axis=0)))
            if still < min_area:
                merges[int(k)] = int(others[int(np.argmax(influence.sum(axis=1)))])
    return _resolve_chains(merges)


def _resolve_chains(merges: dict[int, int]) -> dict[int, int]:
    """Follow ``a -> b -> c`` to the final host; a cycle keeps its largest index."""
    out = {}
    for k in merges:
        seen, host = {k}, merges[k]
        while host in merges and host not in seen:
            seen.add(host)
            host = merges[host]
        if host in seen:  # a cycle: nobody to merge into, keep the last one standing
            host = max(seen)
        if host != k:
            out[k] = host
    return out


def apply_merges(segmap: np.ndarray, merges: Mapping[int, int]) -> np.ndarray:
    """Segmentation map with each merged child's pixels given to its host."""
    if not merges:
        return segmap
    lut = np.arange(int(segmap.max()) + 1, dtype=segmap.dtype)
    for k, host in merges.items():
        lut[k + 1] = host + 1
    return lut[segmap]
