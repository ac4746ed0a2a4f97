"""Fit processes forked from a tile's task (``fit.processes``)."""
from __future__ import annotations

import logging
import os
import threading

import numpy as np
import pytest

from dja_sepp.fit.forked import ForkedPool, shared_array


class _Task:
    """A task whose state the children inherit at the fork."""

    def __init__(self, image):
        self.image, self.factor = image, 3

    def __call__(self, args):
        what, value = args
        if what == "raise":
            raise ValueError(f"bad value {value}")
        if what == "die":
            os._exit(7)
        if what == "log":
            logging.getLogger("dja_sepp.fit.engine").warning("fit of rows %s failed", value)
            try:
                raise KeyError("inner cause")
            except KeyError:
                logging.getLogger("dja_sepp.fit.engine").exception("with its traceback")
            return os.getpid(), None
        self.image[value] -= 1.0  # a shared pixel: the parent sees it
        sum(i * i for i in range(200_000))  # some CPU to count
        return os.getpid(), self.factor * value


def test_children_inherit_the_state_share_the_images_and_run_at_once():
    image = shared_array(np.zeros(4))
    replies = []
    with ForkedPool(2, _Task(image)) as pool:
        threads = [threading.Thread(target=lambda v=v: replies.append(pool.run(("sub", v)))) for v in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(r[1] for r in replies) == [0, 3, 6, 9]  # self.factor came with the fork
    assert {r[0] for r in replies} - {os.getpid()} == {r[0] for r in replies}  # never in the parent
    np.testing.assert_array_equal(image, -1.0)  # every child's subtraction is in the parent's image
    assert pool.cpu_s > 0  # the children's CPU, counted once they ended


def test_a_child_s_error_and_logs_reach_the_parent(caplog):
    with ForkedPool(1, _Task(shared_array(np.zeros(1)))) as pool:
        with caplog.at_level(logging.WARNING, logger="dja_sepp"):
            pool.run(("log", [3, 4]))
        assert "fit of rows [3, 4] failed" in caplog.text
        assert "with its traceback" in caplog.text and "KeyError: 'inner cause'" in caplog.text
        with pytest.raises(RuntimeError, match="ValueError: bad value 5"):
            pool.run(("raise", 5))
        assert pool.run(("sub", 0))[1] == 0  # the child lives on after a task's error


def test_a_child_that_dies_is_an_error_not_a_hang():
    with ForkedPool(1, _Task(shared_array(np.zeros(1)))) as pool:
        with pytest.raises(RuntimeError, match="ended unexpectedly"):
            pool.run(("die", 0))


def _pool_in_worker():
    image = shared_array(np.zeros(2))
    with ForkedPool(2, _Task(image)) as pool:
        out = [pool.run(("sub", 1))[1], pool.run(("sub", 0))[1]]
    return out, image.tolist()


def test_fit_processes_start_inside_a_dask_worker(dask_client):
    """Dask's worker processes are daemonic: multiprocessing would refuse to
    start children there, os.fork does not."""
    out, image = dask_client.submit(_pool_in_worker, pure=False).result(timeout=60)
    assert out == [3, 0] and image == [-1.0, -1.0]


def test_a_run_with_fit_processes_gives_the_same_catalog_and_counts_their_cpu(tmp_path, dask_client):
    """Through real Dask workers: ``fit.processes: 2`` gives the one-process
    catalog, and each tile's ``cpu_s`` holds its fit processes' CPU."""
    import json

    import dja_sepp
    from newcomer import write_tiny_field

    images, psf_args = write_tiny_field(tmp_path)
    psfs = dict(a.split("=", 1) for a in psf_args[1::2])
    # (no noise measurement: its threads' CPU would count too)
    results = {n: dja_sepp.run(images, tmp_path / f"run{n}", models="sersic", psfs=psfs, mosaic=False,
                               cluster=dask_client, progress=False, tiling__tile_size=100.0, fit__processes=n,
                               detection__noise_correlation=False)
               for n in (1, 2)}
    one, two = (results[n].catalog for n in (1, 2))
    assert len(one) == len(two) == 4
    for col in one.colnames:
        if col != "FIT_DURATION":
            assert np.array_equal(np.asarray(one[col]), np.asarray(two[col]),
                                  equal_nan=one[col].dtype.kind == "f"), col
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "run2" / "tiles").glob("*/status.json")]
    assert len(statuses) == 1
    child = statuses[0]["timings"]["helper_cpu"]
    used = statuses[0]["resources"]
    assert child > 0 and used["cpu_s"] == pytest.approx(used["thread_cpu_s"] + child, abs=1e-3)
    assert used["peak_rss_mb"] > used["own_peak_rss_mb"]  # the fit processes' own memory counts


def test_children_end_with_the_thread_that_forked_them():
    """A worker thread stopped mid-tile (its worker killed at the tile's time
    limit) leaves no fit process behind, even one that never reads its pipe."""
    import signal

    kept = []

    def start_and_leave():
        pool = ForkedPool(1, _Task(shared_array(np.zeros(1))))
        pool.run(("sub", 0))  # the child is in its loop
        kept.append(pool)     # never closed: the pipe stays open

    t = threading.Thread(target=start_and_leave)
    t.start()
    t.join()
    import time
    pid = kept[0]._children[0][0]
    for _ in range(100):
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the fit process outlived the thread that forked it")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


class _Sleeper:
    def __call__(self, seconds):
        import time
        time.sleep(seconds)
        return seconds


def test_an_error_while_a_child_is_busy_kills_the_children_at_once():
    """An exception in the pass (here: applying a quick fit) does not wait
    for a long fit still running in another process, nor leave it behind."""
    import time

    from dja_sepp.fit.schedule import run_in_order
    boxes = {0: (slice(0, 10), slice(0, 10)), 1: (slice(50, 60), slice(50, 60))}
    seconds = {0: 60.0, 1: 0.0}

    def apply(i, result):
        raise ValueError(f"cannot apply {i}")

    start = time.perf_counter()
    with pytest.raises(ValueError, match="cannot apply 1"):
        with ForkedPool(2, _Sleeper()) as pool:
            run_in_order([0, 1], boxes, boxes, lambda i: pool.run(seconds[i]), apply, 2, on_error=pool.kill)
    assert time.perf_counter() - start < 20
    for pid, _ in pool._children:
        with pytest.raises(ChildProcessError):  # reaped: no zombie, no orphan
            os.waitpid(pid, os.WNOHANG)
