"""Run tile tasks on a Dask cluster: submit, show progress, retry failures.

A tile task catches its own exceptions and returns a failed status, so a
retry here is a resubmission of the tiles whose status is not ok; a worker
that dies takes its task with it and Dask reschedules it (after repeated
deaths it raises ``KilledWorker``, recorded as the tile's failure).
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..io.field import Field
from ..progress import FitBoard, shown
from ..io.store import RunStore
from ..tiling import Tile
from .tile_task import process_tile

__all__ = ["execute_tiles", "client_for", "lazy_client", "tile_key"]

log = logging.getLogger("dja_sepp")


def tile_key(tile_id: str, token: str, attempt: int | None = None) -> str:
    """Dask key of a tile task: ``tile-r01c02-a0-3f2e1a9b``.

    Every tile task shares the prefix ``tile`` (Dask's ``key_split``), so the
    scheduler queues them as one group and hands the next tile to whichever
    worker frees first; a prefix per tile (``tile_r01c02``) made each task its
    own group, assigned to a worker up front, and a worker then sat idle while
    another still had tiles waiting (6.5 s of a 34 s run of 9 tiles). The tile id
    stays in the key: the dashboard's task stream and the scheduler's logs
    name the tile.
    """
    return "-".join(["tile", tile_id] + ([f"a{attempt}"] if attempt is not None else []) + [token])


@contextmanager
def client_for(cluster: Any, config: Mapping[str, Any]) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster`` (closed on exit if made here).

    ``cluster`` may be a Client (used as is), a cluster object, a scheduler
    address, a cluster kind (``local``, ``slurm``, ``pbs``, ``ec2``: the
    ``cluster:`` section's settings), or None (the ``cluster:`` section).
    A client made here prints its dashboard link once, on stderr (a Client
    given by the caller is the caller's: nothing is printed).
    """
    from distributed import Client
    if isinstance(cluster, Client):
        yield cluster
        return
    if cluster is None or isinstance(cluster, str):
        from ..deploy import cluster_client
        cfg = dict(config["cluster"])
        if cluster in ("local", "slurm", "pbs", "ec2"):
            cfg.update(kind=cluster)  # a kind, never read as a host name
        elif isinstance(cluster, str):
            cfg.update(kind="address", address=cluster)
        with cluster_client(cfg) as client:
            _print_dashboard(client)
            yield client
        return
    client = Client(cluster)
    _print_dashboard(client)
    try:
        yield client
    finally:
        client.close()


def _print_dashboard(client) -> None:
    print(f"dja-sepp: Dask dashboard {client.dashboard_link}", file=sys.stderr)


def execute_tiles(tiles: Sequence[Tile], field: Field, config: Mapping[str, Any],
                  store: RunStore, psf_paths: Mapping[str, str], cluster: Any = None,
                  progress: bool = True, storage_options: dict | None = None) -> dict[str, dict]:
    """Run :func:`process_tile` for ``tiles``; returns tile id -> status."""
    statuses: dict[str, dict] = {}
    if not tiles:
        return statuses
    retries = int(config["cluster"].get("retries", 0))
    with client_for(cluster, config) as client:
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
    limit = float(config["cluster"].get("tile_timeout") or 0)
    futures = {}
    resources = _escalation(client, config) if attempt > 0 else None
    # keys unique to this submission: a key still held by the scheduler from an
    # earlier run would hand back that run's result without computing anything
    token = uuid.uuid4().hex[:8]
    keys = {tile.id: tile_key(tile.id, token, attempt) for tile in tiles}
    # progress in sources fitted, from the tasks' events (subscribed before they start)
    with shown(progress):
        board = FitBoard(client, list(keys.values()),
                         desc="fit" if attempt == 0 else f"fit (retry {attempt})")
    for tile in tiles:
        fut = client.submit(process_tile, tile, field, config, store.root, psf_paths,
                            storage_options, key=keys[tile.id], pure=False, resources=resources)
        futures[fut] = tile
    out: dict[str, dict] = {}
    pending = set(futures)
    try:
        while pending:
            done, pending = _wait_some(pending, poll=min(1.0, limit / 4) if limit else 1.0)
            for fut in done:
                tile = futures[fut]
                try:
                    out[tile.id] = fut.result()
                except Exception as exc:  # KilledWorker, CommClosed...: the tile failed, the run goes on
                    out[tile.id] = _failure(tile, exc)
                    _record(store, tile, out[tile.id])
                board.finish(fut.key, out[tile.id].get("state") == "ok", out[tile.id].get("n_sources"))
            for fut in _overdue(pending, futures, store, limit):
                tile = futures[fut]
                _stop(client, fut, store, tile)
                pending.discard(fut)
                out[tile.id] = {"tile": tile.id, "state": "failed", "timings": {},
                                "reason": f"timed out: still running after tile_timeout = {limit:g} s"}
                _record(store, tile, out[tile.id])
                board.finish(fut.key, False)
            board.refresh()
    finally:
        board.close()
    return out


def _escalation(client, config: Mapping[str, Any]) -> dict | None:
    """Resources a retried tile asks for (``cluster.escalate_resources``), if
    some worker of the cluster has them; else None (retry anywhere)."""
    wanted = dict(config["cluster"].get("escalate_resources") or {})
    if not wanted:
        return None
    workers = client.scheduler_info().get("workers", {}).values()
    if any(all(w.get("resources", {}).get(k, 0) >= v for k, v in wanted.items()) for w in workers):
        log.warning("retrying failed tiles on workers with %s", wanted)
        return wanted
    log.warning("no worker has %s: retrying failed tiles anywhere", wanted)
    return None


def _wait_some(pending: set, poll: float | None) -> tuple[set, set]:
    """Futures done and not done after at most ``poll`` seconds."""
    from distributed import wait
    try:
        done, not_done = wait(list(pending), timeout=poll, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return set(), pending
    return set(done), set(not_done)


def _overdue(pending: set, futures: dict, store: RunStore, limit: float) -> list:
    """Pending futures whose attempt has run longer than ``limit`` seconds
    (from the marker the task writes when it starts on a worker)."""
    if not limit:
        return []
    late = []
    now = time.time()
    for fut in pending:
        try:  # the task removes its marker when it ends
            marker = store.read_json(f"tiles/{futures[fut].id}/running.json")
        except (FileNotFoundError, ValueError):
            continue
        if marker.get("key") == fut.key and now - float(marker["started"]) > limit:
            late.append(fut)
    return late


def _stop(client, fut, store: RunStore, tile: Tile) -> None:
    """Really stop a hung tile: forget its task and restart the worker
    process running it (Dask cannot interrupt a running task; the nanny
    starts a fresh worker, other tasks it held are rescheduled)."""
    try:
        marker = store.read_json(f"tiles/{tile.id}/running.json")
    except (FileNotFoundError, ValueError):  # it ended meanwhile
        marker = {"worker": None}
    fut.cancel()
    log.warning("tile %s exceeded its time limit; restarting worker %s", tile.id, marker["worker"])
    try:
        if marker["worker"]:
            client.restart_workers([marker["worker"]], raise_for_error=False)
    except Exception as exc:  # a worker that is gone already is fine
        log.warning("could not restart worker %s: %s", marker["worker"], exc)


def _failure(tile: Tile, exc: BaseException) -> dict:
    return {"tile": tile.id, "state": "failed", "reason": f"{type(exc).__name__}: {exc}",
            "timings": {}}


def _record(store: RunStore, tile: Tile, status: dict) -> None:
    store.write_json(f"tiles/{tile.id}/status.json", status)
    store.remove(f"tiles/{tile.id}/running.json")  # that attempt is over


@contextmanager
def lazy_client(cluster: Any, cfg: Mapping[str, Any], store: RunStore):
    """A function returning the run's Client, made (with its performance
    report, when asked) on the first call and closed on exit: a run that
    builds no PSF and has no tile or mosaic to compute starts no cluster."""
    from contextlib import ExitStack
    made: list = []
    with ExitStack() as stack:
        def get_client():
            if not made:
                made.append(stack.enter_context(client_for(cluster, cfg)))
                stack.enter_context(_performance_report(made[0], cfg, store))
            return made[0]
        yield get_client


def _performance_report(client, cfg: Mapping[str, Any], store: RunStore):
    """distributed's performance report of what runs inside, saved as
    ``performance_report.html`` in the run directory
    (``cluster.performance_report``); a no-op otherwise."""
    if client is None or not cfg["cluster"].get("performance_report"):
        return nullcontext()
    return _Report(store)


class _Report:
    """Write the report to a local temporary file, then into the store
    (which may be remote)."""

    def __init__(self, store: RunStore):
        import tempfile
        self.store = store
        self.tmp = tempfile.TemporaryDirectory()
        self.path = str(Path(self.tmp.name) / "performance_report.html")

    def __enter__(self):
        from distributed import performance_report
        self.inner = performance_report(filename=self.path)
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.inner.__exit__(*exc)
            self.store.put_file(self.path, "performance_report.html")
        except Exception as err:  # the report is an extra: keep the run
            log.warning("performance report not saved: %s", err)
        finally:
            self.tmp.cleanup()
        return False
