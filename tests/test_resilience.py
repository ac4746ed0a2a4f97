"""Lose nothing: a hung tile is stopped at its time limit and resumed later; a
worker killed mid-run costs nothing. Real scheduler and worker processes on
127.0.0.1 (a cluster of this module's own, since workers get killed)."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from conftest import SMALL_SIZE
from dja_sepp import run
from dja_sepp.demo import demo_tiling
from dja_sepp.io.store import RunStore
from dja_sepp.pipeline.driver import resume

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_client():
    from distributed import Client, LocalCluster
    from dja_sepp.deploy.cluster import THREAD_ENV
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", env=THREAD_ENV) as cluster, Client(cluster) as client:
        yield client


def _config(sleep: dict, timeout: float) -> dict:
    return {"tiling": demo_tiling(SMALL_SIZE), "fit": {"passes": 1}, "mosaic": {"enabled": False},
            "cluster": {"tile_timeout": timeout, "retries": 0}, "debug": {"sleep": sleep}}


def _psfs(sim):
    return {b.upper(): str(p) for b, p in sim.psf_paths.items()}


@pytest.fixture(scope="module")
def hung_then_resumed(small_field, own_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("hung")
    t0 = time.perf_counter()
    first = run(small_field.images_dir, out, config=_config({"r00c00": 3600}, 45.0),
                psfs=_psfs(small_field), cluster=own_client, progress=False)
    first_wall = time.perf_counter() - t0
    statuses = {t: RunStore(out).read_json(f"tiles/{t}/status.json") for t in ("r00c00", "r01c01")}
    second = resume(str(out), cluster=own_client, progress=False, debug__sleep={})
    return first, first_wall, statuses, second


def test_a_hung_tile_is_stopped_and_the_rest_merged(hung_then_resumed):
    first, wall, statuses, _ = hung_then_resumed
    assert wall < 600                     # the stalled tile (sleeping 3600 s) did not hold the run
    assert not first.complete and set(first.failed) == {"r00c00"}
    assert "timed out" in statuses["r00c00"]["reason"]
    assert statuses["r01c01"]["state"] == "ok"
    assert first.n_ok == 3 and first.catalog_path


def test_resume_recomputes_only_the_failed_tile(hung_then_resumed):
    _, _, _, second = hung_then_resumed
    assert second.complete and second.n_skipped == 3 and second.n_ok == 4


def test_a_killed_worker_loses_nothing(small_field, own_client, hung_then_resumed, tmp_path):
    """Kill the worker process running a tile (SIGKILL): Dask reruns the task,
    and the catalog equals that of an undisturbed run."""
    reference = hung_then_resumed[3]
    store = RunStore(tmp_path)
    victim = {}

    def kill_when_started():
        try:
            deadline = time.time() + 300
            while time.time() < deadline and not store.exists("tiles/r01c00/running.json"):
                time.sleep(0.2)
            # the task's own marker names its process (a client.run here could wait
            # behind the other worker's busy event loop)
            victim["pid"] = store.read_json("tiles/r01c00/running.json")["pid"]
            os.kill(victim["pid"], signal.SIGKILL)
        except Exception as exc:  # reported by the assertion below
            victim["error"] = repr(exc)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    result = run(small_field.images_dir, tmp_path, config=_config({"r01c00": 10}, 600.0),
                 psfs=_psfs(small_field), cluster=own_client, progress=False)
    killer.join(timeout=5)
    assert victim.get("pid"), victim               # a worker really died mid-tile
    assert victim["pid"] not in own_client.run(os.getpid).values()
    assert result.complete and result.n_ok == 4
    got = RunStore(tmp_path).read_table("catalog.fits")
    ref = RunStore(reference.run_dir).read_table("catalog.fits")
    assert len(got) == len(ref)
    for col in ("ID", "TILE_ID", "RA", "DEC", "FLUX_MODEL_F444W", "RADIUS"):
        a, b = np.asarray(got[col]), np.asarray(ref[col])
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
        else:
            assert (a == b).all(), col


def test_a_failed_tile_is_escalated_to_a_bigger_worker(small_field, own_client, tmp_path):
    """Tile r00c01 fails (MemoryError) on ordinary workers; once it has failed,
    a `dask worker --resources bigmem=1` process joins, and the retry asks for
    that resource (cluster.escalate_resources) and succeeds there."""
    import subprocess
    import sys
    store = RunStore(tmp_path)
    procs = []

    def start_big_worker_after_failure():
        deadline = time.time() + 300
        while time.time() < deadline:
            if store.exists("tiles/r00c01/status.json") and \
                    store.read_json("tiles/r00c01/status.json")["state"] == "failed":
                break
            time.sleep(0.2)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", own_client.scheduler.address,
             "--nthreads", "1", "--resources", "bigmem=1", "--host", "127.0.0.1",
             "--no-dashboard", "--name", "bigmem"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}))
        own_client.wait_for_workers(3, timeout=120)

    helper = threading.Thread(target=start_big_worker_after_failure, daemon=True)
    helper.start()
    cfg = _config({}, 600.0)
    cfg["cluster"].update(retries=1, escalate_resources={"bigmem": 1})
    cfg["debug"]["needs_resource"] = {"r00c01": "bigmem"}
    try:
        result = run(small_field.images_dir, tmp_path, config=cfg, psfs=_psfs(small_field),
                     cluster=own_client, progress=False)
        helper.join(timeout=130)
        assert result.complete and result.n_ok == 4
        status = store.read_json("tiles/r00c01/status.json")
        marker = status["attempt"]   # (running.json is gone once the tile is over)
        assert status["state"] == "ok" and "-a1-" in marker["key"]   # the retry did it
        assert not store.exists("tiles/r00c01/running.json")
        big = [a for a, w in own_client.scheduler_info()["workers"].items() if w["name"] == "bigmem"]
        assert marker["worker"] in big
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
