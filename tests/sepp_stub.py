"""A stand-in for SE++'s ``sourcextractor.config`` Python API that records
what a generated configuration declares (tests without the binary).

Only the names our generated configurations use exist here; each call is
recorded in :data:`STATE`, so a test can evaluate every parameter's initial
value, range and prior for a fake detection ``o`` and compare them with the
YAML model's own evaluation.
"""
from __future__ import annotations

import sys
import types
from enum import Enum

STATE: dict = {}


def reset() -> None:
    STATE.clear()
    STATE.update(models=[], priors=[], outputs={}, images=[], settings={}, frames=[])


class RangeType(Enum):
    LINEAR = 1
    EXPONENTIAL = 2


class Range:
    def __init__(self, limits, type):
        self.limits = limits if callable(limits) else (lambda v, o, _l=limits: _l)
        self.type = type


class FreeParameter:
    def __init__(self, init_value, range=None):
        self.init = init_value if callable(init_value) else (lambda o, _v=init_value: _v)
        self.range = range

    def value(self, o):
        return self.init(o)


class ConstantParameter:
    def __init__(self, value):
        self.constant = value

    def value(self, o):
        return self.constant


class DependentParameter:
    def __init__(self, func, *params):
        self.func, self.params = func, list(params)

    def value(self, o):
        return self.func(*[p.value(o) for p in self.params])


class _Model:
    def __init__(self, *params):
        self.params = params


class SersicModel(_Model):
    pass


class ExponentialModel(_Model):
    pass


class DeVaucouleursModel(_Model):
    pass


class PointSourceModel(_Model):
    pass


class MeasurementGroup:
    def __init__(self, image):
        self.image = image


def load_fits_image(image, psf=None, weight=None, **kwargs):
    info = {"image": image, "psf": psf, "weight": weight, **kwargs}
    STATE["images"].append(info)
    return info


def add_model(group, model):
    STATE["models"].append((group.image["image"], model))


def add_prior(param, value, sigma):
    STATE["priors"].append((param, value, sigma))


def add_output_column(name, param):
    STATE["outputs"][name] = param


def _setter(key):
    return lambda value: STATE["settings"].__setitem__(key, value)


def install() -> None:
    """Make ``from sourcextractor.config import *`` import this stub."""
    pkg = types.ModuleType("sourcextractor")
    cfg = types.ModuleType("sourcextractor.config")
    names = ["RangeType", "Range", "FreeParameter", "ConstantParameter", "DependentParameter",
             "SersicModel", "ExponentialModel", "DeVaucouleursModel", "PointSourceModel",
             "MeasurementGroup", "load_fits_image", "add_model", "add_prior", "add_output_column"]
    for name in names:
        setattr(cfg, name, globals()[name])
    for key in ("set_engine", "set_max_iterations", "use_iterative_fitting", "set_meta_iterations",
                "set_deblend_factor", "set_meta_iteration_stop"):
        setattr(cfg, key, _setter(key))
    cfg.__all__ = names + ["set_engine", "set_max_iterations", "use_iterative_fitting",
                           "set_meta_iterations", "set_deblend_factor", "set_meta_iteration_stop"]
    mc = types.ModuleType("sourcextractor.config.measurement_config")
    mc.global_measurement_config = types.SimpleNamespace(
        add_measurement_image=lambda image: STATE["frames"].append(image))
    cfg.measurement_config = mc
    pkg.config = cfg
    sys.modules["sourcextractor"] = pkg
    sys.modules["sourcextractor.config"] = cfg
    sys.modules["sourcextractor.config.measurement_config"] = mc


def run_config(text: str) -> dict:
    """Execute a generated configuration against the stub; returns its globals."""
    install()
    reset()
    scope: dict = {"__name__": "sepp_config"}
    exec(compile(text, "<sepp config>", "exec"), scope)  # noqa: S102 - our own generated text
    return scope
