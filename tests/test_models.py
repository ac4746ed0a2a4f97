"""Model definitions: transforms, shipped model files, validation errors."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from dja_sepp.bands import pivot_wavelength
from dja_sepp.models import load_model
from dja_sepp.models.definition import evaluate
from dja_sepp.models.transforms import Range
from dja_sepp.settings import ConfigError

SHIPPED = ("sersic_rg4", "B+D", "B+D_corr", "B+D_free")

# a detection of a typical faint galaxy on the 0.04" grid
CONTEXT = dict(x=50.3, y=61.7, flux=120.0, radius=4.0, flux_radius=3.1, a=3.5, b=2.1,
               theta=0.4, axratio=0.6, pixscale=0.04)


@pytest.mark.parametrize("rng", [Range("linear", -2.0, 5.0), Range("exponential", 1e-3, 40.0),
                                 Range("free")])
def test_transform_round_trip_and_derivative(rng):
    values = [-1.5, 0.0, 3.3, 4.99] if rng.kind == "linear" else [2e-3, 0.5, 7.0, 39.0]
    for v in values:
        z = rng.to_unbounded(v)
        back, deriv = rng.to_value(z)
        assert back == pytest.approx(v, rel=1e-9, abs=1e-12)
        h = 1e-6
        numeric = (rng.to_value(z + h)[0] - rng.to_value(z - h)[0]) / (2 * h)
        assert deriv == pytest.approx(numeric, rel=1e-5)


def test_bounded_transforms_never_leave_their_range():
    for rng in (Range("linear", 0.3, 8.4), Range("exponential", 1e-4, 6.0)):
        for z in (-50.0, -3.0, 0.0, 3.0, 50.0):
            v = rng.to_value(z)[0]
            assert rng.lo <= v <= rng.hi
        assert rng.at_bound(rng.to_value(40.0)[0]) and rng.at_bound(rng.to_value(-40.0)[0])
        assert not rng.at_bound(rng.to_value(0.0)[0])
    # a start outside the range is pulled just inside instead of saturating
    assert np.isfinite(Range("linear", 0, 1).to_unbounded(7.0))


@pytest.mark.parametrize("bad", [("linear", 2.0, 1.0), ("exponential", 0.0, 1.0), ("cubic", 0, 1)])
def test_invalid_ranges_are_rejected(bad):
    with pytest.raises(ValueError):
        Range(*bad)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_loads_and_starts_inside_its_ranges(name):
    model = load_model(name)
    assert model.name == name and {"x", "y"} <= set(model.parameter_names)
    values, ranges = model.initial(CONTEXT)
    assert len(values) == len(model.parameter_names)
    for v, r, p in zip(values, ranges, model.parameter_names):
        assert np.isfinite(v), p
        if r.kind != "free":
            assert r.lo <= v <= r.hi, p
    # every prior evaluates to a finite value at the start
    named = dict(zip(model.parameter_names, values))
    for prior in [p.prior for p in model.parameters if p.prior] + list(model.priors):
        assert np.isfinite(evaluate(prior.transform, named, "prior"))
        assert evaluate(prior.sigma, CONTEXT, "sigma") > 0


def test_sersic_rg4_matches_the_predecessor():
    model = load_model("sersic_rg4")
    values, ranges = model.initial(CONTEXT)
    p = dict(zip(model.parameter_names, zip(values, ranges)))
    assert p["n"][1].lo == 0.3 and p["n"][1].hi == 8.4 and p["n"][0] == 2.0
    assert p["re"][1].kind == "exponential" and p["re"][1].hi == pytest.approx(1.5 * CONTEXT["radius"])
    assert p["x"][1].lo == pytest.approx(CONTEXT["x"] - CONTEXT["radius"])
    # the rg4 prior is centred on 0.027" whatever the pixel scale
    prior = model.parameters[model.parameter_names.index("re")].prior
    assert evaluate(prior.mean, CONTEXT, "m") == pytest.approx(0.027 / 0.04)


@pytest.mark.parametrize("name", ["B+D", "B+D_corr", "B+D_free"])
def test_bulge_to_total_prior_depends_on_wavelength(name):
    model = load_model(name)
    assert [c.profile for c in model.components][1] == "exponential"
    (bt,) = model.band_priors
    blue = evaluate(bt.mean, {"L": pivot_wavelength("F115W")}, "bt")
    red = evaluate(bt.mean, {"L": pivot_wavelength("F444W")}, "bt")
    # bulges are redder: the prior expects a larger B/T at longer wavelength
    assert red > blue
    assert evaluate(bt.sigma, {"L": pivot_wavelength("F115W")}, "bt") > 0


def _write(tmp_path, data):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_model_errors_name_the_file_and_problem(tmp_path):
    good = yaml.safe_load(open(load_model("sersic_rg4").path))
    bad = {**good, "components": {"galaxy": {**good["components"]["galaxy"], "profile": "moffat"}}}
    with pytest.raises(ConfigError, match=r"bad.yaml.*profile must be one of"):
        load_model(_write(tmp_path, bad))
    params = dict(good["parameters"])
    params.pop("x")
    with pytest.raises(ConfigError, match=r"bad.yaml.*x and y"):
        load_model(_write(tmp_path, {**good, "parameters": params}))
    params = {**good["parameters"], "n": {"init": 2.0, "range": {"type": "linear", "min": 1}}}
    with pytest.raises(ConfigError, match=r"bad.yaml.*range needs min and max"):
        load_model(_write(tmp_path, {**good, "parameters": params}))
    with pytest.raises(ConfigError, match="cannot evaluate"):
        evaluate("radius * unknown_name", CONTEXT, "init")
    with pytest.raises(ConfigError, match="unknown model"):
        load_model("no_such_model")
