"""Run configuration: YAML defaults shipped in ``dja_sepp/config`` merged with
the user's YAML file and keyword overrides.

Configuration is data: every default lives in ``config/defaults.yaml``; this
module only loads, merges, validates and hashes it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = ["ConfigError", "load_config", "default_config", "config_hash", "model_path",
           "config_dir", "init_config_dir", "dump_config"]


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


def config_dir() -> Path:
    """Folder of the shipped YAML files (defaults and models)."""
    return Path(str(resources.files("dja_sepp") / "config"))


def default_config() -> dict[str, Any]:
    """The shipped defaults as a fresh nested dict."""
    with open(config_dir() / "defaults.yaml") as fh:
        return yaml.safe_load(fh)


def load_config(source: str | Path | Mapping[str, Any] | None = None,
                **overrides: Any) -> dict[str, Any]:
    """Defaults, updated by ``source`` (YAML path or mapping), then overrides.

    Overrides use ``section__key`` names (``tiling__tile_size=60``) or nested
    dicts (``tiling={"tile_size": 60}``). Unknown sections or keys raise
    :class:`ConfigError` naming the file and the key, so typos never pass
    silently.
    """
    config = default_config()
    origin = "<dict>"
    if source is not None:
        if isinstance(source, Mapping):
            user = dict(source)
        else:
            origin = str(source)
            user = _read_yaml(Path(source))
        _merge(config, user, origin)
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if "__" in key:
            section, sub = key.split("__", 1)
            nested.setdefault(section, {})[sub] = value
        else:
            nested[key] = value
    _merge(config, nested, "<arguments>")
    _validate(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


# Sections whose keys are free-form (user data, not settings).
_OPEN_SECTIONS = {("psf", "files"), ("cluster", "ec2"), ("cluster", "slurm"),
                  ("cluster", "pbs"), ("cluster", "worker_env"),
                  ("debug", "sleep"), ("debug", "needs_resource"),
                  ("cluster", "escalate_resources")}


def _merge(base: dict, update: Mapping, origin: str, path: tuple = ()) -> None:
    for key, value in update.items():
        where = path + (key,)
        if key not in base and path not in _OPEN_SECTIONS and where[:2] not in _OPEN_SECTIONS:
            raise ConfigError(f"{origin}: unknown configuration key {'.'.join(where)!r}")
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) \
                and where not in _OPEN_SECTIONS:
            _merge(base[key], value, origin, where)
        else:
            base[key] = copy.deepcopy(value)


def _validate(config: dict[str, Any]) -> None:
    tiling = config["tiling"]
    for key in ("tile_size", "overlap"):
        if not isinstance(tiling[key], (int, float)) or tiling[key] < 0:
            raise ConfigError(f"tiling.{key} must be a non-negative number, got {tiling[key]!r}")
    if tiling["tile_size"] <= 0:
        raise ConfigError("tiling.tile_size must be positive")
    if int(tiling["align"]) < 1:
        raise ConfigError("tiling.align must be a positive integer")
    models = config["fit"]["models"]
    if isinstance(models, str):
        config["fit"]["models"] = [models]
    if not config["fit"]["models"]:
        raise ConfigError("fit.models must name at least one model")


def config_hash(config: Mapping[str, Any], keys: tuple[str, ...] = (
        "field", "tiling", "detection", "psf", "fit")) -> str:
    """Hash of the parts of the configuration that change a tile's result."""
    subset = {k: config.get(k) for k in keys}
    text = json.dumps(subset, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dump_config(config: Mapping[str, Any]) -> str:
    """YAML text of a configuration (``run.yaml``)."""
    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)


def init_config_dir(directory: str | Path) -> list[Path]:
    """Copy the shipped YAML files into ``directory`` for editing."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(config_dir().rglob("*.yaml")):
        dst = directory / src.relative_to(config_dir())
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


def model_path(name: str | Path) -> Path:
    """The YAML file of a model: a path, or a name in ``config/models``.

    Raises
    ------
    ConfigError
        Naming the model and the models that exist.
    """
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.exists():
            raise ConfigError(f"{candidate}: model file not found")
        return candidate
    path = config_dir() / "models" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (config_dir() / "models").glob("*.yaml"))
        raise ConfigError(f"unknown model {str(name)!r}; shipped models: {known}")
    return path
