"""Detection-frame windows of groups of sources."""
from __future__ import annotations

import numpy as np
from astropy.table import Table

__all__ = ["det_window", "groups_holding"]


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
