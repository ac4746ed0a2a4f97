"""Content fingerprints of a run's inputs: the key that decides tile reuse.

A tile is reused only when nothing that determines its result changed: the
pixels of every image (size, modification time, a checksum of the header and
of sampled data blocks), the PSF files (whole contents: they are small), the
code (package version and a digest of its sources and shipped YAML) and the
resolved configuration. File paths alone are not enough: new pixels written
at the same path, or a resume from another folder where a relative path
names another field, must be recomputed.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import fsspec
from astropy.io import fits

from .cache import InputError, is_remote, local_fits

__all__ = ["image_fingerprint", "file_digest", "code_digest", "inputs_key", "hdu_span"]

_BLOCK = 1 << 20  # bytes of each sampled data block (start, middle, end)


def hdu_span(local: str) -> tuple[int, int, int]:
    """``(header start, data start, data bytes)`` of the first 2-D image HDU."""
    with fits.open(local, memmap=True, lazy_load_hdus=True) as hdul:
        for i, hdu in enumerate(hdul):
            if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                info = hdul.fileinfo(i)
                return int(info["hdrLoc"]), int(info["datLoc"]), int(info["datSpan"])
    raise InputError(f"{local}: no 2-D image HDU")


def image_fingerprint(path: str, cache_dir: str | None = None,
                      storage_options: dict | None = None) -> str:
    """Size, mtime, header checksum and sampled-data checksum of an image."""
    fs, fs_path = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    info = fs.info(fs_path)
    stamp = f"{Path(str(path)).name}|{info.get('size')}|{info.get('mtime', info.get('LastModified', ''))}"
    local = local_fits(path, cache_dir, storage_options)
    start, data, span = hdu_span(local)
    digest = hashlib.sha256(stamp.encode())
    with open(local, "rb") as fh:
        fh.seek(start)
        digest.update(fh.read(data - start))  # the header, every card
        for offset in sorted({0, max(0, span // 2 - _BLOCK // 2), max(0, span - _BLOCK)}):
            fh.seek(data + offset)
            digest.update(fh.read(min(_BLOCK, span)))
    return digest.hexdigest()[:16]


def file_digest(path: str, storage_options: dict | None = None) -> str:
    """sha256 of a whole (small) file such as a PSF."""
    with fsspec.open(str(path), "rb", **(storage_options or {})) as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Package version and a digest of the package's sources and shipped YAML:
    a change of the fitting code makes earlier tiles stale."""
    from .. import __version__
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def inputs_key(field: Any, psf_paths: Mapping[str, str], config: Mapping[str, Any]) -> str:
    """One key for everything a tile's result depends on, except its window."""
    from ..settings import config_hash, model_path
    images = [field.detection, *field.bands.values()]
    parts = {
        "images": {im.band: [image_fingerprint(p, im.cache_dir, im.storage_options)
                             for p in (im.sci_path, im.wht_path)] for im in images},
        "psf": {b: file_digest(p, images[0].storage_options if is_remote(p) else None)
                for b, p in sorted(psf_paths.items())},
        "models": {m: file_digest(str(model_path(m))) for m in config["fit"]["models"]},
        "code": code_digest(),
        "config": config_hash(config),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
