"""Several threads fitting one tile's groups (``fit.threads``): the serial
order's result, groups that touch each other never at once."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dja_sepp.fit.schedule import overlapping_earlier, run_in_order


def _box(y0, y1, x0, x1):
    return slice(y0, y1), slice(x0, x1)


def test_overlapping_earlier_lists_only_earlier_boxes_that_overlap():
    boxes = [_box(0, 10, 0, 10), _box(5, 15, 5, 15), _box(20, 30, 20, 30), _box(10, 21, 0, 21)]
    got = overlapping_earlier(boxes)
    assert [list(g) for g in got] == [[], [0], [], [1, 2]]  # touching edges (10 vs 10) do not overlap


def _record(order, reads, threads, seconds=0.15, fail=None, spans=None, writes=None):
    spans, lock, applied = {} if spans is None else spans, threading.Lock(), []

    def work(i):
        if i == fail:
            raise RuntimeError("boom")
        start = time.perf_counter()
        time.sleep(seconds)
        with lock:
            spans[i] = (start, time.perf_counter())
        return i * 10

    def apply(i, result):
        assert threading.current_thread() is threading.main_thread()
        applied.append((i, result, time.perf_counter()))

    run_in_order(order, reads, reads if writes is None else writes, work, apply, threads)
    return spans, applied


def test_groups_start_after_every_earlier_overlapping_one_and_others_run_at_once():
    # 0 and 1 overlap; 2 overlaps neither; 3 overlaps 2 only
    boxes = {7: _box(0, 10, 0, 10), 3: _box(5, 15, 5, 15), 9: _box(50, 60, 50, 60), 1: _box(55, 70, 55, 70)}
    order = [7, 3, 9, 1]
    spans, applied = _record(order, boxes, threads=2)
    assert sorted(i for i, _, _ in applied) == sorted(order) and all(r == i * 10 for i, r, _ in applied)
    assert spans[3][0] >= spans[7][1]  # 3 waited for 7
    assert spans[1][0] >= spans[9][1]  # 1 waited for 9
    assert spans[9][0] < spans[7][1]   # 9 ran while 7 ran: two threads used
    serial, _ = _record(order, boxes, threads=1)
    assert all(serial[b][0] >= serial[a][1] for a, b in zip(order, order[1:]))  # one after the other


def test_a_fit_reading_where_an_earlier_one_only_writes_waits_but_one_writing_there_runs_at_once():
    """0 writes over 1's window (1 must see 0's subtraction: it waits); 2
    writes over 0's window but reads apart (it fits while 0 fits, and its
    change is applied only after 0's); 3 writes where 2 writes, and reads
    apart from both: it runs at once and is applied after 2."""
    reads = {0: _box(0, 10, 0, 10), 1: _box(12, 20, 0, 10), 2: _box(40, 50, 0, 10), 3: _box(80, 90, 0, 10)}
    writes = {0: _box(0, 15, 0, 10), 1: _box(12, 20, 0, 10), 2: _box(5, 60, 0, 10), 3: _box(55, 90, 0, 10)}
    spans, applied = _record([0, 1, 2, 3], reads, threads=3, seconds=0.3, writes=writes)
    at = {i: t for i, _, t in applied}
    assert spans[1][0] >= at[0]                                # 1 read 0's subtraction
    assert spans[2][0] < spans[0][1] and spans[3][0] < spans[0][1]  # 2 and 3 fitted while 0 fitted
    assert at[2] > at[0] and at[3] > at[2]                     # changes in the serial order where they meet
    assert [i for i, _, _ in applied].index(0) == 0


def test_a_failing_group_raises_and_starts_nothing_after_it():
    boxes = {i: _box(0, 10, 0, 10) for i in range(4)}  # all overlap: strictly serial
    spans: dict = {}
    with pytest.raises(RuntimeError, match="boom"):
        _record(range(4), boxes, threads=2, seconds=0.01, fail=1, spans=spans)
    assert set(spans) == {0}


galsim = pytest.importorskip("galsim")


@pytest.mark.parametrize("parallel", ["threads", "processes"])
def test_two_threads_give_the_one_thread_catalog(monkeypatch, parallel):
    """A crowded scene (neighbours 1.2-2.2" apart, two passes, residual
    detection on): every column but the durations is identical with one and
    two threads, and the two-thread run did fit groups at the same time
    (models subtracted at most 40 px beyond their windows: in a scene this
    small the default 150 px would make every group touch every other)."""
    from dja_sepp.fit import parallel as engine_module
    from dja_sepp.fit.base import get_engine
    from dja_sepp.settings import load_config
    from dja_sepp.sim.scenes import detect_and_match, galaxy_grid, make_scene

    rng = np.random.default_rng(5)
    truth = galaxy_grid(rng, 4, 8, 45, ("F200W", "F277W", "F444W"), flux_range=(15.0, 300.0))
    truth["X_DET"] += rng.uniform(-8, 8, len(truth))
    truth["Y_DET"] += rng.uniform(-8, 8, len(truth))
    scene = make_scene(truth, (180, 360), {"F200W": 2, "F277W": 1, "F444W": 1}, sigma=0.02, seed=3)
    cfg = load_config()
    sources, _, _ = detect_and_match(scene, cfg["detection"])

    widest = []
    original = engine_module.run_in_order

    def counting(order, reads, writes, work, apply, threads, **kw):
        running, lock = [0], threading.Lock()

        def counted(i):
            with lock:
                running[0] += 1
                widest.append(running[0])
            try:
                return work(i)
            finally:
                with lock:
                    running[0] -= 1
        return original(order, reads, writes, counted, apply, threads, **kw)

    monkeypatch.setattr(engine_module, "run_in_order", counting)
    fits = {}
    for threads in (1, 2):
        widest.clear()
        fits[threads] = get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4",
                                                  {**cfg["fit"], parallel: threads, "psf_radius": 40})
        assert max(widest) == threads
    one, two = fits[1], fits[2]
    assert len(one) == len(two) >= 20
    # the helpers' CPU, which the calling thread's CPU time does not hold, is reported
    assert "HELPER_CPU" not in one.meta and two.meta.pop("HELPER_CPU") > 0.5
    for col in one.colnames:
        if col == "FIT_DURATION":
            continue
        a, b = np.asarray(one[col]), np.asarray(two[col])
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=col)
        else:
            assert np.array_equal(a, b), col


def test_fits_read_and_change_only_inside_their_scheduled_regions(monkeypatch):
    """Every band window a fit reads and every model slice applied lies inside
    the group's read and write regions (detection pixels), also for a band on
    a grid twice as fine as the detection's: the schedule's guarantee rests on it."""
    from dja_sepp.fit import engine as engine_module
    from dja_sepp.fit import parallel
    from dja_sepp.fit.base import get_engine
    from dja_sepp.settings import load_config
    from dja_sepp.sim.scenes import detect_and_match, galaxy_grid, make_scene

    factors = {"F200W": 2, "F277W": 1, "F444W": 1}
    rng = np.random.default_rng(5)
    truth = galaxy_grid(rng, 3, 6, 45, tuple(factors), flux_range=(15.0, 300.0))
    truth["X_DET"] += rng.uniform(-8, 8, len(truth))
    truth["Y_DET"] += rng.uniform(-8, 8, len(truth))
    scene = make_scene(truth, (140, 280), factors, sigma=0.02, seed=3)
    cfg = load_config()
    sources, _, _ = detect_and_match(scene, cfg["detection"])
    affines = {b.band: engine_module.band_affine(scene.detection, b) for b in scene.bands}
    fitting, checked, outside = threading.local(), [], []

    def within(sl, affine, box):
        ext = engine_module._det_box(sl, affine)  # detection pixels the band slice touches
        checked.append(1)
        return box[0].start <= ext[0].start and ext[0].stop <= box[0].stop \
            and box[1].start <= ext[1].start and ext[1].stop <= box[1].stop

    band_data = engine_module._band_data

    def reading(band, det, win, affine, *args):
        bd = band_data(band, det, win, affine, *args)
        if bd is not None and not within(bd.meta_slice, affine, fitting.reads):
            outside.append(("read", band.band))
        return bd

    run = parallel.run_in_order

    def checking(order, reads, writes, work, apply, workers, **kw):
        def work_in(i):
            fitting.reads = reads[i]
            return work(i)

        def apply_in(i, result):
            for model in result[1:3]:  # previous and new model: band -> (slices, image)
                outside.extend(("write", name) for name, (sl, _) in model.items()
                               if not within(sl, affines[name], writes[i]))
            return apply(i, result)
        return run(order, reads, writes, work_in, apply_in, workers, **kw)

    monkeypatch.setattr(engine_module, "_band_data", reading)
    monkeypatch.setattr(parallel, "run_in_order", checking)
    fit = get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4",
                                    {**cfg["fit"], "psf_radius": 40})
    assert len(fit) >= 10 and len(checked) > 100
    assert outside == []


def test_failed_refits_in_fit_processes_keep_the_first_pass_as_in_one_process(monkeypatch):
    """Second-pass refits that fail (here: every third group's) keep their
    first-pass rows and model, flagged ``REFIT_FAILED``: the same catalog
    whether the groups are fitted in fit processes or in the tile's thread."""
    from dja_sepp.fit import engine as engine_module
    from dja_sepp.fit.base import get_engine
    from dja_sepp.fit.flags import FitFlag
    from dja_sepp.settings import load_config
    from dja_sepp.sim.scenes import detect_and_match, galaxy_grid, make_scene

    rng = np.random.default_rng(7)
    truth = galaxy_grid(rng, 3, 6, 45, ("F277W", "F444W"), flux_range=(15.0, 300.0))
    scene = make_scene(truth, (140, 280), {"F277W": 1, "F444W": 1}, sigma=0.02, seed=4)
    cfg = load_config()
    sources, _, _ = detect_and_match(scene, cfg["detection"])
    solve = engine_module._TileState._solve

    def failing_refits(self, mdef, rows, contexts, data, win, quiet=False, warm=None):
        if warm is not None and rows[0] % 3 == 0:  # a refit (warm start) of every third group
            return None
        return solve(self, mdef, rows, contexts, data, win, quiet=quiet, warm=warm)

    monkeypatch.setattr(engine_module._TileState, "_solve", failing_refits)
    opts = {**cfg["fit"], "psf_radius": 40, "refit_min_change": 0.0}  # every group refitted
    one, two = (get_engine("builtin").fit(sources, scene.detection, scene.bands, "sersic_rg4",
                                          {**opts, "processes": n}) for n in (1, 2))
    failed = (np.asarray(one["FLAGS"]) & int(FitFlag.REFIT_FAILED)) > 0
    assert 2 <= failed.sum() < len(one)
    for col in one.colnames:
        if col != "FIT_DURATION":
            assert np.array_equal(np.asarray(one[col]), np.asarray(two[col]),
                                  equal_nan=one[col].dtype.kind == "f"), col
