"""Field input: DJA file discovery, gzip cache, window reads, clear errors."""
import gzip

import numpy as np
import pytest
from astropy.io import fits

from dja_sepp.io.field import Field, InputError
from fieldfiles import write_field, write_image


def test_finds_bands_and_grids(tmp_path):
    write_field(tmp_path)
    fld = Field.from_directory(tmp_path, cache_dir=str(tmp_path / "cache"))
    assert fld.name == "tst"
    assert list(fld.bands) == ["F200W", "F444W"]  # sorted by wavelength
    assert fld.bands["F200W"].factor == 2 and fld.bands["F444W"].factor == 1
    assert fld.detection.pixel_scale == pytest.approx(0.04, rel=1e-6)
    assert fld.bands["F200W"].pixel_scale == pytest.approx(0.02, rel=1e-6)
    assert fld.bands["F200W"].zeropoint == pytest.approx(28.90)


def test_gz_read_equals_plain_and_is_cached(tmp_path):
    write_field(tmp_path / "plain", seed=3)
    write_field(tmp_path / "gz", seed=3, gz=True)
    cache = tmp_path / "cache"
    a = Field.from_directory(tmp_path / "plain")
    b = Field.from_directory(tmp_path / "gz", cache_dir=str(cache))
    win = (slice(10, 50), slice(20, 90))
    sa, wa = a.bands["F200W"].read(win)
    sb, wb = b.bands["F200W"].read(win)
    np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(wa, wb)
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 6 and all(n.endswith(".fits") for n in cached)  # decompressed once
    mtimes = [p.stat().st_mtime_ns for p in sorted(cache.iterdir())]
    b.bands["F200W"].read(win)
    assert [p.stat().st_mtime_ns for p in sorted(cache.iterdir())] == mtimes


def test_cutout_wcs_and_origin(tmp_path):
    write_field(tmp_path)
    fld = Field.from_directory(tmp_path)
    win = (slice(40, 80), slice(60, 100))
    cut = fld.detection.cutout(win)
    assert cut.origin == (40, 60)
    ra, dec = fld.detection.wcs.pixel_to_world_values(65.0, 45.0)
    x, y = cut.wcs.world_to_pixel_values(ra, dec)
    assert x == pytest.approx(5.0, abs=1e-6) and y == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["plain", "scaled", "compressed"])
def test_window_reads_equal_the_whole_image(tmp_path, kind):
    """Plain images are sliced from their memory map, scaled (BSCALE/BZERO)
    and tile-compressed ones through their section: the same pixels."""
    write_field(tmp_path, seed=5)
    path = tmp_path / "tst-f444w-clear_drc_sci.fits"
    with fits.open(path) as hdul:
        data, header = hdul[0].data.astype(np.float32), hdul[0].header.copy()
    if kind == "scaled":
        hdu = fits.PrimaryHDU(data, header=header)
        hdu.scale("int16", bscale=1e-3, bzero=0.5)
        hdu.writeto(path, overwrite=True)
    elif kind == "compressed":
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header)]).writeto(path, overwrite=True)
    with fits.open(path) as hdul:
        whole = next(h for h in hdul if h.is_image and h.header.get("NAXIS") == 2).data.astype(np.float32)
    win = (slice(7, 61), slice(13, 97))
    sci, _ = Field.from_directory(tmp_path).bands["F444W"].read(win)
    np.testing.assert_array_equal(sci, whole[win])
    assert sci.std() > 0.5  # pixels ~N(0, 1): the scaling was applied to int16 storage


def test_nan_pixels_get_zero_weight(tmp_path):
    write_field(tmp_path)
    path = tmp_path / "tst-f444w-clear_drc_sci.fits"
    with fits.open(path, mode="update") as hdul:
        hdul[0].data[5, 5] = np.nan
    sci, wht = Field.from_directory(tmp_path).bands["F444W"].read((slice(0, 10), slice(0, 10)))
    assert wht[5, 5] == 0 and sci[5, 5] == 0 and np.isfinite(sci).all()


def test_missing_weight_is_named(tmp_path):
    write_field(tmp_path)
    (tmp_path / "tst-f444w-clear_drc_wht.fits").unlink()
    with pytest.raises(InputError, match=r"tst-f444w-clear_drc_sci\.fits: no weight"):
        Field.from_directory(tmp_path)


def test_image_without_wcs_is_named(tmp_path):
    write_field(tmp_path)
    write_image(tmp_path / "tst-f444w-clear_drc_sci.fits", np.zeros((160, 224)), None, "F444W")
    with pytest.raises(InputError, match=r"tst-f444w-clear_drc_sci\.fits: no celestial WCS"):
        Field.from_directory(tmp_path)


def test_inconsistent_footprint_is_named(tmp_path):
    write_field(tmp_path)
    write_field(tmp_path / "other", det_shape=(150, 224), bands=(("F444W", 1),))
    for kind in ("sci", "wht"):
        (tmp_path / "other" / f"tst-f444w-clear_drc_{kind}.fits").replace(
            tmp_path / f"tst-f444w-clear_drc_{kind}.fits")
    with pytest.raises(InputError, match=r"tst-f444w-clear_drc_sci\.fits: footprint"):
        Field.from_directory(tmp_path)


def test_misaligned_grid_is_named(tmp_path):
    write_field(tmp_path)
    path = tmp_path / "tst-f444w-clear_drc_sci.fits"
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["CRPIX1"] += 0.3
    with pytest.raises(InputError, match="not aligned"):
        Field.from_directory(tmp_path)


def test_corrupt_gz_is_named(tmp_path):
    write_field(tmp_path, gz=True)
    path = tmp_path / "tst-f200w-clear_drc_sci.fits.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(InputError, match=r"tst-f200w-clear_drc_sci\.fits\.gz: cannot read"):
        Field.from_directory(tmp_path, cache_dir=str(tmp_path / "cache"))
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if "f200w-clear_drc_sci" in p.name]
    assert leftovers == []  # no partial decompression left in the cache


def test_missing_band_and_no_detection(tmp_path):
    write_field(tmp_path)
    with pytest.raises(InputError, match=r"no files for band\(s\) \['F150W'\]"):
        Field.from_directory(tmp_path, bands=["F150W"])
    (tmp_path / "tst-ir_drc_sci.fits").unlink()
    (tmp_path / "tst-ir_drc_wht.fits").unlink()
    with pytest.raises(InputError, match="no detection image"):
        Field.from_directory(tmp_path)
