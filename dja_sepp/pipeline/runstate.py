"""Run-state integrity: a new attempt never damages a finished run.

A run directory that already holds a run (its ``run.yaml``) is not written
over while a new attempt runs. The attempt works in ``RUN/attempt/`` (a whole
run directory of its own: tiles reused from the earlier run are copied in,
PSFs it refers to as well) and replaces the earlier run's files only when it
is at least as good (:func:`quality`): a complete catalog, an ok tile or a
good ``run.yaml`` are never swapped for a worse result. An attempt that is
worse stays in ``RUN/attempt/`` for inspection (``--resume RUN/attempt``
finishes it).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

from ..io.store import RunStore

__all__ = ["ATTEMPT", "open_attempt", "carry_tiles", "carry_psfs", "quality", "finish_attempt"]

log = logging.getLogger("dja_sepp")

ATTEMPT = "attempt"      # folder of a new attempt inside a run directory
_PREVIOUS = ".previous"  # the earlier run's files while they are swapped out


def open_attempt(final: RunStore) -> tuple[RunStore, dict | None]:
    """Where this attempt writes, and the earlier run's summary.

    Returns ``(final, None)`` for a fresh directory (nothing to protect);
    otherwise a clean ``RUN/attempt`` store and the earlier ``summary.json``
    (``{}`` when the earlier run never finished).
    """
    if not final.exists("run.yaml"):
        return final, None
    for stale in (ATTEMPT, _PREVIOUS):
        if final.exists(stale):
            final.fs.rm(final._path(stale), recursive=True)
    previous = final.read_json("summary.json") if final.exists("summary.json") else {}
    stage = RunStore(final.url(ATTEMPT), final.storage_options)
    stage.fs.makedirs(stage._path(), exist_ok=True)
    return stage, previous


def carry_tiles(final: RunStore, stage: RunStore, tile_ids: Iterable[str]) -> None:
    """Copy the files of reused tiles into the attempt (small catalogs)."""
    if stage is final:
        return
    for tid in tile_ids:
        for name in final.listdir(f"tiles/{tid}"):
            stage.write_bytes(f"tiles/{tid}/{name}", final.read_bytes(f"tiles/{tid}/{name}"))


def carry_psfs(final: RunStore, stage: RunStore, psf_paths: Mapping[str, str]) -> dict[str, str]:
    """PSFs built by the earlier run (``RUN/psf/``) copied into the attempt,
    with the star list the tiles mark; returns the paths the attempt uses."""
    prefix = final.url("psf") + "/"
    if stage is final or not any(str(p).startswith(prefix) for p in psf_paths.values()):
        return dict(psf_paths)
    for name in final.listdir("psf"):
        stage.write_bytes(f"psf/{name}", final.read_bytes(f"psf/{name}"))
    return {b: stage.url(str(p)[len(final.url()) + 1:]) if str(p).startswith(prefix) else p
            for b, p in psf_paths.items()}


def quality(summary: Mapping[str, Any] | None) -> tuple:
    """Order of results: complete first, then fewer unusable bands, then more
    ok tiles, then a mosaic that did not fail. An unfinished run ranks last."""
    if not summary:
        return (False, float("-inf"), -1, False)
    failed = summary.get("failed") or {}
    tiles_failed = [t for t in failed if t != "mosaic"]
    return (not tiles_failed and summary.get("n_ok") == summary.get("n_tiles"),
            -len(summary.get("unusable_bands") or {}), int(summary.get("n_ok") or 0),
            "mosaic" not in failed)


def finish_attempt(final: RunStore, stage: RunStore, previous: dict | None,
                   summary: dict) -> tuple[bool, RunStore]:
    """Swap the attempt in when it is at least as good as the earlier run.

    Returns ``(swapped, store)``: ``store`` is where the attempt's files are
    now (the run directory, or ``RUN/attempt`` when the earlier run was kept).
    """
    if stage is final:
        return True, final
    if quality(summary) < quality(previous):
        log.warning("kept the earlier run in %s (it was better); this attempt is in %s",
                    final.root, stage.root)
        return False, stage
    _swap(final, stage)
    return True, final


def _swap(final: RunStore, stage: RunStore) -> None:
    """Earlier files out to ``.previous``, the attempt's in, then drop both
    folders. A crash in between leaves the earlier files in ``.previous``."""
    keep = {ATTEMPT, _PREVIOUS}
    old = [n for n in final.listdir() if n not in keep and not n.startswith(".write-probe")]
    new = stage.listdir()
    final.fs.makedirs(final._path(_PREVIOUS), exist_ok=True)
    for name in old:
        _move(final, final._path(name), final._path(_PREVIOUS, name))
    for name in sorted(new, key=lambda n: n == "run.yaml"):  # run.yaml last: the run is whole
        _move(final, stage._path(name), final._path(name))
    for folder in (_PREVIOUS, ATTEMPT):
        if final.exists(folder):
            final.fs.rm(final._path(folder), recursive=True)


def _move(store: RunStore, src: str, dst: str) -> None:
    if store.remote:
        store.fs.mv(src, dst, recursive=True)
    else:
        os.replace(src, dst)  # a rename: atomic per entry, no copy of mosaics
