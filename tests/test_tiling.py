"""Tiling: exact partition, chunk alignment on every band grid, ownership."""
import numpy as np
import pytest
from astropy.wcs import WCS
from regions import Regions

from dja_sepp.io.field import Field
from dja_sepp.tiling import busiest_first, grid_geometry, make_tiles
from fieldfiles import write_field


@pytest.fixture
def field(tmp_path):
    write_field(tmp_path, det_shape=(300, 430))
    return Field.from_directory(tmp_path)


def test_cores_partition_the_field_exactly(field):
    grid = make_tiles(field, tile_size=5.0, overlap=1.0, align=32)
    cover = np.zeros(grid.shape, dtype=int)
    for tile in grid.tiles:
        cover[tile.core] += 1
    assert (cover == 1).all()
    assert grid.core_size == 128 and grid.halo == 25
    assert (grid.nrows, grid.ncols) == (3, 4)


def test_core_edges_on_chunk_grid_of_every_band(field):
    grid = make_tiles(field, tile_size=5.0, overlap=1.0, align=32)
    for band, image in field.bands.items():
        cy, cx = grid.chunks_on(image.factor)
        for tile in grid.tiles:
            ys, xs = tile.core_on(image.factor)
            assert ys.start % cy == 0 and xs.start % cx == 0
            # a core is exactly one chunk (or the partial last chunk)
            assert ys.stop - ys.start == min(cy, image.shape[0] - ys.start)
            assert xs.stop - xs.start == min(cx, image.shape[1] - xs.start)


def test_halo_clipped_and_contains_core(field):
    grid = make_tiles(field, tile_size=5.0, overlap=1.0, align=32)
    for tile in grid.tiles:
        for c, h, n in zip(tile.core, tile.halo, grid.shape):
            assert h.start == max(0, c.start - grid.halo) and h.stop == min(n, c.stop + grid.halo)


def test_border_and_corner_positions_owned_once(field):
    grid = make_tiles(field, tile_size=5.0, overlap=1.0, align=32)
    edge = grid.core_size - 0.5  # pixel edge between two cores
    points = np.array([[edge, 10.0], [10.0, edge], [edge, edge], [edge - 1e-9, edge],
                       [-0.5, -0.5], [429.49, 299.49]])
    for x, y in points:
        owners = [t.id for t in grid.tiles if t.in_core(x, y)]
        assert len(owners) == 1, (x, y, owners)
        assert grid.tile_at(x, y).id == owners[0]


def test_empty_tiles_skipped(tmp_path):
    write_field(tmp_path, det_shape=(256, 256))
    from astropy.io import fits
    with fits.open(tmp_path / "tst-ir_drc_wht.fits", mode="update") as hdul:
        hdul[0].data[:128, :128] = 0
    grid = make_tiles(Field.from_directory(tmp_path), tile_size=128 * 0.04, overlap=0.4, align=64)
    assert (grid.nrows, grid.ncols) == (2, 2)
    assert sorted(t.id for t in grid.tiles) == ["r00c01", "r01c00", "r01c01"]


def test_single_tile_when_tile_larger_than_field(field):
    grid = make_tiles(field, tile_size=1000.0, overlap=5.0, align=64)
    assert len(grid.tiles) == 1
    assert grid.tiles[0].core == (slice(0, 300), slice(0, 430))


def test_ds9_regions_and_png(field, tmp_path):
    grid = make_tiles(field, tile_size=5.0, overlap=1.0, align=32)
    reg = grid.write_ds9(tmp_path / "tiles.reg", field.detection.wcs)
    text = reg.read_text()
    assert "fk5" in text or "icrs" in text
    regions = Regions.read(str(reg), format="ds9")
    assert len(regions) == 2 * len(grid.tiles)
    # first core polygon's vertices map back to its pixel corners
    pix = regions[0].to_pixel(field.detection.wcs)
    ys, xs = grid.tiles[0].core
    assert np.allclose(sorted(set(np.round(pix.vertices.x, 3))), [xs.start - 0.5, xs.stop - 0.5])
    png = grid.plot(tmp_path / "tiles.png", np.zeros(grid.shape))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_geometry_rounds_to_alignment():
    core, halo, nr, nc = grid_geometry((28672 // 2, 14336), 0.04, 120.0, 30.0, 64)
    assert core % 64 == 0 and abs(core * 0.04 - 120.0) < 64 * 0.04
    assert halo == 750 and nr == -(-14336 // core)


def test_busiest_tiles_first(field):
    """Tiles are ordered by the halo area above 3 sigma of a strided preview, most first."""
    grid = make_tiles(field, tile_size=5.0, overlap=1.0, align=32)   # 3 x 4 tiles, 128 px cores, 25 px halos
    step = 2
    preview = np.random.default_rng(1).normal(0.0, 1.0, (150, 215))
    big = (slice(160 // step, 220 // step), slice(160 // step, 220 // step))   # in r01c01's halo only
    small = (slice(20 // step, 40 // step), slice(412 // step, 428 // step))   # in r00c03's halo only
    preview[big] += 50.0
    preview[small] += 50.0
    order = [t.id for t in busiest_first(grid.tiles, preview, step, nsigma=5.0)]  # no noise peak above 5 sigma
    assert order[:2] == ["r01c01", "r00c03"]
    # the others (no bright pixel in their halo) keep the grid order
    assert order[2:] == [t.id for t in grid.tiles if t.id not in ("r01c01", "r00c03")]
    # no coverage at all (zeros): the grid order
    assert busiest_first(grid.tiles, np.zeros((150, 215)), step) == grid.tiles
