"""Model definitions as data: ``config/models/*.yaml`` -> :class:`ModelDefinition`.

A model is a set of components (point, sersic, exponential, devaucouleurs)
whose geometry is bound to named nonlinear parameters shared by all bands,
with one linear flux per component and band. Parameters have an initial
value and a range given as expressions of the detection measurements, and
optional Gaussian priors on a transformed value; band priors (e.g. on B/T)
may depend on the band's pivot wavelength ``L`` (micron).

Expressions are evaluated with numpy math functions and the names documented
in :func:`detection_context` only; anything else is a configuration error.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from ..settings import ConfigError, model_path
from .transforms import Range

__all__ = ["ModelDefinition", "Component", "Parameter", "Prior", "BandPrior", "load_model",
           "evaluate", "detection_context", "PROFILES"]

PROFILES = {"point": None, "sersic": None, "exponential": 1.0, "devaucouleurs": 4.0}
_GEOMETRY = ("re", "q", "angle", "n")
_MATH = {name: getattr(np, name) for name in ("log", "log10", "exp", "sqrt", "abs", "arctan2",
                                               "sin", "cos", "minimum", "maximum", "clip")}
_MATH.update(pi=math.pi)


@functools.lru_cache(maxsize=512)
def _compiled(expr: str):
    # parsing dominates the cost of an expression evaluated ~1e5 times per tile
    return compile(expr, "<model expression>", "eval")


def evaluate(expr: Any, names: Mapping[str, float], where: str) -> float:
    """Evaluate a number or expression with ``names`` and numpy math only."""
    if isinstance(expr, (int, float)):
        return float(expr)
    try:
        return float(eval(_compiled(str(expr)), {"__builtins__": {}, **_MATH}, dict(names)))  # noqa: S307
    except Exception as exc:
        raise ConfigError(f"{where}: cannot evaluate {expr!r} ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class Prior:
    """Gaussian prior on ``transform`` (an expression of parameter names)."""

    transform: str
    mean: Any
    sigma: Any


@dataclass(frozen=True)
class BandPrior:
    """Gaussian prior on a per-band quantity; only ``bt`` (bulge-to-total of
    ``component``) exists. ``mean``/``sigma`` may use ``L`` (micron)."""

    quantity: str
    component: str
    transform: str
    mean: Any
    sigma: Any


@dataclass(frozen=True)
class Parameter:
    """A nonlinear parameter shared by all bands."""

    name: str
    init: Any
    range: dict
    prior: Prior | None = None
    unit: str = ""

    def bounds(self, ctx: Mapping[str, float], where: str) -> Range:
        kind = self.range.get("type", "linear")
        if kind == "free":
            return Range("free")
        lo = evaluate(self.range["min"], ctx, f"{where}.range.min")
        hi = evaluate(self.range["max"], ctx, f"{where}.range.max")
        return Range(kind, lo, hi)


@dataclass(frozen=True)
class Component:
    """A profile whose geometry is bound to parameter names (or numbers)."""

    name: str
    profile: str
    geometry: dict  # "re"/"q"/"angle"/"n" -> parameter name, number, or "e1e2"

    @property
    def sersic_n(self) -> float | None:
        return PROFILES[self.profile]


@dataclass
class ModelDefinition:
    """A validated model file."""

    name: str
    description: str
    components: list[Component]
    parameters: list[Parameter]
    priors: list[Prior] = field(default_factory=list)
    band_priors: list[BandPrior] = field(default_factory=list)
    path: str = ""

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def uses_e1e2(self) -> bool:
        return any("e1e2" in (c.geometry.get("q"), c.geometry.get("angle")) for c in self.components)

    def initial(self, ctx: Mapping[str, float]) -> tuple[np.ndarray, list[Range]]:
        """Initial values and ranges of the parameters for one source."""
        values, ranges = [], []
        for p in self.parameters:
            where = f"{self.path}: parameter {p.name}"
            rng = p.bounds(ctx, where)
            v = evaluate(p.init, ctx, f"{where}.init")
            if rng.kind != "free":
                v = float(np.clip(v, rng.lo, rng.hi))
            values.append(v)
            ranges.append(rng)
        return np.array(values), ranges


def detection_context(row: Mapping[str, Any], pixscale: float) -> dict[str, float]:
    """Names usable in model expressions, from one detection row.

    ``x, y`` centroid (cutout pixels); ``flux`` isophotal flux; ``radius``
    half the isophotal semi-major axis, ``0.5 sqrt(NPIX A / (pi B))`` (the
    semi-major axis of the ellipse of the isophotal area). SE++'s
    ``o.get_radius()`` is smaller: ``ObjectInfo::getRadius`` returns half the
    second-moment semi-major axis (``A / 2`` here, 3-4x less on bright
    galaxies); with it B+D's ranges (r_b <= 1.1, r_d <= 3 radii) put 53 % of
    bright isolated bulge + disk fits at r_b or r_d max (benchmarks/bulge_disk.py).
    ``flux_radius``; ``a, b``;
    ``theta`` (radians, CCW from +x); ``axratio`` b/a; ``pixscale`` (arcsec of
    the detection pixels).
    """
    a = max(float(row["A_IMAGE"]), 0.3)
    b = max(float(row["B_IMAGE"]), 0.3)
    iso_a = math.sqrt(max(float(row["NPIX"]), 1.0) * a / (math.pi * b))
    return {"x": float(row["x"]), "y": float(row["y"]), "flux": float(row["FLUX_ISO"]),
            "radius": max(0.5 * iso_a, 0.5), "flux_radius": max(float(row["FLUX_RADIUS"]), 0.3)
            if np.isfinite(row["FLUX_RADIUS"]) else 1.0,
            "a": a, "b": b, "theta": math.radians(float(row["THETA_IMAGE"])),
            "axratio": min(b / a, 1.0), "pixscale": pixscale}


def load_model(name: str | Path) -> ModelDefinition:
    """Load and validate a model by name (``config/models``) or path.

    Raises
    ------
    ConfigError
        Naming the file and the problem.
    """
    path = model_path(name)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a model file is a mapping")
    return _parse(data, str(path))


def _parse(data: dict, where: str) -> ModelDefinition:
    for key in ("name", "components", "parameters"):
        if key not in data:
            raise ConfigError(f"{where}: missing '{key}'")
    params = []
    for pname, spec in data["parameters"].items():
        if not isinstance(spec, dict) or "init" not in spec:
            raise ConfigError(f"{where}: parameter {pname!r} needs an 'init'")
        rng = spec.get("range", {"type": "free"})
        if rng.get("type", "linear") not in ("linear", "exponential", "free"):
            raise ConfigError(f"{where}: parameter {pname!r}: range type must be linear, "
                              f"exponential or free")
        if rng.get("type", "linear") != "free" and not {"min", "max"} <= set(rng):
            raise ConfigError(f"{where}: parameter {pname!r}: range needs min and max")
        prior = spec.get("prior")
        params.append(Parameter(pname, spec["init"], rng, _prior(prior, where, pname, pname)
                                if prior else None, spec.get("unit", "")))
    names = {p.name for p in params}
    if not {"x", "y"} <= names:
        raise ConfigError(f"{where}: parameters x and y (the shared centre) are required")
    comps = []
    for cname, spec in data["components"].items():
        profile = spec.get("profile")
        if profile not in PROFILES:
            raise ConfigError(f"{where}: component {cname!r}: profile must be one of {sorted(PROFILES)}")
        geometry = {k: spec[k] for k in _GEOMETRY if k in spec}
        needed = () if profile == "point" else ("re", "q", "angle") + (("n",) if profile == "sersic" else ())
        for key in needed:
            ref = geometry.get(key)
            if ref is None:
                raise ConfigError(f"{where}: component {cname!r} needs '{key}'")
            if isinstance(ref, str) and ref != "e1e2" and ref not in names:
                raise ConfigError(f"{where}: component {cname!r}: {key} refers to unknown "
                                  f"parameter {ref!r}")
            if ref == "e1e2" and not {"e1", "e2"} <= names:
                raise ConfigError(f"{where}: component {cname!r}: e1e2 needs parameters e1 and e2")
        comps.append(Component(cname, profile, geometry))
    priors = [_prior(p, where, "priors", None) for p in data.get("priors", [])]
    band_priors = []
    for bp in data.get("band_priors", []):
        if bp.get("quantity") != "bt" or bp.get("component") not in {c.name for c in comps}:
            raise ConfigError(f"{where}: band prior needs quantity 'bt' and a known component")
        band_priors.append(BandPrior("bt", bp["component"], bp["transform"], bp["mean"], bp["sigma"]))
    model = ModelDefinition(data["name"], data.get("description", ""), comps, params, priors,
                            band_priors, where)
    _check_priors(model)
    return model


def _prior(spec, where, pname, value_name) -> Prior:
    if not isinstance(spec, dict) or not {"transform", "mean", "sigma"} <= set(spec):
        raise ConfigError(f"{where}: prior of {pname!r} needs transform, mean and sigma")
    transform = str(spec["transform"])
    if value_name is not None:  # ``value`` in a parameter's own prior is that parameter
        transform = re.sub(r"\bvalue\b", f"({value_name})", transform)
    return Prior(transform, spec["mean"], spec["sigma"])


def _check_priors(model: ModelDefinition) -> None:
    """Evaluate every prior at a typical source so errors surface at load time."""
    ctx = {"x": 10.0, "y": 10.0, "flux": 100.0, "radius": 3.0, "flux_radius": 3.0, "a": 3.0,
           "b": 2.0, "theta": 0.3, "axratio": 0.67, "pixscale": 0.04}
    values, _ = model.initial(ctx)
    names = dict(zip(model.parameter_names, values))
    for prior in [p.prior for p in model.parameters if p.prior] + model.priors:
        evaluate(prior.transform, names, f"{model.path}: prior {prior.transform!r}")
        evaluate(prior.mean, ctx, f"{model.path}: prior mean")
        if evaluate(prior.sigma, ctx, f"{model.path}: prior sigma") <= 0:
            raise ConfigError(f"{model.path}: prior sigma must be positive")
    for bp in model.band_priors:
        evaluate(bp.transform, {"bt": 0.3}, f"{model.path}: band prior")
        for L in (0.9, 4.4):
            if evaluate(bp.sigma, {"L": L}, f"{model.path}: band prior sigma") <= 0:
                raise ConfigError(f"{model.path}: band prior sigma must be positive at L={L}")
