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

from .schema import SchemaError, check_types

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
    origins: dict[str, str] = {}
    if source is not None:
        if isinstance(source, Mapping):
            user = dict(source)
            _merge(config, _without_run(user), "<dict>", origins=origins)
        else:
            user = _read_yaml(Path(source))
            lines = _key_lines(Path(source))
            _merge(config, _without_run(user), str(source), origins=origins, lines=lines)
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if "__" in key:
            section, sub = key.split("__", 1)
            nested.setdefault(section, {})[sub] = value
        else:
            nested[key] = value
    _merge(config, nested, "<arguments>", origins=origins)
    try:
        check_types(config, default_config(), lambda key: _where(key, origins))
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None
    _validate(config)
    return config


def _without_run(user: dict[str, Any]) -> dict[str, Any]:
    """The settings of a file, without the ``run:`` record that ``run.yaml``
    carries (images, PSFs, grid of the run that wrote it): ``run.yaml`` is
    fed back with ``--config`` as it is."""
    return {k: v for k, v in user.items() if k != "run"}


def _where(key: str, origins: Mapping[str, str]) -> str:
    """``"file:line: "`` of the setting ``key`` (or of its section)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        origin = origins.get(".".join(parts[:n]))
        if origin:
            return f"{origin}: "
    return "defaults.yaml: "


def _key_lines(path: Path) -> dict[str, int]:
    """Dotted key -> line (1-based) of every mapping key in a YAML file."""
    out: dict[str, int] = {}

    def walk(node, prefix):
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            dotted = f"{prefix}{key.value}"
            out[dotted] = key.start_mark.line + 1
            walk(value, dotted + ".")
    try:
        walk(yaml.compose(path.read_text()), "")
    except yaml.YAMLError:
        pass  # _read_yaml has reported it
    return out


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


def _merge(base: dict, update: Mapping, origin: str, path: tuple = (),
           origins: dict | None = None, lines: Mapping[str, int] | None = None) -> None:
    """Update ``base`` with ``update``, recording in ``origins`` where each key
    was set (``file:line``) so that type errors can point at it."""
    origins = origins if origins is not None else {}
    for key, value in update.items():
        where = path + (key,)
        dotted = ".".join(map(str, where))
        line = (lines or {}).get(dotted)
        origins[dotted] = f"{origin}:{line}" if line else origin
        if key not in base and path not in _OPEN_SECTIONS and where[:2] not in _OPEN_SECTIONS:
            raise ConfigError(f"{origins[dotted]}: unknown configuration key {dotted!r}")
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) \
                and where not in _OPEN_SECTIONS:
            _merge(base[key], value, origin, where, origins, lines)
        else:
            base[key] = copy.deepcopy(value)


def _validate(config: dict[str, Any]) -> None:
    """Checks across keys (types and ranges are :mod:`.schema`'s)."""
    kind = config["cluster"]["kind"]
    if kind == "address" and not config["cluster"]["address"]:
        raise ConfigError("cluster.kind is address but cluster.address (tcp://host:8786) is not set")


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
