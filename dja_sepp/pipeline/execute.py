"""Run tile tasks on a Dask cluster: submit, show progress, retry failures.

A tile task catches its own exceptions and returns a failed status, so a
retry here is a resubmission of the tiles whose status is not ok; a worker
that dies takes its task with it and Dask reschedules it (after repeated
deaths it raises ``KilledWorker``, recorded as the tile's failure).
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

from ..io.field import Field
from ..io.store import RunStore
from ..tiling import Tile
from .tile_task import process_tile

__all__ = ["execute_tiles", "client_for"]

log = logging.getLogger("dja_sepp")



@contextmanager
def client_for(cluster: Any, config: Mapping[str, Any]) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster`` (closed on exit if made here).

    ``cluster`` may be a Client (used as is), a cluster object, a scheduler
    address, or None (the ``cluster:`` section of the configuration).
    """
    from distributed import Client
    if isinstance(cluster, Client):
        yield cluster
        return
    if cluster is None or isinstance(cluster, str):
        from ..deploy import cluster_client
        cfg = dict(config["cluster"])
        if isinstance(cluster, str):
            cfg.update(kind="address", address=cluster)
        with cluster_client(cfg) as client:
            yield client
        return
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()


def execute_tiles(tiles: Sequence[Tile], field: Field, config: Mapping[str, Any],
                  store: RunStore, psf_paths: Mapping[str, str], cluster: Any = None,
                  progress: bool = True, storage_options: dict | None = None) -> dict[str, dict]:
    """Run :func:`process_tile` for ``tiles``; returns tile id -> status."""
    statuses: dict[str, dict] = {}
    if not tiles:
        return statuses
    retries = int(config["cluster"].get("retries", 0))
    with client_for(cluster, config) as client:
        print(f"dja-sepp: dashboard {client.dashboard_link}", file=sys.stderr)
        pending = list(tiles)
        for attempt in range(retries + 1):
            results = _submit_and_wait(client, pending, field, config, store, psf_paths,
                                       progress, storage_options, attempt)
            statuses.update(results)
            pending = [t for t in pending if results[t.id].get("state") != "ok"]
            if not pending:
                break
            log.warning("retrying %d failed tile(s): %s", len(pending), [t.id for t in pending])
    return statuses


def _submit_and_wait(client, tiles, field, config, store, psf_paths, progress,
                     storage_options, attempt) -> dict[str, dict]:
    from distributed import as_completed
    from tqdm.auto import tqdm
    futures = {}
    for tile in tiles:
        fut = client.submit(process_tile, tile, field, config, store.root, psf_paths,
                            storage_options, key=f"tile-{tile.id}-a{attempt}-{os.getpid()}",
                            pure=False)
        futures[fut] = tile
    out: dict[str, dict] = {}
    bar = tqdm(total=len(futures), desc=f"tiles (attempt {attempt + 1})", unit="tile",
               disable=not progress, file=sys.stderr)
    for fut in as_completed(list(futures)):
        tile = futures[fut]
        try:
            out[tile.id] = fut.result()
        except Exception as exc:  # KilledWorker, CommClosed...: the tile failed, the run goes on
            out[tile.id] = _failure(tile, exc)
            _record(store, tile, out[tile.id])
        bar.update(1)
        bar.set_postfix(failed=sum(s.get("state") != "ok" for s in out.values()))
    bar.close()
    return out


def _failure(tile: Tile, exc: BaseException) -> dict:
    return {"tile": tile.id, "state": "failed", "reason": f"{type(exc).__name__}: {exc}",
            "timings": {}}


def _record(store: RunStore, tile: Tile, status: dict) -> None:
    store.write_json(f"tiles/{tile.id}/status.json", status)
