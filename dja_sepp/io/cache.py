"""Local copies of mosaics: decompress ``.fits.gz`` once, fetch remote files once.

Astropy can memory-map only uncompressed local FITS, and a tile task must read
just its window, so gzip-compressed and remote mosaics are turned into local
uncompressed files in a cache folder the first time they are used. The cache
key includes the source size, modification time and its first and last
64 kB, so a changed source is fetched again.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import fsspec

__all__ = ["InputError", "default_cache_dir", "is_remote", "local_fits", "open_binary"]


class InputError(ValueError):
    """An input file is missing, unreadable or inconsistent."""


def default_cache_dir() -> Path:
    """``$DJA_SEPP_CACHE`` or ``~/.cache/dja_sepp``."""
    return Path(os.environ.get("DJA_SEPP_CACHE", Path.home() / ".cache" / "dja_sepp"))


def is_remote(path: str) -> bool:
    """True for URLs other than local files (s3://, https://, ...)."""
    protocol = fsspec.utils.get_protocol(str(path))
    return protocol not in ("file", "local")


def open_binary(path: str, storage_options: dict | None = None):
    """Open a local or remote file for binary reading through fsspec."""
    return fsspec.open(str(path), "rb", **(storage_options or {})).open()


_SAMPLE = 1 << 16  # bytes read at each end of a source for its cache key


def _cache_key(path: str, storage_options: dict | None) -> str:
    """Path, size, mtime and the first and last 64 kB of the source: new
    contents written with the same size and mtime are fetched again."""
    fs, fs_path = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    try:
        info = fs.info(fs_path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    size = int(info.get("size") or 0)
    stamp = f"{path}|{size}|{info.get('mtime', info.get('LastModified', ''))}"
    digest = hashlib.sha1(stamp.encode())
    # two small range reads, never the file (nor an fsspec read-ahead block)
    digest.update(fs.cat_file(fs_path, start=0, end=min(size, _SAMPLE)))
    if size > 2 * _SAMPLE:
        digest.update(fs.cat_file(fs_path, start=size - _SAMPLE, end=size))
    return digest.hexdigest()[:16]


@contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` shared by the processes of this host
    (worker processes fetching the same remote mosaic wait for the first
    instead of each downloading it)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: each process fetches (still atomic)
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def local_fits(path: str, cache_dir: str | Path | None = None,
               storage_options: dict | None = None) -> str:
    """Path of a local, uncompressed copy of ``path`` (itself if it is one).

    Raises
    ------
    InputError
        If the file is missing or the gzip stream is corrupt (the message names
        the file); a partial decompression never stays in the cache.
    """
    path = str(path)
    gz = path.endswith(".gz")
    if not gz and not is_remote(path):
        if not Path(path).exists():
            raise InputError(f"{path}: file not found")
        return path
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(path.split("?")[0]).name
    if gz:
        name = name[:-3]
    target = cache / f"{_cache_key(path, storage_options)}-{name}"
    if target.exists():
        return str(target)
    lock = target.with_name(target.name + ".lock")
    with _host_lock(lock):
        try:
            if not target.exists():  # another process of this host may have made it meanwhile
                _fetch(path, target, gz, storage_options)
        finally:
            # waiters hold the old file and find the target made; a later
            # caller finds it before locking, so the lock file can go
            lock.unlink(missing_ok=True)
    return str(target)


def _fetch(path: str, target: Path, gz: bool, storage_options: dict | None) -> None:
    """Copy (and decompress) ``path`` to ``target`` through a temporary file."""
    tmp = target.with_name(target.name + f".part{os.getpid()}")
    try:
        with open_binary(path, storage_options) as raw, open(tmp, "wb") as out:
            stream = gzip.GzipFile(fileobj=raw) if gz else raw
            shutil.copyfileobj(stream, out, length=16 << 20)
        os.replace(tmp, target)  # atomic: readers never see a partial file
    except (OSError, EOFError, zlib.error) as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot read ({'corrupt gzip stream: ' if gz else ''}{exc})") from exc
