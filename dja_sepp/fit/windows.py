"""Groups of sources fitted together, and their detection-frame windows."""
from __future__ import annotations

import numpy as np
from astropy.table import Table

__all__ = ["make_groups", "det_window", "groups_holding"]


def make_groups(sources: Table, max_size: int, solo_ratio: float = 0.0) -> list[np.ndarray]:
    """Row indices fitted together: one detection's deblended children when
    there are at most ``max_size`` of them, else each child alone; a child
    fainter than ``solo_ratio`` x the brightest of its group is fitted alone.

    Joint fits cost ~(members x parameters)^2 per step; a large deblended
    complex is cheaper and as accurate fitted source by source, brightest
    first, each seeing its brighter neighbours subtracted and its fainter
    ones masked (see :class:`BuiltinEngine`). A much fainter child is most
    often a piece of its bright sibling: alone, it is tested against the
    sibling's subtracted model before any fit.
    """
    parent = np.asarray(sources["PARENT_ID"]) if "PARENT_ID" in sources.colnames \
        else np.arange(len(sources))
    flux = np.nan_to_num(np.asarray(sources["FLUX_AUTO"], float), nan=0.0) \
        if "FLUX_AUTO" in sources.colnames else np.ones(len(sources))
    groups = []
    for pid in np.unique(parent):
        rows = np.flatnonzero(parent == pid)
        if len(rows) > max_size:
            groups += [np.array([r]) for r in rows]
            continue
        faint = flux[rows] < solo_ratio * flux[rows].max()
        groups += ([rows[~faint]] if (~faint).any() else []) + [np.array([r]) for r in rows[faint]]
    return groups


def det_window(sources, rows, shape, opts) -> tuple[slice, slice]:
    """Detection-frame window around a group: Kron ellipses + bboxes + margin."""
    s = sources[rows]
    kron = np.asarray(s["KRON_RADIUS"], float) * np.asarray(s["A_IMAGE"], float)
    reach = np.maximum(float(opts["window_kron"]) * np.nan_to_num(kron, nan=5.0), 0.5 * float(opts["window_min"]))
    reach = np.minimum(reach, 0.5 * float(opts["window_max"]))
    x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
    x_lo = min(np.min(x - reach), np.min(np.asarray(s["XMIN"]) - 3))
    x_hi = max(np.max(x + reach), np.max(np.asarray(s["XMAX"]) + 3))
    y_lo = min(np.min(y - reach), np.min(np.asarray(s["YMIN"]) - 3))
    y_hi = max(np.max(y + reach), np.max(np.asarray(s["YMAX"]) + 3))
    return (slice(int(max(0, np.floor(y_lo))), int(min(shape[0], np.ceil(y_hi) + 1))),
            slice(int(max(0, np.floor(x_lo))), int(min(shape[1], np.ceil(x_hi) + 1))))


def groups_holding(groups: list[np.ndarray], sources: Table, new: list[np.ndarray], shape, opts) -> list[int]:
    """Indices of ``groups`` whose fit window holds a source of ``new``."""
    rows = np.concatenate(new)
    x, y = np.asarray(sources["x"], float)[rows], np.asarray(sources["y"], float)[rows]
    hosts = []
    for gi, g in enumerate(groups):
        ys, xs = det_window(sources, g, shape, opts)
        if np.any((x >= xs.start) & (x < xs.stop) & (y >= ys.start) & (y < ys.stop)):
            hosts.append(gi)
    return hosts
