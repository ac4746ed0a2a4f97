"""Types of the configuration values, checked before anything runs.

The defaults stay in ``config/defaults.yaml`` (the one place they live): the
type of most keys is the type of their default there. This module only adds
what a default cannot say: keys whose default is ``null``, closed sets of
choices and ranges. :func:`check_types` walks a merged configuration and
raises :class:`SchemaError` naming the first wrong key, so a value such as
``detection.thresh: high`` stops the run before any file is touched, instead
of failing inside every tile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["SchemaError", "check_types", "SPECS"]


class SchemaError(ValueError):
    """A configuration value has the wrong type or range.

    Attributes
    ----------
    key : str
        Dotted key (``detection.thresh``).
    """

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Spec:
    """What a key accepts.

    Attributes
    ----------
    kind : str
        ``int``, ``number``, ``bool``, ``str``, ``list``, ``map`` or ``any``.
    nullable : bool
        ``null`` accepted.
    choices : tuple
        Closed set of accepted values (empty: any of ``kind``).
    low : float or None
        Smallest accepted value (numbers) or length (lists).
    positive : bool
        Strictly greater than ``low``.
    items : str or None
        Kind of list items / mapping values.
    """

    kind: str
    nullable: bool = False
    choices: tuple = ()
    low: float | None = None
    positive: bool = False
    items: str | None = None


def _n(low=None, positive=False, nullable=False) -> Spec:
    return Spec("number", nullable=nullable, low=low, positive=positive)


def _i(low=None, nullable=False) -> Spec:
    return Spec("int", nullable=nullable, low=low)


# Keys the defaults cannot type (null defaults, choices, ranges). Everything
# else takes the type of its default in defaults.yaml.
SPECS: dict[str, Spec] = {
    "field.name": Spec("str", nullable=True),
    "field.bands": Spec("list", nullable=True, items="str"),
    "field.cache_dir": Spec("str", nullable=True),
    "field.storage_options": Spec("map"),
    "tiling.tile_size": _n(0, positive=True),
    "tiling.overlap": _n(0),
    "tiling.align": _i(1),
    "detection.thresh": _n(0, positive=True),
    "detection.minarea": _i(1),
    "detection.deblend_nthresh": _i(1),
    "detection.deblend_cont": _n(0),
    "detection.filter_type": Spec("str", choices=("conv", "matched")),
    "psf.files": Spec("map", items="str"),
    "psf.method": Spec("str", choices=("builtin", "psfex", "files")),
    "psf.reference_band": Spec("str"),
    "psf.stars.min_stars": _i(1),
    "psf.builder.size_arcsec": _n(0, positive=True, nullable=True),
    "psf.builder.wing_arcsec": _n(0, positive=True, nullable=True),
    "psf.psfex.fwhm_range": Spec("list", items="number"),
    "psf.energy.local_background": Spec("any", choices=(True, False, "median")),
    "psf.energy.background": Spec("list", items="number"),
    "psf.energy.match_from": _n(0, nullable=True),
    "fit.engine": Spec("str", choices=("builtin", "sourcextractor++")),
    "fit.model_engines": Spec("map", items="str"),
    "fit.sepp.engine": Spec("str", choices=("levmar", "gsl")),
    "fit.sepp.flux_range": Spec("list", low=2, items="number"),
    "fit.sepp.bt_range": Spec("list", low=2, items="number"),
    "fit.sepp.threads": _i(1),
    "fit.sepp.stall_timeout": _n(0),
    "fit.sepp.scratch": Spec("str", nullable=True),
    "fit.models": Spec("list", low=1, items="str"),
    "fit.model_dirs": Spec("list", items="str"),
    "fit.passes": _i(1),
    "fit.threads": _i(1),
    "fit.processes": _i(1),
    "fit.max_iterations": _i(1),
    "fit.bd_restart": _n(0),
    "fit.subtract_below": _n(0),
    "fit.residual_tolerance": _n(0),
    "fit.residual_point_tolerance": _n(0),
    "fit.residual_min_separation": _n(0),
    "fit.residual_min_snr": _n(0),
    "fit.residual_band_snr": _n(),
    "merge.match_radius": _n(0),
    "report.match_radius": _n(0, positive=True),
    "report.field_limits": Spec("map", items="number"),
    "report.mag_limit": _n(nullable=True),
    "report.snr_min": _n(0),
    "report.artefact_flags": Spec("list", items="str"),
    "report.compare_mag_max": _n(),
    "report.gallery": _i(0),
    "report.cutout_size": _n(0, positive=True),
    "cluster.kind": Spec("str", choices=("local", "address", "ec2", "slurm", "pbs")),
    "cluster.address": Spec("str", nullable=True),
    "cluster.n_workers": _i(1, nullable=True),
    "cluster.threads_per_worker": _i(1),
    "cluster.memory_limit": Spec("any"),
    "cluster.tile_timeout": _n(0, nullable=True),
    "cluster.retries": _i(0),
    "cluster.escalate_resources": Spec("map", items="number"),
    "cluster.worker_env": Spec("map", items="str"),
    "sizing.sample": _i(1),
    "sizing.tile_sizes": Spec("list", items="number"),
    "sizing.workers": Spec("list", items="int"),
    "sizing.threads": Spec("list", low=1, items="int"),
    "sizing.instance_types": Spec("list", items="str"),
    "sizing.prices": Spec("str", nullable=True),
    "sizing.market": Spec("str", choices=("on_demand", "spot")),
    "sizing.target_hours": _n(0, positive=True, nullable=True),
    "sizing.max_instances": _i(1),
    "sizing.memory_fraction": _n(0, positive=True),
    "sizing.recommendations": _i(1),
    "debug.sleep": Spec("map", items="number"),
    "debug.needs_resource": Spec("map", items="str"),
}

_OPTIONAL_STR = Spec("str", nullable=True)
# cluster sections: strings that may be null, and the counts
SPECS.update({f"cluster.ec2.{key}": _OPTIONAL_STR for key in (
    "region", "ami", "docker_image", "vpc", "subnet_id", "key_name", "iam_instance_profile",
    "allowed_cidr", "security_group", "endpoint_url")})
SPECS.update({"cluster.ec2.worker_nthreads": _i(1), "cluster.ec2.workers_per_instance": _i(1),
              "cluster.ec2.filesystem_size": _i(1), "cluster.ec2.minimum": _i(0),
              "cluster.ec2.maximum": _i(1), "cluster.ec2.startup_timeout": _n(0, positive=True)})
for _kind in ("slurm", "pbs"):   # the same settings for both batch systems
    SPECS.update({f"cluster.{_kind}.{key}": _OPTIONAL_STR for key in (
        "queue", "account", "interface", "local_directory", "log_directory", "python", "scheduler_host")})
    SPECS.update({f"cluster.{_kind}.cores": _i(1), f"cluster.{_kind}.minimum_jobs": _i(0),
                  f"cluster.{_kind}.maximum_jobs": _i(1),
                  f"cluster.{_kind}.job_extra_directives": Spec("list", items="str")})

_KIND_OF = {bool: "bool", int: "int", float: "number", str: "str", list: "list", dict: "map"}


def check_types(config: dict[str, Any], defaults: Mapping[str, Any],
                where: Callable[[str], str] = lambda key: "") -> None:
    """Check (and normalise in place) every value of ``config``.

    Parameters
    ----------
    config : dict
        Merged configuration (defaults updated by the user's values).
    defaults : mapping
        The shipped defaults: the type of a key without a :data:`SPECS`
        entry is the type of its default.
    where : callable
        Dotted key -> ``"file:line: "`` prefix for messages.

    Raises
    ------
    SchemaError
        Naming the key, where it was set, what it must be and what it is.
    """
    _walk(config, defaults, (), where)


def _walk(config: dict, defaults: Mapping, path: tuple, where) -> None:
    for key, value in list(config.items()):
        dotted = ".".join(path + (key,))
        spec = SPECS.get(dotted)
        default = defaults.get(key) if isinstance(defaults, Mapping) else None
        if spec is None and isinstance(default, dict):
            if not isinstance(value, dict):
                raise SchemaError(dotted, f"{where(dotted)}{dotted} must be a section (a mapping of "
                                          f"settings), got {value!r}")
            _walk(value, default, path + (key,), where)
            continue
        spec = spec or _inferred(default)
        if spec is not None:
            config[key] = _check(dotted, value, spec, where)


def _inferred(default: Any) -> Spec | None:
    if default is None:
        return None  # a null default without a spec: free (documented as such)
    return Spec(_KIND_OF.get(type(default), "any"))


def _check(key: str, value: Any, spec: Spec, where) -> Any:
    if value is None:
        if spec.nullable:
            return None
        _fail(key, value, spec, where)
    if spec.kind == "str" and spec.choices and value not in spec.choices:
        raise SchemaError(key, f"{where(key)}{key} must be one of {', '.join(map(str, spec.choices))}; "
                               f"got {value!r}")
    if spec.kind == "any":
        if spec.choices and value not in spec.choices:
            raise SchemaError(key, f"{where(key)}{key} must be one of "
                                   f"{', '.join(map(str, spec.choices))}; got {value!r}")
        return value
    if spec.kind == "list" and isinstance(value, str) and spec.items == "str":
        value = [value]  # a single model / band name
    checked = _coerce(value, spec.kind)
    if checked is _BAD:
        _fail(key, value, spec, where)
    if spec.kind in ("list", "map") and spec.items:
        items = checked.items() if spec.kind == "map" else enumerate(checked)
        for sub, item in list(items):
            got = _coerce(item, spec.items)
            if got is _BAD:
                raise SchemaError(key, f"{where(key)}{key}[{sub!r}] must be {_WORDS[spec.items]}, "
                                       f"got {item!r}")
            checked[sub] = got
    _check_range(key, checked, spec, where)
    return checked


_BAD = object()
_WORDS = {"int": "an integer", "number": "a finite number", "bool": "true or false",
          "str": "a string", "list": "a list", "map": "a mapping", "any": "a value"}


def _coerce(value: Any, kind: str) -> Any:
    """``value`` as ``kind``, or :data:`_BAD`. Numbers written ``1e-4`` (which
    YAML reads as strings) are accepted; bools are never numbers."""
    if kind == "bool":
        return value if isinstance(value, bool) else _BAD
    if kind in ("int", "number") and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return _BAD
        if isinstance(value, (int, float)) and math.isfinite(value):
            if kind == "int":
                return int(value) if float(value).is_integer() else _BAD
            return value
        return _BAD
    if kind == "str":
        return value if isinstance(value, str) else _BAD
    if kind == "list":
        return list(value) if isinstance(value, (list, tuple)) else _BAD
    if kind == "map":
        return dict(value) if isinstance(value, Mapping) else _BAD
    return value


def _check_range(key: str, value: Any, spec: Spec, where) -> None:
    if spec.low is None:
        return
    size = len(value) if spec.kind == "list" else value
    if size < spec.low or (spec.positive and size == spec.low):
        if spec.kind == "list":
            what = f"at least {spec.low:g} item(s)"
        elif spec.low == 0:
            what = "positive" if spec.positive else "non-negative"
        else:
            what = f"{'more than' if spec.positive else 'at least'} {spec.low:g}"
        raise SchemaError(key, f"{where(key)}{key} must be {what}, got {value!r}")


def _fail(key: str, value: Any, spec: Spec, where) -> None:
    want = _WORDS[spec.kind] + (" or null" if spec.nullable else "")
    raise SchemaError(key, f"{where(key)}{key} must be {want}, got {value!r} "
                           f"({type(value).__name__})")
