"""The field's detection census and a representative sample of its tiles.

:func:`census` runs the detection step (the run's own ``detection:``
settings) on every tile of the field as small Dask tasks and keeps, for each
source a tile's core owns, its position on the detection grid; it also maps
which bands have valid pixels, block by block (``tiling.align`` detection
pixels, read with a stride). With that, :func:`tile_features` describes the
tiles of *any* tiling of the field (sources, usable bands, pixels read) without
detecting again, and :func:`pick_sample` chooses the tiles a sizing measures:
spread over the field's range of cost, not the first ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..tiling import Tile, TileGrid, grid_geometry

__all__ = ["Census", "census", "census_tile", "tile_features", "halo_reach", "pick_sample", "FEATURES"]

#: Per-tile quantities the cost model uses (see :func:`tile_features`).
FEATURES = ("n_sources", "n_fitted", "n_bands", "source_bands", "fitted_bands", "mpix")

_STRIDE = 8  # detection pixels between the weight samples of the band coverage map


@dataclass
class Census:
    """Sources and band coverage of a whole field.

    Attributes
    ----------
    x, y : ndarray
        0-based detection-grid positions of every source of the field.
    bands : list of str
        Measurement bands, in the field's order.
    factors : list of int
        Each band's pixel refinement over the detection grid.
    coverage : ndarray of bool, shape (n_bands + 1, ny_blocks, nx_blocks)
        Whether the detection image (first plane) and each band have valid
        pixels in each block of ``block`` detection pixels.
    block : int
        Block side (detection pixels).
    shape : tuple of int
        Detection grid shape.
    pixel_scale : float
        Detection pixel scale (arcsec).
    seconds : float
        Summed detection time of the census tasks (core-s).
    snr : ndarray or None
        Detection S/N of every source (None: unknown, no halo source counted).
    """

    x: np.ndarray
    y: np.ndarray
    bands: list[str]
    factors: list[int]
    coverage: np.ndarray
    block: int
    shape: tuple[int, int]
    pixel_scale: float
    seconds: float = 0.0
    snr: np.ndarray | None = None

    @property
    def n_sources(self) -> int:
        """Sources in the field."""
        return int(len(self.x))


def census_tile(tile: Tile, field, detection: Mapping[str, Any], block: int) -> dict:
    """Detection on one tile (a Dask task): positions of the sources its core
    owns and the coverage blocks of its core."""
    import time
    from ..detect import detect_sources
    t0 = time.process_time()
    det = field.detection.cutout(tile.halo)
    sources = detect_sources(det, detection)[0]
    ys, xs = tile.halo
    x = np.asarray(sources["x"], float) + xs.start
    y = np.asarray(sources["y"], float) + ys.start
    own = tile.in_core(x, y)
    snr = np.nan_to_num(np.asarray(sources["SNR"], float)) if "SNR" in sources.colnames else np.zeros(len(x))
    planes = [_blocks(field.detection, tile.core, block)]
    planes += [_blocks(image, tile.core, block) for image in field.bands.values()]
    return {"tile": tile.id, "x": x[own], "y": y[own], "snr": snr[own], "core": tile.core,
            "coverage": np.stack(planes), "seconds": time.process_time() - t0}


def _blocks(image, core: tuple[slice, slice], block: int) -> np.ndarray:
    """Valid-pixel flags of the ``block``-pixel blocks of a core window (on
    the detection grid), from every ``_STRIDE``-th pixel of the image."""
    ys, xs = core
    f = int(image.factor)
    step = _STRIDE * f
    sci, wht = image.read((slice(ys.start * f, ys.stop * f, step), slice(xs.start * f, xs.stop * f, step)))
    valid = (wht > 0) & (sci != 0)
    by = (np.arange(valid.shape[0]) * _STRIDE) // block
    bx = (np.arange(valid.shape[1]) * _STRIDE) // block
    out = np.zeros((math.ceil((ys.stop - ys.start) / block), math.ceil((xs.stop - xs.start) / block)), bool)
    rows, cols = np.nonzero(valid)
    out[by[rows], bx[cols]] = True
    return out


def census(field, grid: TileGrid, config: Mapping[str, Any], client=None) -> Census:
    """Detect every tile of ``grid`` (on ``client`` when given, else here).

    Parameters
    ----------
    field : Field
    grid : TileGrid
        Its cores must be multiples of ``tiling.align`` (any grid
        :func:`~dja_sepp.tiling.make_tiles` made is).
    config : mapping
        The run configuration (``detection``, ``tiling.align``).
    client : distributed.Client, optional
    """
    block = int(config["tiling"]["align"])
    if grid.core_size % block:
        raise ValueError(f"core size {grid.core_size} px is not a multiple of the block {block} px")
    if client is not None:
        futures = [client.submit(census_tile, t, field, config["detection"], block,
                                 key=f"census_{t.id}-{id(grid):x}", pure=False) for t in grid.tiles]
        parts = client.gather(futures)
    else:
        parts = [census_tile(t, field, config["detection"], block) for t in grid.tiles]
    ny, nx = grid.shape
    coverage = np.zeros((len(field.bands) + 1, math.ceil(ny / block), math.ceil(nx / block)), bool)
    for part in parts:
        ys, xs = part["core"]
        cov = part["coverage"]
        coverage[:, ys.start // block: ys.start // block + cov.shape[1],
                 xs.start // block: xs.start // block + cov.shape[2]] = cov
    x = np.concatenate([p["x"] for p in parts]) if parts else np.zeros(0)
    y = np.concatenate([p["y"] for p in parts]) if parts else np.zeros(0)
    snr = np.concatenate([p["snr"] for p in parts]) if parts else np.zeros(0)
    return Census(x=x, y=y, snr=snr, bands=list(field.bands), factors=[int(b.factor) for b in field.bands.values()],
                  coverage=coverage, block=block, shape=(ny, nx), pixel_scale=field.detection.pixel_scale,
                  seconds=float(sum(p["seconds"] for p in parts)))


def tile_features(cen: Census, tile_size: float, overlap: float, align: int,
                  halo_min_snr: float | None = None, halo_reach: int | None = None) -> list[dict]:
    """Each tile of the tiling ``(tile_size, overlap, align)`` of the census's field.

    Parameters
    ----------
    halo_min_snr : float, optional
        A tile also fits the sources of its halo this bright (``fit.overlap_min_snr``:
        their wings reach into its core), although their rows come from
        another tile: they cost it as much as its own.
    halo_reach : int, optional
        ... counted only this close to the core (detection px): the engine
        skips halo sources whose model cannot reach a core source's window
        (see :func:`halo_reach`); the whole halo when None.

    Returns
    -------
    list of dict
        One per tile with valid detection pixels: ``tile`` (id), ``row``,
        ``col``, ``n_sources`` (sources its core owns), ``n_fitted`` (those
        and the bright ones of its halo), ``n_bands`` (bands with valid
        pixels in its core), ``source_bands`` and ``fitted_bands`` (the
        products), ``mpix`` (megapixels of its halo window read over the
        detection image and those bands, each on its own grid),
        ``core_arcmin2`` and ``density`` (sources per arcmin^2 of core).
    """
    ny, nx = cen.shape
    core, halo, nrows, ncols = grid_geometry(cen.shape, cen.pixel_scale, tile_size, overlap, align)
    if core % cen.block:
        raise ValueError(f"tile core {core} px is not a multiple of the census block {cen.block} px")
    row = np.floor((cen.y + 0.5) / core).astype(int)
    col = np.floor((cen.x + 0.5) / core).astype(int)
    counts = np.zeros((nrows, ncols), int)
    np.add.at(counts, (np.clip(row, 0, nrows - 1), np.clip(col, 0, ncols - 1)), 1)
    k = core // cen.block
    out = []
    for r in range(nrows):
        for c in range(ncols):
            y0, x0 = r * core, c * core
            y1, x1 = min(y0 + core, ny), min(x0 + core, nx)
            blocks = cen.coverage[:, r * k:(r + 1) * k, c * k:(c + 1) * k].any(axis=(1, 2))
            if not blocks[0]:
                continue  # no valid detection pixel: make_tiles skips it too
            used = [f for f, ok in zip(cen.factors, blocks[1:]) if ok]
            hy = min(ny, y1 + halo) - max(0, y0 - halo)
            hx = min(nx, x1 + halo) - max(0, x0 - halo)
            area = (y1 - y0) * (x1 - x0) * (cen.pixel_scale / 60.0) ** 2
            n = int(counts[r, c])
            near = halo if halo_reach is None else min(halo, halo_reach)
            fitted = n + _bright_in_halo(cen, (max(0, y0 - near), min(ny, y1 + near)),
                                         (max(0, x0 - near), min(nx, x1 + near)), (y0, y1), (x0, x1),
                                         halo_min_snr)
            out.append({"tile": f"r{r:02d}c{c:02d}", "row": r, "col": c, "n_sources": n, "n_fitted": fitted,
                        "n_bands": len(used), "source_bands": n * len(used), "fitted_bands": fitted * len(used),
                        "mpix": hy * hx * (1 + sum(f * f for f in used)) / 1e6,
                        "core_arcmin2": area, "density": n / area if area else 0.0})
    return out


def halo_reach(cen: Census, fit: Mapping[str, Any]) -> int:
    """Detection pixels beyond the core within which the engine fits a bright
    halo source: its model reaches ``fit.psf_radius`` pixels of the coarsest
    band beyond its window, and windows reach past the core and the source
    (two ``fit.window_min`` here: an estimate, the census has no windows)."""
    return int(math.ceil(float(fit["psf_radius"]) / max(min(cen.factors, default=1), 1)
                         + 2 * float(fit["window_min"])))


def _bright_in_halo(cen: Census, hy, hx, cy, cx, min_snr: float | None) -> int:
    """Sources at least ``min_snr`` in the halo window ``hy, hx`` outside the core ``cy, cx``."""
    if min_snr is None or cen.snr is None or not len(cen.x):
        return 0
    x, y = cen.x + 0.5, cen.y + 0.5   # pixel centres to the edges' frame, as the core count
    in_halo = (y >= hy[0]) & (y < hy[1]) & (x >= hx[0]) & (x < hx[1])
    in_core = (y >= cy[0]) & (y < cy[1]) & (x >= cx[0]) & (x < cx[1])
    return int(np.count_nonzero(in_halo & ~in_core & (cen.snr >= min_snr)))


def pick_sample(features: Sequence[Mapping[str, Any]], n: int) -> list[str]:
    """Ids of ``n`` tiles that represent the field's range of cost.

    The tiles are ordered by what they will cost (fitted sources x bands,
    then pixels, then id: see :func:`tile_features`), cut into ``n`` groups
    of equal tile counts, and the middle tile of each group is taken: the
    sample spans cheap to crowded tiles in the proportions the field has
    them. (Ordered by source density, a 3-tile sample of a small field missed
    its two crowded tiles, whose cores are cut by the field's edge.) All
    tiles when ``n`` >= their number.
    """
    order = sorted(features, key=lambda f: (f["fitted_bands"], f["mpix"], f["tile"]))
    if n >= len(order):
        return [f["tile"] for f in order]
    picks = [order[min(len(order) - 1, int(math.floor((i + 0.5) * len(order) / n)))]["tile"]
             for i in range(n)]
    return list(dict.fromkeys(picks))
