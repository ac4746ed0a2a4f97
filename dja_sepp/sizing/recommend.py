"""From the cost model and the price table to a ranked list of cluster choices.

For every instance type of the price table (or ``sizing.instance_types``),
threads per worker measured, and workers per instance (one per physical core,
or one per vCPU), and every tile size swept: the workers that fit in memory
(each needs its resting size plus ``threads`` times the rise of the field's
largest tile, within ``sizing.memory_fraction`` of the instance), the tile
tasks' wall times (predicted core-s x the machine's speed; on a type measured
on EC2 x its measured wall / core-s factor, else x the measured penalty of
threads per worker and ``smt_slowdown`` where workers share a core's
hyperthreads), and the number of instances: the cheapest that meets
``sizing.target_hours`` (or simply the cheapest). Wall time = setup (the PSF
step, measured) + instance start-up + the tiles scheduled longest first on all
slots; cost = instances x price x wall + the scheduler instance.

Writers: :func:`write_markdown` (``sizing.md``), :func:`write_plot`
(``sizing.png``, cost against wall time).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .costmodel import CostModel, makespan
from .prices import InstanceType, PriceTable

__all__ = ["recommend", "evaluate", "worker_layouts", "leading", "write_markdown", "write_plot",
           "RECOMMENDATION_KEYS"]

#: Keys every recommendation has (the contract of ``sizing.json``).
RECOMMENDATION_KEYS = ("instance_type", "workers", "threads", "tile_size_arcsec", "n_instances",
                       "predicted_wall_h", "predicted_cost_usd")


def worker_layouts(inst: InstanceType, threads: Sequence[int]) -> list[tuple[int, int]]:
    """``(workers, threads)`` per instance: one slot per physical core and one
    per vCPU, for each ``threads`` value."""
    out = []
    for t in threads:
        for basis in sorted({inst.cores, inst.vcpu}):
            if basis // t >= 1:
                out.append((basis // t, int(t)))
    return list(dict.fromkeys(out))


def evaluate(model: CostModel, tiles: Sequence[Mapping[str, Any]], inst: InstanceType, workers: int,
             threads: int, tile_size: float, prices: PriceTable, sizing: Mapping[str, Any],
             setup_s: float, measured: Sequence[str] = ()) -> dict | None:
    """The best instance count for one instance type, layout and tile size;
    None when not even one worker fits in its memory."""
    market = sizing["market"]
    need = float(np.max(model.peak_rss_mb(tiles, threads))) if tiles else model.rss_base_mb
    usable_mb = inst.memory_gib * 1024.0 * float(sizing["memory_fraction"])
    workers = min(workers, int(usable_mb // need))
    if workers < 1:
        return None
    slots = workers * threads
    if inst.name in measured:  # measured on this type: its own speed and wall factor
        per_tile = model.core_s(tiles, inst.name) * model.factor(inst.name, workers, threads)
    else:
        # the machine measured lends its core speed and the relative cost of threads per worker,
        # not its own contention or other load: a dedicated instance runs a single-threaded
        # worker's tile in its core-s (x smt_slowdown where two workers share a core)
        smt = prices.smt_slowdown if slots > inst.cores else 1.0
        per_tile = model.core_s(tiles) * inst.speed * smt * model.thread_penalty(threads)
    startup = prices.startup_minutes * 60.0
    price = inst.price(market)
    sched = prices.scheduler_price(market)
    most = min(int(sizing["max_instances"]), max(1, math.ceil(len(per_tile) / slots)))
    target = sizing.get("target_hours")
    merge = model.merge_s(len(tiles), sum(t.get("n_sources", 0) for t in tiles))
    fixed = setup_s + startup + model.warmup_s + merge
    best = None
    for n in range(1, most + 1):
        wall = fixed + makespan(per_tile, n * slots)
        cost = (n * price + sched) * wall / 3600.0
        meets = target is None or wall / 3600.0 <= float(target)
        key = (not meets, cost if meets or target is None else wall, wall)
        if best is None or key < best[0]:
            best = (key, n, wall, cost, meets)
    _, n, wall, cost, meets = best
    rel = model.relative_error(tiles)
    compute = wall - fixed
    wall_err = compute * rel if np.isfinite(rel) else float("nan")
    return {"instance_type": inst.name, "workers": int(workers), "threads": int(threads),
            "tile_size_arcsec": float(tile_size), "n_instances": int(n),
            "predicted_wall_h": round(wall / 3600.0, 4),
            "predicted_cost_usd": round(cost, 4),
            "predicted_wall_h_err": _round(wall_err / 3600.0, 4),
            "predicted_cost_usd_err": _round((n * price + sched) * wall_err / 3600.0, 4),
            "meets_target": bool(meets), "market": market, "price_per_hour": price,
            "vcpu": inst.vcpu, "cores": inst.cores, "memory_gib": inst.memory_gib,
            "worker_memory_gib": round(usable_mb / workers / 1024.0, 2),
            "predicted_peak_rss_mb": round(need, 1), "measured_on_type": inst.name in measured}


def _round(v: float, n: int) -> float | None:
    return None if not np.isfinite(v) else round(float(v), n)


def recommend(model: CostModel, tiles_by_size: Mapping[float, Sequence[Mapping[str, Any]]],
              prices: PriceTable, sizing: Mapping[str, Any], setup_s: float = 0.0,
              threads: Sequence[int] = (1,), measured: Sequence[str] = ()) -> list[dict]:
    """Every candidate (instance type x layout x tile size), best first.

    Parameters
    ----------
    model : CostModel
    tiles_by_size : mapping
        Tile size (arcsec) -> the field's tiles at that size
        (:func:`~dja_sepp.sizing.sample.tile_features`).
    prices : PriceTable
    sizing : mapping
        The ``sizing:`` configuration section.
    setup_s : float
        Driver time before the tiles (field, PSF step), measured.
    threads : sequence of int
        Threads per worker measured (others are not offered).
    measured : sequence of str
        Instance types measured on EC2.

    Returns
    -------
    list of dict
        Ranked by: meets the target wall time, then cost, then wall time.
    """
    rows = []
    for inst in prices.select(sizing.get("instance_types") or []):
        for workers, t in worker_layouts(inst, threads):
            for size, tiles in tiles_by_size.items():
                row = evaluate(model, tiles, inst, workers, t, size, prices, sizing, setup_s, measured)
                if row is not None:
                    rows.append(row)
    rows.sort(key=lambda r: (not r["meets_target"], r["predicted_cost_usd"], r["predicted_wall_h"],
                             r["instance_type"]))
    return rows


def leading(recs: Sequence[Mapping[str, Any]], top: int) -> list[Mapping[str, Any]]:
    """The best choice and the runners-up: the best row of each instance
    type, best first, ``top`` of them."""
    seen, out = set(), []
    for r in recs:
        if r["instance_type"] not in seen:
            seen.add(r["instance_type"])
            out.append(r)
        if len(out) >= top:
            break
    return out


def _fmt(v, err=None, digits=2) -> str:
    if v is None:
        return "-"
    text = f"{v:.{digits}f}"
    return text + (f" ± {err:.{digits}f}" if err is not None else "")


def write_markdown(path, result: Mapping[str, Any], top: int = 5) -> None:
    """``sizing.md``: the field, the measurements, the model, the best choices."""
    f, model, recs = result["field"], result["model"], result["recommendations"]
    here = f.get("here") or {}
    lines = ["# Instance sizing", "",
             f"Field `{f['name']}`: {f['n_sources']} sources, {f['n_bands']} bands, {f['n_tiles']} tiles of "
             f"{f['tile_size_arcsec']:g}\" (detection census). Predicted {f['predicted_core_s']:.0f} "
             f"± {f['predicted_core_s_err'] or float('nan'):.0f} core-s of tile tasks on the machine measured "
             f"({model['machine']}), {f['predicted_core_s_per_source_band'] or float('nan'):.3f} per source-band.",
             ""]
    if here:
        lines += [f"On the machine measured with {here['workers']} worker(s) x {here['threads']} thread(s): "
                  f"predicted wall {here['predicted_wall_s']:.0f} s (setup {here['setup_s']:.0f} s + tiles).", ""]
    p = result["prices"]
    lines += [f"Prices: {p['file']} ({p['region']}, written {p['date']}, "
              f"{'checked' if p['checked'] else 'NOT CHECKED against AWS: edit the table'}), "
              f"market {result['market']}; target wall time "
              f"{result['target_hours'] if result['target_hours'] else 'none (cheapest)'} h.", "",
              "## Recommendation (best first)", "",
              "| # | instance | workers x threads | tile | instances | wall (h) | cost ($) | worker peak (MB) | meets target |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n, r in enumerate(leading(recs, top), 1):  # the runners-up are other instance types
        lines.append(f"| {n} | {r['instance_type']} | {r['workers']} x {r['threads']} | "
                     f"{r['tile_size_arcsec']:g}\" | {r['n_instances']} | "
                     f"{_fmt(r['predicted_wall_h'], r['predicted_wall_h_err'])} | "
                     f"{_fmt(r['predicted_cost_usd'], r['predicted_cost_usd_err'])} | "
                     f"{r['predicted_peak_rss_mb']:.0f} | {'yes' if r['meets_target'] else 'no'} |")
    t = model["time"]
    lines += ["", "## Cost model", "",
              "core-s per tile = " + " + ".join(
                  f"{_fmt(t['coef'][k], t['coef_err'][k], 4)} x {k}" if k != "const"
                  else f"{_fmt(t['coef'][k], t['coef_err'][k], 3)}" for k in t["terms"]) +
              f"; scatter {(t['sigma_rel'] or float('nan')) * 100:.0f} % per tile ({t['dof']} dof).",
              "",
              f"worker memory = {model.get('rss_fresh_mb') or model['rss_base_mb']:.0f} MB at rest + (" +
              " + ".join(f"{_fmt(model['memory']['coef'][k], model['memory']['coef_err'][k], 1)}" +
                         (f" x {k}" if k != "const" else "") for k in model["memory"]["terms"]) +
              f") MB per thread running a tile, at least the {model['rss_base_mb']:.0f} MB a worker keeps "
              "after tiles.", "",
              "wall / core-s factors of the settings measured: " + ", ".join(
                  f"{k} {v:.2f}" for k, v in model["wall_factor"].items()) + ".", "",
              "## Measured tiles", "",
              "| machine | tile | workers x threads | tile id | sources | bands | Mpix | core-s | wall (s) | peak RSS (MB) | state |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["measured"]:
        lines.append(f"| {m['machine']} | {m['tile_size_arcsec']:g}\" | {m['workers']} x {m['threads']} | "
                     f"{m['tile']} | {m['n_sources']} | {m['n_bands']} | {m['mpix']:.2f} | "
                     f"{m['core_s']:.1f} | {m['wall_s']:.1f} | {m['peak_rss_mb']:.0f} | {m['state']} |")
    from pathlib import Path
    Path(path).write_text("\n".join(lines) + "\n")


def write_plot(path, recs: Sequence[Mapping[str, Any]], top: int = 5) -> None:
    """``sizing.png``: predicted cost against wall time of every candidate,
    one colour per instance family, the best marked."""
    from matplotlib.figure import Figure   # no pyplot: the caller's backend is left alone
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    families = sorted({r["instance_type"].split(".")[0] for r in recs})
    for fam in families:
        sub = [r for r in recs if r["instance_type"].startswith(fam + ".")]
        ax.scatter([r["predicted_wall_h"] for r in sub], [r["predicted_cost_usd"] for r in sub],
                   s=18, alpha=0.7, label=fam)
    for i, r in enumerate(leading(recs, top)):
        ax.errorbar(r["predicted_wall_h"], r["predicted_cost_usd"], xerr=r["predicted_wall_h_err"] or 0,
                    yerr=r["predicted_cost_usd_err"] or 0, fmt="*" if i == 0 else "o", ms=12 if i == 0 else 6,
                    mfc="none", color="k")
        ax.annotate(f"{i + 1}. {r['n_instances']} x {r['instance_type']} ({r['workers']}x{r['threads']}, "
                    f"{r['tile_size_arcsec']:g}\")", (r["predicted_wall_h"], r["predicted_cost_usd"]),
                    fontsize=7, xytext=(5, 3 + 8 * i), textcoords="offset points")
    walls = [r["predicted_wall_h"] for r in recs if r["predicted_wall_h"] > 0]
    if walls and max(walls) > 10 * min(walls):
        ax.set_xscale("log")
    ax.set_xlabel("predicted wall time of the whole field (h)")
    ax.set_ylabel("predicted cost ($)")
    ax.set_title("dja-sepp size: cost against wall time (star: recommended)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
