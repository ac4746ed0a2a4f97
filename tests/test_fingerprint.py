"""Reuse keys follow contents, not paths: changed pixels, PSFs or code at the
same paths make earlier tiles stale."""
from __future__ import annotations

import os

import numpy as np
from astropy.io import fits

from dja_sepp.io.field import Field
from dja_sepp.io.fingerprint import file_digest, image_fingerprint, inputs_key
from dja_sepp.settings import load_config
from fieldfiles import write_field


def _rewrite_keeping_stamp(path, change):
    """New pixels at the same path, same size and the same mtime."""
    st = os.stat(path)
    with fits.open(path, mode="update") as hdul:
        change(hdul[0].data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def test_changed_pixels_change_the_fingerprint_even_with_the_same_mtime(tmp_path):
    images = write_field(tmp_path / "images")
    path = str(images / "tst-f444w-clear_drc_sci.fits")
    before = image_fingerprint(path)
    assert image_fingerprint(path) == before
    _rewrite_keeping_stamp(path, lambda d: d.__setitem__((0, slice(None)), 5.0))
    assert image_fingerprint(path) != before


def test_inputs_key_covers_pixels_psf_and_config(tmp_path):
    images = write_field(tmp_path / "images")
    psf = tmp_path / "psf.fits"
    fits.PrimaryHDU(np.ones((5, 5), np.float32)).writeto(psf)
    cfg = load_config()
    fld = Field.from_directory(images)
    psfs = {b: str(psf) for b in fld.bands}
    key = inputs_key(fld, psfs, cfg)
    assert inputs_key(Field.from_directory(images), psfs, cfg) == key
    fits.PrimaryHDU(np.full((5, 5), 2.0, np.float32)).writeto(psf, overwrite=True)
    assert inputs_key(fld, psfs, cfg) != key  # PSF contents, same path
    key = inputs_key(fld, psfs, cfg)
    assert inputs_key(fld, psfs, load_config(detection__thresh=2.0)) != key
    path = images / "tst-ir_drc_wht.fits"
    _rewrite_keeping_stamp(path, lambda d: d.__setitem__((slice(None), 0), 0.5))
    assert inputs_key(fld, psfs, cfg) != key  # detection weight, same path, size and mtime
    assert file_digest(str(psf)) == file_digest(str(psf))


def test_cache_refetches_new_contents_with_the_same_size_and_mtime(tmp_path):
    """A .fits.gz rewritten with the same size and mtime (gzip level 0: size
    follows the data length) must not be served from the cache."""
    import gzip
    import io
    from dja_sepp.io.cache import local_fits
    src = tmp_path / "img.fits.gz"

    def write(value):
        buf = io.BytesIO()
        fits.PrimaryHDU(np.full((64, 64), value, np.float32)).writeto(buf)
        with gzip.GzipFile(src, "wb", compresslevel=0, mtime=0) as fh:
            fh.write(buf.getvalue())

    write(1.0)
    st = os.stat(src)
    first = local_fits(str(src), tmp_path / "cache")
    assert fits.getdata(first)[0, 0] == 1.0
    write(2.0)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(src).st_size == st.st_size
    assert fits.getdata(local_fits(str(src), tmp_path / "cache"))[0, 0] == 2.0


def _fetch_in_child(src, cache, log, barrier):
    """Child process: count real fetches (open_binary calls), then fetch."""
    import dja_sepp.io.cache as cache_mod
    real = cache_mod.open_binary

    def counted(*args, **kwargs):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    cache_mod.open_binary = counted
    barrier.wait()
    cache_mod.local_fits(src, cache)


def test_processes_of_one_host_fetch_a_file_once(tmp_path):
    """Several worker processes asking for the same compressed/remote mosaic
    used to download it once each; the first fetches, the others wait."""
    import multiprocessing
    from dja_sepp.io.fingerprint import image_fingerprint  # noqa: F401 (imports done before fork)
    images = write_field(tmp_path / "images", det_shape=(800, 800), bands=(), gz=True)
    src = str(images / "tst-ir_drc_sci.fits.gz")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    log = tmp_path / "fetches.txt"
    procs = [ctx.Process(target=_fetch_in_child, args=(src, str(tmp_path / "cache"), str(log), barrier))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(log.read_text().split()) == 1
    assert len(list((tmp_path / "cache").glob("*-tst-ir_drc_sci.fits"))) == 1
