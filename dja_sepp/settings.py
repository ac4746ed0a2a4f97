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
           "config_dir", "init_config_dir", "dump_config", "use_model_dirs", "model_names"]

#: Folders searched for ``{name}.yaml`` before the shipped models: set from
#: the configuration (``fit.model_dirs``) by :func:`load_config` in the
#: driver and by each task on its worker (a process of its own).
_MODEL_DIRS: list[Path] = []


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
    if source is not None and not isinstance(source, Mapping):
        _user_model_dirs(config, Path(source))
    try:
        check_types(config, default_config(), lambda key: _where(key, origins))
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None
    _validate(config)
    use_model_dirs(config["fit"]["model_dirs"])
    return config


def _user_model_dirs(config: dict[str, Any], source: Path) -> None:
    """``fit.model_dirs`` made absolute (relative entries are relative to the
    configuration file), with the ``models/`` folder beside the file first
    when it exists: ``config init DIR`` writes one, and a model added there
    is found by name with ``--config DIR/defaults.yaml``."""
    base = source.expanduser().resolve().parent
    dirs = [str((base / d).resolve()) for d in config["fit"].get("model_dirs") or []]
    beside = base / "models"
    if beside.is_dir() and str(beside) not in dirs:
        dirs.insert(0, str(beside))
    config["fit"]["model_dirs"] = dirs


def use_model_dirs(dirs) -> None:
    """Search ``dirs`` (then the shipped models) for models given by name."""
    _MODEL_DIRS[:] = [Path(d) for d in dirs or []]


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
_OPEN_SECTIONS = {("psf", "files"), ("field", "storage_options"), ("cluster", "worker_env"),
                  ("debug", "sleep"), ("debug", "needs_resource"),
                  ("cluster", "escalate_resources"), ("report", "field_limits")}


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
    fit = config["fit"]
    if int(fit["threads"]) > 1 and int(fit["processes"]) > 1:
        raise ConfigError(f"fit.threads ({fit['threads']}) and fit.processes ({fit['processes']}) are both > 1: "
                          "a tile's groups are fitted on threads or on processes; set one of them to 1")


def config_hash(config: Mapping[str, Any], keys: tuple[str, ...] = (
        "field", "tiling", "detection", "psf", "fit")) -> str:
    """Hash of the parts of the configuration that change a tile's result."""
    subset = copy.deepcopy({k: config.get(k) for k in keys})
    # where model files live is not what they say (their contents are hashed
    # with the inputs): a moved configuration folder reuses its tiles
    (subset.get("fit") or {}).pop("model_dirs", None)
    for key in ("threads", "processes"):  # the catalog is the same for any number of them
        (subset.get("fit") or {}).pop(key, None)
    text = json.dumps(subset, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dump_config(config: Mapping[str, Any]) -> str:
    """YAML text of a configuration (``run.yaml``)."""
    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)


def init_config_dir(directory: str | Path, force: bool = False) -> list[Path]:
    """Copy the shipped YAML files into ``directory`` for editing.

    Parameters
    ----------
    directory : str or Path
        Folder to write ``defaults.yaml`` and ``models/*.yaml`` into.
    force : bool
        Overwrite files that exist; without it an existing file (perhaps
        edited) stops the copy before anything is written.

    Raises
    ------
    ConfigError
        Naming the files that exist, when ``force`` is false.
    """
    directory = Path(directory)
    pairs = [(src, directory / src.relative_to(config_dir()))
             for src in sorted(config_dir().rglob("*.yaml"))]
    existing = [str(dst) for _, dst in pairs if dst.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists ({len(existing)} file(s) would be overwritten); "
                          f"use --force to overwrite, or another folder")
    written = []
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


def model_names() -> list[str]:
    """Names of the models found by name: the configured folders' and the shipped ones."""
    folders = [*_MODEL_DIRS, config_dir() / "models"]
    return sorted({p.stem for d in folders for p in Path(d).glob("*.yaml")})


def model_path(name: str | Path) -> Path:
    """The YAML file of a model: a path, or a name found in the folders of
    ``fit.model_dirs`` (a configuration file's ``models/`` folder first),
    then in the shipped ``config/models``.

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
    for folder in [*_MODEL_DIRS, config_dir() / "models"]:
        path = Path(folder) / f"{name}.yaml"
        if path.exists():
            return path
    where = f" (searched {', '.join(map(str, _MODEL_DIRS))} and the shipped models)" \
        if _MODEL_DIRS else ""
    raise ConfigError(f"unknown model {str(name)!r}{where}; known models: {model_names()}")
