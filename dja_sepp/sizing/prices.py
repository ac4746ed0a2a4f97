"""The EC2 price table (``config/ec2_prices.yaml``): data the user edits.

:func:`load_prices` reads and checks it: every instance type needs ``vcpu``,
``cores``, ``memory_gib``, ``on_demand`` and ``spot`` (positive numbers;
``speed`` is optional), and the table its ``region`` and ``date``. A wrong
entry stops with :class:`~dja_sepp.settings.ConfigError` naming the file and
the key, as a wrong run configuration does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["InstanceType", "PriceTable", "load_prices", "default_prices_path"]

_REQUIRED = ("vcpu", "cores", "memory_gib", "on_demand", "spot")


@dataclass(frozen=True)
class InstanceType:
    """One row of the price table.

    Attributes
    ----------
    name : str
        ``c7i.4xlarge``.
    vcpu, cores : int
        AWS vCPUs and physical cores.
    memory_gib : float
    on_demand, spot : float
        $ per instance-hour.
    speed : float
        Core speed relative to the machine the sizing measured (1.0 unless set).
    """

    name: str
    vcpu: int
    cores: int
    memory_gib: float
    on_demand: float
    spot: float
    speed: float = 1.0

    @property
    def family(self) -> str:
        """``c7i`` of ``c7i.4xlarge``."""
        return self.name.split(".")[0]

    def price(self, market: str) -> float:
        """$ per hour on ``market`` (``on_demand`` or ``spot``)."""
        return self.spot if market == "spot" else self.on_demand


@dataclass
class PriceTable:
    """The whole table: instance types and the settings around them."""

    path: str
    region: str
    date: str
    currency: str = "USD"
    checked: bool = False
    startup_minutes: float = 5.0
    smt_slowdown: float = 1.6
    scheduler: dict = dc_field(default_factory=dict)
    instances: dict[str, InstanceType] = dc_field(default_factory=dict)

    def scheduler_price(self, market: str) -> float:
        """$ per hour of the scheduler instance (0 when the table has none)."""
        return float(self.scheduler.get("spot" if market == "spot" else "on_demand", 0.0) or 0.0)

    def select(self, names) -> list[InstanceType]:
        """The rows named (all when ``names`` is empty); unknown names raise."""
        if not names:
            return list(self.instances.values())
        unknown = [n for n in names if n not in self.instances]
        if unknown:
            from ..settings import ConfigError
            raise ConfigError(f"{self.path}: no price for instance type(s) {unknown}; add them to "
                              f"the table or choose among {sorted(self.instances)[:8]}...")
        return [self.instances[n] for n in names]

    def describe(self) -> dict[str, Any]:
        """Where the prices come from (for ``sizing.json``)."""
        return {"file": self.path, "region": self.region, "date": self.date,
                "currency": self.currency, "checked": self.checked}


def default_prices_path() -> Path:
    """The shipped table."""
    from ..settings import config_dir
    return config_dir() / "ec2_prices.yaml"


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read and check a price table (the shipped one when ``path`` is None).

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or an entry lacks a positive number.
    """
    import yaml
    from ..settings import ConfigError
    path = Path(path).expanduser() if path else default_prices_path()
    if not path.exists():
        raise ConfigError(f"{path}: price table not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("instances"), Mapping) \
            or not data["instances"]:
        raise ConfigError(f"{path}: needs an 'instances:' mapping of instance types")
    for key in ("region", "date"):
        if not data.get(key):
            raise ConfigError(f"{path}: {key} is missing (say where and when the prices were read)")
    rows = {}
    for name, row in data["instances"].items():
        if not isinstance(row, Mapping):
            raise ConfigError(f"{path}: instances.{name} must be a mapping of {', '.join(_REQUIRED)}")
        values = {k: _positive(path, f"instances.{name}.{k}", row.get(k)) for k in _REQUIRED}
        speed = _positive(path, f"instances.{name}.speed", row.get("speed", 1.0))
        unknown = set(row) - set(_REQUIRED) - {"speed"}
        if unknown:
            raise ConfigError(f"{path}: instances.{name}: unknown key(s) {sorted(unknown)}")
        rows[str(name)] = InstanceType(str(name), int(values["vcpu"]), int(values["cores"]),
                                       values["memory_gib"], values["on_demand"], values["spot"], speed)
    return PriceTable(path=str(path), region=str(data["region"]), date=str(data["date"]),
                      currency=str(data.get("currency", "USD")), checked=bool(data.get("checked", False)),
                      startup_minutes=float(data.get("startup_minutes", 5.0)),
                      smt_slowdown=_positive(path, "smt_slowdown", data.get("smt_slowdown", 1.6)),
                      scheduler=dict(data.get("scheduler") or {}), instances=rows)


def _positive(path: Path, key: str, value: Any) -> float:
    from ..settings import ConfigError
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{path}: {key} must be a positive number, got {value!r}")
    return number
