"""What a run's tiles cost: core-s per source-band and an EC2 estimate.

:func:`run_usage` sums the ``resources`` the tile tasks recorded
(:mod:`.probe`) and prices them at the instance type of the configuration
(``cluster.ec2.worker_instance_type``, its ``worker_nthreads`` x
``workers_per_instance`` slots kept busy, ``sizing.market``); the driver prints
:func:`format_usage` at the end of every run and writes the dict to
``summary.json`` (``usage``).
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["run_usage", "format_usage"]


def run_usage(statuses: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any]) -> dict[str, Any]:
    """Core-s, source-bands and estimated EC2 cost of the tiles computed.

    Parameters
    ----------
    statuses : mapping
        tile id -> status of the tiles computed by this run.
    config : mapping
        The run configuration.

    Returns
    -------
    dict
        Empty when no tile recorded its resources; else ``core_s``,
        ``source_bands``, ``core_s_per_source_band`` and, when the price
        table has the instance type, ``instance_type``, ``slots``, ``market``,
        ``price_per_hour``, ``instance_hours``, ``cost_usd``, ``prices_date``,
        ``prices_checked``.
    """
    ok = [s for s in statuses.values() if s.get("state") == "ok" and s.get("resources")]
    if not ok:
        return {}
    core_s = float(sum(s["resources"].get("cpu_s", 0.0) for s in ok))
    source_bands = int(sum(int(s.get("n_sources", 0)) * int(s.get("n_bands", 0)) for s in ok))
    out: dict[str, Any] = {"tiles": len(ok), "core_s": round(core_s, 2), "source_bands": source_bands,
                           "core_s_per_source_band": round(core_s / source_bands, 4) if source_bands else None}
    from ..deploy.ec2 import DEFAULTS
    from .prices import load_prices
    ec2 = {**DEFAULTS, **(config["cluster"].get("ec2") or {})}
    sizing = config.get("sizing") or {}
    try:
        prices = load_prices(sizing.get("prices"))
    except (ValueError, OSError):  # a broken price table never fails a finished run
        return out
    inst = prices.instances.get(str(ec2["worker_instance_type"]))
    if inst is None:
        return out
    market = sizing.get("market", "on_demand")
    slots = max(1, int(ec2["worker_nthreads"]) * int(ec2.get("workers_per_instance") or 1))
    hours = core_s / 3600.0 / slots
    out.update(instance_type=inst.name, slots=slots, market=market, price_per_hour=inst.price(market),
               instance_hours=round(hours, 5), cost_usd=round(hours * inst.price(market), 4),
               prices_date=prices.date, prices_checked=prices.checked)
    return out


def format_usage(usage: Mapping[str, Any]) -> str:
    """One console line (empty when nothing was measured)."""
    if not usage:
        return ""
    per = usage.get("core_s_per_source_band")
    text = (f"cost: {per:.3f} core-s per source-band" if per is not None else "cost:") + \
        f" ({usage['core_s']:.0f} core-s of {usage['tiles']} tile task(s), {usage['source_bands']} source-bands)"
    if "cost_usd" in usage:
        note = "" if usage["prices_checked"] else ", unchecked prices"
        text += (f"; on {usage['instance_type']} ({usage['slots']} slots busy, ${usage['price_per_hour']:.3f}/h "
                 f"{usage['market'].replace('_', '-')}{note} of {usage['prices_date']}): "
                 f"{usage['instance_hours']:.3f} instance-h, ${usage['cost_usd']:.2f}")
    return text
