"""Instance sizing (issue 16): sample by density, cost model, prices,
recommendations, the EC2 request boundary, the command and the run's cost line.

Behaviour only: no test asserts a timing. EC2 is tested up to the requests
that would be made; no EC2Cluster is started and nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from dja_sepp.settings import ConfigError, load_config
from dja_sepp.sizing.costmodel import CostModel, fit_linear, makespan
from dja_sepp.sizing.prices import load_prices
from dja_sepp.sizing.recommend import RECOMMENDATION_KEYS, recommend, worker_layouts
from dja_sepp.sizing.sample import Census, pick_sample, tile_features

FAMILIES = ("c6a", "c7i", "c7a", "m7i", "r7i")


# -- sample ------------------------------------------------------------------------------------
def _census(counts: np.ndarray, core: int = 64, blank: tuple | None = None) -> Census:
    """Sources placed in the cores of a grid of ``core`` px tiles, ``counts[r, c]`` each."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for (r, c), n in np.ndenumerate(counts):
        xs += list(rng.uniform(c * core + 1, (c + 1) * core - 2, n))
        ys += list(rng.uniform(r * core + 1, (r + 1) * core - 2, n))
    ny, nx = counts.shape[0] * core, counts.shape[1] * core
    coverage = np.ones((3, ny // 64, nx // 64), bool)
    if blank:  # band index, block rows, block cols with no valid pixel
        coverage[blank[0] + 1, blank[1], blank[2]] = False
    return Census(np.array(xs), np.array(ys), ["F200W", "F444W"], [2, 1], coverage, 64, (ny, nx), 0.04)


def test_features_count_the_sources_each_core_owns_and_its_usable_bands():
    counts = np.array([[1, 5, 9], [2, 0, 30]])
    cen = _census(counts, blank=(0, 0, 0))  # F200W blank over tile r00c00
    feats = {f["tile"]: f for f in tile_features(cen, 64 * 0.04, 0.4, 64)}
    assert {t: f["n_sources"] for t, f in feats.items()} == {
        f"r{r:02d}c{c:02d}": int(n) for (r, c), n in np.ndenumerate(counts)}
    assert feats["r00c00"]["n_bands"] == 1 and feats["r01c02"]["n_bands"] == 2
    assert feats["r01c02"]["source_bands"] == 60
    # pixels: halo window over the detection grid and each usable band on its own grid
    halo = 10  # 0.4" / 0.04"
    assert feats["r00c00"]["mpix"] == pytest.approx((64 + halo) ** 2 * (1 + 1) / 1e6)
    assert feats["r00c01"]["mpix"] == pytest.approx((64 + halo) * (64 + 2 * halo) * (1 + 4 + 1) / 1e6)
    # any other tiling is described from the same census: a 2 x 2 block holds the sum
    big = {f["tile"]: f for f in tile_features(cen, 128 * 0.04, 0.4, 64)}
    assert big["r00c00"]["n_sources"] == 1 + 5 + 2 + 0
    assert big["r00c01"]["n_sources"] == 9 + 30


def test_a_tile_also_counts_the_bright_sources_of_its_halo_it_fits():
    """A tile fits the halo's sources at least ``fit.overlap_min_snr`` too
    (their rows come from the neighbour): they are its cost, not their rows."""
    cen = _census(np.array([[0, 0]]))
    # core 64 px, halo 10 px: one bright and one faint source just right of the
    # r00c00 / r00c01 edge (in r00c01's core, r00c00's halo), one bright far inside r00c01
    cen.x, cen.y = np.array([66.0, 67.0, 110.0]), np.array([30.0, 31.0, 30.0])
    cen.snr = np.array([80.0, 20.0, 90.0])
    feats = {f["tile"]: f for f in tile_features(cen, 64 * 0.04, 0.4, 64, halo_min_snr=50.0)}
    assert feats["r00c00"]["n_sources"] == 0 and feats["r00c00"]["n_fitted"] == 1
    assert feats["r00c00"]["fitted_bands"] == 2
    assert feats["r00c01"]["n_sources"] == feats["r00c01"]["n_fitted"] == 3
    plain = {f["tile"]: f for f in tile_features(cen, 64 * 0.04, 0.4, 64)}
    assert plain["r00c00"]["n_fitted"] == 0
    # only as far as the engine fits them: 2 px out of r00c00's core is within 3 px, not within 1 px
    near = {f["tile"]: f for f in tile_features(cen, 64 * 0.04, 0.4, 64, halo_min_snr=50.0, halo_reach=3)}
    far = {f["tile"]: f for f in tile_features(cen, 64 * 0.04, 0.4, 64, halo_min_snr=50.0, halo_reach=1)}
    assert near["r00c00"]["n_fitted"] == 1 and far["r00c00"]["n_fitted"] == 0
    from dja_sepp.sizing.sample import halo_reach
    assert halo_reach(cen, {"psf_radius": 150, "window_min": 15}) == 150 / 1 + 30   # F444W: 1 band px per det px


def test_sample_is_spread_over_what_tiles_cost_not_their_density():
    """Edge tiles have small cores: a dense edge tile can be cheap and a
    crowded interior one less dense. The sample follows the cost."""
    feats = [{"tile": f"t{i}", "fitted_bands": fb, "mpix": 1.0, "density": d}
             for i, (fb, d) in enumerate([(0, 0), (5, 900), (10, 50), (15, 800), (20, 60), (25, 700),
                                          (60, 100), (85, 120), (165, 150)])]
    picked = pick_sample(feats, 3)
    cost = {f["tile"]: f["fitted_bands"] for f in feats}
    assert sorted(cost[t] for t in picked) == [5, 20, 85]


def test_sample_spans_the_density_range_not_the_first_tiles():
    counts = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 20, 40, 80, 160]])
    feats = tile_features(_census(counts), 64 * 0.04, 0.4, 64)
    picked = pick_sample(feats, 3)
    n = {f["tile"]: f["n_sources"] for f in feats}
    got = sorted(n[t] for t in picked)
    assert len(picked) == 3 and len(set(picked)) == 3
    # one sparse, one median, one crowded tile: the middles of three density terciles
    assert got[0] <= 4 and 5 <= got[1] <= 9 and got[2] >= 20
    assert picked != [f["tile"] for f in feats[:3]]
    assert sorted(pick_sample(feats, 99)) == sorted(n)      # more than there are: all


# -- cost model --------------------------------------------------------------------------------
def _rows(n, a=0.25, b=3.0, c=2.0, noise=0.05, seed=1, machine="local", workers=2, factor=1.3):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sb, mp = rng.uniform(20, 600), rng.uniform(1, 6)
        core = (a * sb + b * mp + c) * (1 + noise * rng.normal())
        rows.append({"machine": machine, "workers": workers, "threads": 1, "tile": f"t{i}", "state": "ok",
                     "fitted_bands": sb, "mpix": mp, "core_s": core, "wall_s": factor * core,
                     "rss_base_mb": 250.0, "rss_before_mb": 250.0, "rss_after_mb": 280.0,
                     "peak_rss_mb": 250.0 + 40.0 * mp,
                     "warmup_s": 3.0})
    return rows


def test_cost_model_recovers_synthetic_coefficients_with_honest_errors():
    model = CostModel.fit(_rows(40))
    t = model.to_dict()["time"]
    assert t["terms"] == ["fitted_bands", "mpix", "const"] and t["dof"] == 37
    for term, true in (("fitted_bands", 0.25), ("mpix", 3.0)):
        assert abs(t["coef"][term] - true) < 4 * t["coef_err"][term] + 1e-9, (term, t)
    assert 0.02 < t["sigma_rel"] < 0.1                      # the 5 % scatter put in
    assert model.memory.terms == ["mpix", "const"]
    assert model.memory.coef[0] == pytest.approx(40.0, rel=1e-3)
    # a tile's rise comes on top of the warmed-up worker's size (250), not on the heap
    # a worker keeps after tiles (280), which the next tile allocates from ...
    assert model.peak_rss_mb([{"mpix": 10.0, "fitted_bands": 100.0}])[0] == pytest.approx(250.0 + 400.0, rel=1e-3)
    # ... and a worker never needs less than what it keeps
    assert model.peak_rss_mb([{"mpix": 0.1, "fitted_bands": 1.0}])[0] == pytest.approx(280.0, rel=1e-3)
    assert model.rss_base_mb == 280.0 and model.rss_fresh_mb == 250.0 and model.warmup_s == 3.0
    assert model.wall_factor == {"local/2/1": pytest.approx(1.3, rel=1e-6)}
    # the field total and its error: the truth lies within a few standard errors
    field = _rows(200, noise=0.0, seed=7)
    total, err = model.total_core_s(field)
    truth = sum(r["core_s"] for r in field)
    assert np.isfinite(err) and err > 0 and abs(total - truth) < 4 * err


def test_cost_model_with_few_tiles_keeps_a_degree_of_freedom_and_drops_negative_terms():
    rows = _rows(3, noise=0.1)
    fit = fit_linear(rows, "core_s", ("fitted_bands", "mpix", "const"))
    assert len(fit.terms) <= 2 and fit.dof >= 1 and np.isfinite(fit.sigma_rel)
    # a term the data make negative is dropped, not kept with an unphysical sign
    rows = [{"x": x, "y": 5.0 - 0.01 * x, "const": 1} for x in (1.0, 50.0, 100.0, 150.0)]
    fit = fit_linear(rows, "y", ("x", "const"))
    assert fit.terms == ["const"] and fit.coef[0] > 0
    # one tile size only: the memory rise is taken as proportional to the pixels
    same = [dict(r, mpix=4.0, peak_rss_mb=410.0) for r in _rows(3)]
    assert CostModel.fit(same).memory.terms == ["mpix"]


def test_makespan_schedules_longest_first():
    assert makespan([5, 4, 3, 3, 2, 1], 2) == 9.0
    assert makespan([7, 1, 1], 8) == 7.0 and makespan([], 3) == 0.0
    assert makespan([1.0] * 10, 1) == 10.0


# -- prices ------------------------------------------------------------------------------------
def test_shipped_price_table_is_dated_data_for_the_five_families():
    table = load_prices()
    assert table.region and table.date.startswith("20") and table.checked is False
    fams = {i.family for i in table.instances.values()}
    assert set(FAMILIES) <= fams
    for inst in table.instances.values():
        assert inst.vcpu >= inst.cores >= 1 and inst.memory_gib > 0
        assert 0 < inst.spot < inst.on_demand
    assert table.instances["c7a.4xlarge"].cores == 16      # no SMT on c7a
    assert table.instances["c7i.4xlarge"].cores == 8
    text = Path(table.path).read_text()
    assert "CHECK AND EDIT" in text                         # the user is told


def test_price_table_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("region: x\ndate: '2026-01-01'\ninstances:\n  c7i.large: {vcpu: 2, cores: 1, "
                   "memory_gib: 4, on_demand: cheap, spot: 0.03}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: instances.c7i.large.on_demand must be a positive"):
        load_prices(bad)
    bad.write_text("instances: {}\n")
    with pytest.raises(ConfigError, match="instances"):
        load_prices(bad)
    with pytest.raises(ConfigError, match="no price for instance type"):
        load_prices().select(["c9z.large"])


# -- recommendations ---------------------------------------------------------------------------
def _field(n_tiles=40, seed=3):
    rng = np.random.default_rng(seed)
    return [{"tile": f"t{i}", "fitted_bands": float(rng.uniform(50, 2000)), "mpix": 40.0}
            for i in range(n_tiles)]


def test_recommendations_meet_the_target_and_are_ranked_by_cost():
    model = CostModel.fit(_rows(12))
    sizing = load_config()["sizing"]
    prices = load_prices()
    tiles = {60.0: _field()}
    free = recommend(model, tiles, prices, sizing, setup_s=60.0)
    assert free and all(set(RECOMMENDATION_KEYS) <= set(r) for r in free)
    costs = [r["predicted_cost_usd"] for r in free]
    assert costs == sorted(costs)                           # no target: cheapest first
    fast = recommend(model, tiles, prices, dict(sizing, target_hours=0.5), setup_s=60.0)
    best = fast[0]
    assert best["meets_target"] and best["predicted_wall_h"] <= 0.5
    assert best["n_instances"] >= free[0]["n_instances"]
    ok = [r for r in fast if r["meets_target"]]
    assert [r["predicted_cost_usd"] for r in ok] == sorted(r["predicted_cost_usd"] for r in ok)
    assert all(r["predicted_wall_h_err"] is not None and r["predicted_wall_h_err"] >= 0 for r in fast)


def test_the_merge_is_a_line_through_its_timings_and_adds_to_every_wall_time():
    model = CostModel.fit(_rows(12))
    # cold, then warm: fixed + per tile + per row through the warm timings, the cold excess paid once
    timings = [(1, 100, 2.3), (1, 100, 1.3), (1, 600, 2.3), (3, 900, 3.1)]
    line = model.with_merge(timings, rows_per_source=1.5)
    assert line.merge_row_s == pytest.approx(0.002) and line.merge_tile_s == pytest.approx(0.1)
    assert line.merge_fixed_s == pytest.approx(1.0 + 1.0)
    assert line.merge_s(10, 1000) == pytest.approx(2.0 + 0.1 * 10 + 0.002 * 1500)
    assert line.to_dict()["merge"]["per_tile_s"] == pytest.approx(0.1)
    # rows spanning less than min_span: timing noise, no row term
    flat = model.with_merge([(1, 3, 1.5), (1, 3, 0.9), (1, 40, 0.9), (3, 60, 1.1)], rows_per_source=1.0)
    assert flat.merge_row_s == 0.0 and flat.merge_tile_s == pytest.approx(0.1)
    assert flat.merge_fixed_s == pytest.approx(0.8 + 0.6)
    one = model.with_merge([(1, 50, 2.0)], rows_per_source=1.0)   # one timing: all of it fixed
    assert one.merge_row_s == one.merge_tile_s == 0.0 and one.merge_s(100, 10 ** 6) == pytest.approx(2.0)
    sizing, prices, tiles = load_config()["sizing"], load_prices(), {60.0: _field()}
    slow = model.with_merge([(1, 0, 360.0)], rows_per_source=1.0)
    plain = {(r["instance_type"], r["workers"]): r for r in recommend(model, tiles, prices, sizing)}
    for r in recommend(slow, tiles, prices, sizing):
        base = plain[(r["instance_type"], r["workers"])]
        if base["n_instances"] == r["n_instances"]:
            assert r["predicted_wall_h"] == pytest.approx(base["predicted_wall_h"] + 0.1, abs=1e-4)


def test_workers_are_cut_to_what_fits_in_memory():
    rows = [dict(r, peak_rss_mb=250.0 + 300.0 * r["mpix"]) for r in _rows(8)]  # 12 GB per 40 Mpix tile
    model = CostModel.fit(rows)
    sizing = dict(load_config()["sizing"], instance_types=["c7i.4xlarge", "r7i.4xlarge"])
    recs = recommend(model, {60.0: _field()}, load_prices(), sizing)
    by = {(r["instance_type"]): r for r in recs}
    need = by["r7i.4xlarge"]["predicted_peak_rss_mb"]
    for r in recs:
        assert r["workers"] * need <= r["memory_gib"] * 1024 * sizing["memory_fraction"] + 1e-6
    assert need == pytest.approx(250.0 + 300.0 * 40.0, rel=1e-3)   # the warmed-up worker + the tile
    # 32 GiB hold 2 such workers; 128 GiB hold 9 (of 16 vCPUs), all 8 of the one-per-core layout
    assert {r["workers"] for r in recs if r["instance_type"] == "c7i.4xlarge"} == {2}
    assert {r["workers"] for r in recs if r["instance_type"] == "r7i.4xlarge"} == {8, 9}


def test_unmeasured_types_take_the_core_speed_and_thread_penalty_not_the_local_load():
    from dja_sepp.sizing.recommend import evaluate
    # measured on a busy machine: wall = 3 x core-s with one thread, 4.5 x with two
    rows = _rows(6, factor=3.0) + [dict(r, threads=2, wall_s=r["core_s"] * 4.5) for r in _rows(6, seed=5)]
    model = CostModel.fit(rows)
    assert model.thread_penalty(1) == 1.0 and model.thread_penalty(2) == pytest.approx(1.5)
    prices, sizing, tiles = load_prices(), load_config()["sizing"], _field(8)
    inst = prices.instances["c7a.4xlarge"]                  # 16 cores, no SMT
    fixed = prices.startup_minutes * 60 + model.warmup_s
    one = evaluate(model, tiles, inst, 16, 1, 60.0, prices, sizing, setup_s=0.0)
    assert one["n_instances"] == 1
    assert one["predicted_wall_h"] == pytest.approx((fixed + max(model.core_s(tiles))) / 3600, abs=1e-4)
    two = evaluate(model, tiles, inst, 8, 2, 60.0, prices, sizing, setup_s=0.0)
    assert two["predicted_wall_h"] == pytest.approx((fixed + 1.5 * max(model.core_s(tiles))) / 3600, abs=1e-4)
    smt = evaluate(model, tiles, prices.instances["c7i.4xlarge"], 16, 1, 60.0, prices, sizing, setup_s=0.0)
    assert smt["predicted_wall_h"] == pytest.approx(
        (fixed + prices.smt_slowdown * max(model.core_s(tiles))) / 3600, abs=1e-4)


def test_worker_layouts_per_core_and_per_vcpu():
    prices = load_prices()
    assert worker_layouts(prices.instances["c7i.4xlarge"], [1, 2]) == [(8, 1), (16, 1), (4, 2), (8, 2)]
    assert worker_layouts(prices.instances["c7a.4xlarge"], [1]) == [(16, 1)]


# -- the EC2 boundary --------------------------------------------------------------------------
def test_ec2_sweep_requests_exactly_one_instance_per_type_and_layout():
    from dja_sepp.deploy.ec2 import ec2_options
    from dja_sepp.sizing.harness import plan_settings
    cfg = load_config({"cluster": {"ec2": {"ami": "ami-0123", "allowed_cidr": "203.0.113.7/32",
                                           "region": "us-east-1"}},
                       "sizing": {"instance_types": ["c7i.4xlarge", "r7i.2xlarge"], "threads": [1, 2],
                                  "tile_sizes": [60, 120]}})
    settings = plan_settings(cfg, "ec2")
    got = [(s.machine, s.tile_size, s.workers, s.threads, s.cluster["ec2"]["worker_memory"])
           for s in settings]
    # one worker per vCPU / threads; each worker its share of 85 % of the memory
    assert got == [("c7i.4xlarge", 60.0, 16, 1, "1.70GiB"), ("c7i.4xlarge", 60.0, 8, 2, "3.40GiB"),
                   ("c7i.4xlarge", 120.0, 16, 1, "1.70GiB"), ("c7i.4xlarge", 120.0, 8, 2, "3.40GiB"),
                   ("r7i.2xlarge", 60.0, 8, 1, "6.80GiB"), ("r7i.2xlarge", 60.0, 4, 2, "13.60GiB"),
                   ("r7i.2xlarge", 120.0, 8, 1, "6.80GiB"), ("r7i.2xlarge", 120.0, 4, 2, "13.60GiB")]
    for s in settings:
        assert s.cluster["kind"] == "ec2"
        opts = ec2_options(s.cluster["ec2"], "sg-test", "run-test")
        assert opts["worker_instance_type"] == s.machine and opts["n_workers"] == 1
        assert opts["worker_module"] == "dja_sepp.deploy.ec2_worker"
        assert opts["worker_options"] == {"nworkers": s.workers, "nthreads": s.threads,
                                          "memory_limit": s.cluster["ec2"]["worker_memory"]}
        assert s.cluster["ec2"]["minimum"] == s.cluster["ec2"]["maximum"] == 1
    # settings EC2 would refuse are refused before any work
    with pytest.raises(ValueError, match="allowed_cidr"):
        plan_settings(load_config({"cluster": {"ec2": {"ami": "ami-0123"}}}), "ec2")
    # the flags reach `dask worker` as it spells them
    from dja_sepp.deploy.ec2_worker import worker_command
    cmd = worker_command("tcp://10.0.0.1:8786", 16, 1, "1.70GiB", "w")
    assert cmd[2:] == ["distributed.cli.dask_worker", "tcp://10.0.0.1:8786", "--nworkers", "16",
                       "--nthreads", "1", "--memory-limit", "1.70GiB", "--name", "w"]


# -- the harness and the command on a tiny field -----------------------------------------------
def _psfs(args):
    return dict(a.split("=", 1) for a in args[1::2])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from newcomer import write_tiny_field
    folder = tmp_path_factory.mktemp("tiny_size")
    images, psf_args = write_tiny_field(folder)
    return images, psf_args


#: 6.4" -> 192 px cores (3 x 64), 1" halo: 1 x 2 tiles on the 160 x 224 px tiny field (4 sources)
_TINY = ["--tile-size", "6.4", "--overlap", "1.0"]


def test_size_command_writes_the_sizing_contract(tiny, tmp_path, capsys):
    from dja_sepp.cli import main
    images, psf_args = tiny
    out = tmp_path / "sizing"
    code = main(["size", "--images", str(images), "--out", str(out), *psf_args, *_TINY,
                 "--sample", "2", "--workers", "1", "--target-hours", "1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "best:" in text and "sizing.md" in text
    data = json.loads((out / "sizing.json").read_text())
    assert {"measured", "model", "field", "recommendations"} <= set(data)
    # measured: one row per sampled tile and setting, with what a tile cost
    assert len(data["measured"]) == 2
    for row in data["measured"]:
        assert row["machine"] == "local" and row["workers"] == 1 and row["threads"] == 1
        assert row["tile_size_arcsec"] == 6.4 and row["state"] == "ok"
        for key in ("n_sources", "n_bands", "mpix", "core_s", "wall_s", "peak_rss_mb"):
            assert row[key] >= 0, key
        assert row["n_bands"] == 2 and row["peak_rss_mb"] > row["rss_base_mb"] > 0
    assert data["model"]["time"]["terms"] and data["model"]["memory"]["terms"]
    assert data["model"]["time"]["target"] == "core_s per tile"
    f = data["field"]
    assert f["n_sources"] == 4 and f["n_bands"] == 2 and f["n_tiles"] == 2   # 6.4" -> 192 px cores: 1 x 2
    assert f["predicted_core_s"] > 0 and f["machine"] == "local"
    assert f["here"]["workers"] == 1 and f["here"]["predicted_wall_s"] > 0
    # the run's merge, timed on the sampled tiles, is part of the predicted wall time
    merge = data["model"]["merge"]
    # (least squares on three timings of small merges may put it all in the fixed or the per-tile part)
    assert merge["fixed_s"] >= 0 and merge["per_tile_s"] >= 0 and merge["rows_per_source"] > 0
    here = f["here"]
    assert here["predicted_merge_s"] >= merge["fixed_s"] + f["n_tiles"] * merge["per_tile_s"] - 0.02
    assert here["predicted_merge_s"] > 0
    assert here["predicted_wall_s"] == pytest.approx(
        here["setup_s"] + here["predicted_tiles_wall_s"] + here["predicted_merge_s"], abs=0.02)
    assert (out / "measure" / "local-t6.4-w1x1" / "catalog.fits").exists()
    recs = data["recommendations"]
    assert recs and all(set(RECOMMENDATION_KEYS) <= set(r) for r in recs)
    assert all(isinstance(r["n_instances"], int) and r["n_instances"] >= 1 for r in recs)
    assert recs[0]["meets_target"] and recs[0]["predicted_wall_h"] <= 1.0
    assert {r["instance_type"].split(".")[0] for r in recs} == set(FAMILIES)
    assert (out / "sizing.png").stat().st_size > 0
    md = (out / "sizing.md").read_text()
    assert recs[0]["instance_type"] in md and "NOT CHECKED" in md
    assert data["prices"]["date"] and data["census"]["n_sources"] == 4


def test_size_refuses_bad_options_before_any_work(tiny, tmp_path, capsys):
    from dja_sepp.cli import main
    images, psf_args = tiny
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        main(["size", "--images", str(images), "--out", str(out), "--target-hours", "0"])
    assert exc.value.code == 2
    code = main(["size", "--images", str(images), "--out", str(out), *psf_args,
                 "--config", str(_cfg(tmp_path, "sizing:\n  market: cheapest\n"))])
    assert code == 2 and "sizing.market" in capsys.readouterr().err
    assert not (out / "sizing.json").exists()


def _cfg(folder: Path, text: str) -> Path:
    path = folder / "cfg.yaml"
    path.write_text(text)
    return path


def test_ec2_sizing_runs_through_the_requests_without_aws(tiny, tmp_path, monkeypatch, dask_client):
    """``--cluster ec2``: each instance type asked gets exactly one request, made
    through the run's own ec2_cluster; here a stand-in records it (and the
    EC2Cluster arguments it would build) and serves the tests' local cluster
    (127.0.0.1) instead."""
    import dja_sepp.deploy.ec2 as ec2
    from dja_sepp.sizing import size_field
    requests = []

    @contextmanager
    def fake_ec2_cluster(settings):
        requests.append((dict(settings), ec2.ec2_options(settings, "sg-test", "run-test")))
        yield dask_client.cluster

    monkeypatch.setattr(ec2, "ec2_cluster", fake_ec2_cluster)
    images, psf_args = tiny
    cfg = {"tiling": {"tile_size": 6.4, "overlap": 1.0},
           "cluster": {"ec2": {"ami": "ami-0123", "allowed_cidr": "203.0.113.7/32"}},
           "sizing": {"instance_types": ["c7a.xlarge", "m7i.2xlarge"], "workers": [2], "sample": 1}}
    result = size_field(images, tmp_path / "ec2", cluster="ec2", config=cfg, psfs=_psfs(psf_args),
                        progress=False)
    assert [(s["worker_instance_type"], s["workers_per_instance"], s["worker_nthreads"], s["worker_memory"],
             s["minimum"], s["maximum"]) for s, _ in requests] == [
        ("c7a.xlarge", 2, 1, "3.40GiB", 1, 1), ("m7i.2xlarge", 2, 1, "13.60GiB", 1, 1)]
    for settings, opts in requests:
        assert opts["worker_instance_type"] == settings["worker_instance_type"]
        assert opts["worker_options"] == {"nworkers": 2, "nthreads": 1, "memory_limit": settings["worker_memory"]}
        assert opts["security_groups"] == ["sg-test"] and opts["n_workers"] == 1
    assert [r["machine"] for r in result.measured] == ["c7a.xlarge", "m7i.2xlarge"]
    # a type measured on EC2 is priced with its own measurement
    measured = [r for r in result.recommendations if r["measured_on_type"]]
    assert {r["instance_type"] for r in measured} == {"c7a.xlarge", "m7i.2xlarge"}


def test_run_records_resources_prints_cost_and_saves_the_performance_report(tiny, tmp_path, dask_client):
    import dja_sepp
    from dja_sepp.cli import _overrides, build_parser
    images, psf_args = tiny
    out = tmp_path / "run"
    result = dja_sepp.run(images, out, psfs=_psfs(psf_args), cluster=dask_client, progress=False,
                          mosaic=False, performance_report=True, tiling__tile_size=6.4, tiling__overlap=1.0)
    assert result.complete
    text = result.summary()
    assert "core-s per source-band" in text and "on c7i.4xlarge" in text
    report = (out / "performance_report.html").read_text()
    assert "Dask Performance Report" in report
    status = json.loads(next((out / "tiles").glob("*/status.json")).read_text())
    res = status["resources"]
    assert res["peak_rss_mb"] >= res["rss_before_mb"] > 0 and res["cpu_s"] >= 0 and res["peak_exact"]
    usage = json.loads((out / "summary.json").read_text())["usage"]
    assert usage["instance_type"] == "c7i.4xlarge" and usage["slots"] == 16
    assert usage["tiles"] == result.n_tiles and usage["source_bands"] == 4 * 2
    assert usage["cost_usd"] == pytest.approx(usage["core_s"] / 3600 / 16 * usage["price_per_hour"], abs=1e-4)
    # the command line's flag sets the same key
    args = build_parser().parse_args(["run", "--images", "x", "--out", "y", "--performance-report"])
    assert _overrides(args)["cluster__performance_report"] is True


def _hold(event_name):
    from distributed import Event
    Event(event_name).wait(30)
    return event_name


def test_tile_tasks_are_named_by_tile_and_queued_by_the_scheduler():
    """Tile keys carry the tile id (the dashboard names the tile) under one
    prefix, so the scheduler holds the tiles back and gives the next one to
    the first free worker; with a prefix per tile every task went to a worker
    at once (no queue), and a worker could idle while another had tiles."""
    from dask.utils import key_split
    from distributed import Client, Event, LocalCluster
    from dja_sepp.pipeline.execute import tile_key
    assert tile_key("r01c02", "3f2e1a9b", 0) == "tile-r01c02-a0-3f2e1a9b"
    assert key_split(tile_key("r01c02", "3f2e1a9b", 0)) == key_split(tile_key("r10c00", "3f2e1a9b")) == "tile"

    def placed(dask_scheduler):
        """(tasks queued on the scheduler, tasks on a worker)."""
        return len(dask_scheduler.queued), sum(len(ws.processing) for ws in dask_scheduler.workers.values())

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for naming, expect_queue in ((lambda i: tile_key(f"r{i:02d}c00", "3f2e1a9b", 0), True),
                                     (lambda i: f"tile_r{i:02d}c00-a0-3f2e1a9b", False)):
            gate = Event(f"gate-{expect_queue}", client=client)
            futures = [client.submit(_hold, gate.name, key=naming(i), pure=False) for i in range(9)]
            deadline = time.time() + 20  # every task has reached the scheduler and been placed
            while time.time() < deadline and sum(client.run_on_scheduler(placed)) < 9:
                time.sleep(0.05)
            held = client.run_on_scheduler(placed)[0]
            gate.set()
            client.gather(futures)
            # most wait on the scheduler (a worker holds at most its threads x
            # distributed's worker-saturation); with a prefix per tile: none
            assert (held >= 5) if expect_queue else (held == 0), (expect_queue, held)


def test_probe_measures_the_block_alone():
    from dja_sepp.sizing.probe import probe
    with probe() as used:
        block = np.ones(40_000_000)  # 320 MB touched
        block.sum()
        del block
    assert used["peak_exact"] and used["peak_rss_mb"] - used["rss_before_mb"] > 250
    with probe() as again:  # the high-water mark was reset: the next block is measured alone
        pass
    assert again["peak_rss_mb"] - again["rss_before_mb"] < 100


def test_the_warm_up_fits_its_source_on_both_grids():
    """The warm-up swallows its own errors (a worker must not die of it), so
    check here that it really runs what a first tile loads: the noise
    measurement and a two-band fit on the 0.04" and 0.02" grids."""
    from dja_sepp.detect import detect_sources
    from dja_sepp.fit.base import get_engine
    from dja_sepp.pipeline.tile_task import _band_noise
    from dja_sepp.sizing.harness import _synthetic_cutouts, warm_up
    assert warm_up() > 0
    det, cuts = _synthetic_cutouts()
    assert [c.shape for c in cuts] == [(64, 64), (128, 128)]
    sources, det.segmap = detect_sources(det, {"thresh": 5.0, "back_size": 64})
    sources["IN_CORE"] = np.ones(len(sources), bool)
    assert len(sources) == 1
    assert all(np.isfinite(_band_noise(c, det)) for c in cuts)
    fit = get_engine("builtin").fit(sources, det, cuts, "sersic_rg4", load_config()["fit"])
    total = 40.0 * np.pi * 8.0   # the Gaussian's flux
    assert fit["FLAGS"][0] == 0
    for band in ("F444W", "F150W"):
        assert fit[f"FLUX_MODEL_{band}"][0] == pytest.approx(total, rel=0.05)
