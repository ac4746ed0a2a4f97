"""Merge: core ownership, the safety-net sky match and stable ids."""
import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from dja_sepp.merge import merge_catalogs
from dja_sepp.tiling import Tile, TileGrid
from fieldfiles import tan_wcs


def _grid(n=2, core=100, halo=20):
    size = n * core
    tiles = []
    for r in range(n):
        for c in range(n):
            core_w = (slice(r * core, (r + 1) * core), slice(c * core, (c + 1) * core))
            halo_w = tuple(slice(max(0, s.start - halo), min(size, s.stop + halo)) for s in core_w)
            tiles.append(Tile(r, c, core_w, halo_w))
    return TileGrid((size, size), core, halo, n, n, tiles)


def _tile_table(tile, positions, wcs):
    """What a tile would write: rows whose centroid (0-based) it saw."""
    x = np.array([p[0] for p in positions], float)
    y = np.array([p[1] for p in positions], float)
    ra, dec = wcs.pixel_to_world_values(x, y)
    t = Table({"X_IMAGE": x + 1, "Y_IMAGE": y + 1, "RA": ra, "DEC": dec,
               "FLUX_AUTO": np.ones(len(x))})
    t["TILE_ID"] = tile.id
    return t


def test_border_and_corner_sources_once():
    grid = _grid()
    wcs = tan_wcs(grid.shape, 0.04)
    border = (99.5, 40.0)   # exactly on the edge between r00c00 and r00c01
    corner = (99.5, 99.5)   # the corner of four cores
    inside = (30.0, 30.0)
    tables = []
    for tile in grid.tiles:  # every tile saw all three (halos overlap)
        owned = [p for p in (border, corner, inside) if tile.in_core(*p)]
        tables.append(_tile_table(tile, owned, wcs))
    merged, stats = merge_catalogs(tables, grid, match_radius=0.1)
    assert len(merged) == 3
    assert stats.n_duplicates == 0 and stats.n_outside_core == 0
    assert list(merged["ID"]) == [1, 2, 3]


def test_rows_outside_their_core_are_dropped():
    grid = _grid()
    wcs = tan_wcs(grid.shape, 0.04)
    tile = grid.tiles[0]
    table = _tile_table(tile, [(50, 50), (150, 50)], wcs)  # second is in the halo of r00c00
    merged, stats = merge_catalogs([table], grid)
    assert len(merged) == 1 and stats.n_outside_core == 1


def test_safety_net_keeps_copy_deepest_in_its_core():
    grid = _grid()
    wcs = tan_wcs(grid.shape, 0.04)
    left, right = grid.by_id()["r00c00"], grid.by_id()["r00c01"]
    # one source measured by two tiles with centroids 0.4 px apart across the border
    a = _tile_table(left, [(99.3, 60.0)], wcs)    # 0.2 px inside left core
    b = _tile_table(right, [(99.7, 60.0)], wcs)   # 0.2 px inside right core
    b["X_IMAGE"][0] = 99.9 + 1  # deeper in its core (0.4 px)
    b["RA"][0], b["DEC"][0] = wcs.pixel_to_world_values(99.9, 60.0)
    merged, stats = merge_catalogs([a, b], grid, match_radius=0.1)
    assert len(merged) == 1 and stats.n_duplicates == 1
    assert merged["TILE_ID"][0] == "r00c01"
    assert stats.removed[0][0] == "r00c00"
    # with the safety net off both copies stay: proves the net did the work
    merged_off, _ = merge_catalogs([a, b], grid, match_radius=0)
    assert len(merged_off) == 2


def test_close_pair_in_one_tile_is_not_merged():
    grid = _grid()
    wcs = tan_wcs(grid.shape, 0.04)
    t = _tile_table(grid.tiles[0], [(50.0, 50.0), (50.5, 50.0)], wcs)  # 0.02" apart, same tile
    merged, stats = merge_catalogs([t], grid, match_radius=0.1)
    assert len(merged) == 2 and stats.n_duplicates == 0


def test_ids_are_stable_and_unique():
    grid = _grid()
    wcs = tan_wcs(grid.shape, 0.04)
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 199, size=(200, 2))
    tables = [_tile_table(t, [p for p in pts if t.in_core(*p)], wcs) for t in grid.tiles]
    m1, _ = merge_catalogs(tables, grid)
    m2, _ = merge_catalogs(tables[::-1], grid)
    assert len(m1) == 200 and len(set(m1["ID"])) == 200
    np.testing.assert_array_equal(m1["X_IMAGE"], m2["X_IMAGE"])
    np.testing.assert_array_equal(m1["ID"], m2["ID"])
