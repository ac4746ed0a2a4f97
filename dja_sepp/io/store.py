"""The run directory: a local folder or an fsspec URL (``s3://bucket/run``).

Every write is atomic: local files are written under a temporary name and
renamed; object stores replace an object in one PUT. Readers therefore never
see a half-written catalog or status file.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fsspec
from astropy.table import Table

from .cache import is_remote

__all__ = ["RunStore", "OutputError"]


class OutputError(OSError):
    """The run directory cannot be written."""


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


class RunStore:
    """Read and write files of a run directory.

    Parameters
    ----------
    root : str or Path
        Local folder or fsspec URL.
    storage_options : dict, optional
        fsspec options (e.g. ``{"client_kwargs": {"endpoint_url": ...}}``).
    """

    def __init__(self, root: str | Path, storage_options: dict | None = None):
        self.root = str(root).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.remote = is_remote(self.root)
        if not self.remote and "://" not in self.root:  # workers run in other folders
            self.root = str(Path(self.root).expanduser().absolute())
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **self.storage_options)

    def __repr__(self) -> str:
        return f"RunStore({self.root!r})"

    def url(self, *parts: str) -> str:
        """Full path or URL of a file of the run."""
        return "/".join([self.root, *parts])

    def _path(self, *parts: str) -> str:
        return "/".join([self._root_path, *parts])

    def check_writable(self) -> None:
        """Create the root and prove a file can be written there."""
        probe = f".write-probe-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.makedirs(self._root_path, exist_ok=True)
            self.write_bytes(probe, b"ok")
            self.fs.rm(self._path(probe))
        except (OSError, PermissionError) as exc:
            raise OutputError(f"{self.root}: output directory is not writable ({exc})") from exc

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self._path(*parts))

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` to ``rel`` atomically; returns the URL."""
        path = self._path(rel)
        parent = path.rsplit("/", 1)[0]
        if self.remote:
            self.fs.pipe_file(path, data)
            return self.url(rel)
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # mkstemp makes 0600 files: give the mode a plain open() would
            # (the umask decides), so collaborators can read catalogs
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.url(rel)

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, json.dumps(obj, indent=1, sort_keys=True, default=str))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def write_table(self, rel: str, table: Table) -> str:
        """Write an astropy Table as parquet or FITS (by extension), keeping units."""
        fmt = "parquet" if rel.endswith(".parquet") else "fits"
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = os.path.join(tmpdir, "t." + fmt)
            table.write(tmp, format=fmt, overwrite=True)
            return self.write_bytes(rel, Path(tmp).read_bytes())

    def read_table(self, rel: str) -> Table:
        fmt = "parquet" if rel.endswith(".parquet") else "fits"
        if fmt == "fits":
            return Table.read(io.BytesIO(self.read_bytes(rel)), format="fits")
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = os.path.join(tmpdir, "t.parquet")
            Path(tmp).write_bytes(self.read_bytes(rel))
            return Table.read(tmp, format="parquet")

    def put_file(self, local: str | Path, rel: str) -> str:
        """Copy a local file into the run (atomic)."""
        return self.write_bytes(rel, Path(local).read_bytes())

    def remove(self, rel: str) -> None:
        """Delete the file ``rel`` of the run if it exists."""
        try:
            self.fs.rm(self._path(rel))
        except FileNotFoundError:
            pass

    def listdir(self, rel: str = "") -> list[str]:
        path = self._path(rel) if rel else self._root_path
        if not self.fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
