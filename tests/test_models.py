"""Model definitions: transforms, shipped model files, validation errors."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from astropy.wcs import WCS

from dja_sepp.bands import pivot_wavelength
from dja_sepp.fit.base import BandCutout
from dja_sepp.fit.catalog import empty_results, finalize
from dja_sepp.fit.flags import FitFlag
from dja_sepp.models import load_model
from dja_sepp.models.definition import evaluate
from dja_sepp.models.transforms import Range
from dja_sepp.settings import ConfigError

SHIPPED = ("sersic_rg4", "sersic", "B+D", "B+D_corr", "B+D_free", "B+D_wide")

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


def test_model_listing_names_the_wide_models():
    # an unknown name lists what is shipped: the wide variants are there
    with pytest.raises(ConfigError) as err:
        load_model("no_such_model")
    assert "'sersic'" in str(err.value) and "'B+D_wide'" in str(err.value)


@pytest.mark.parametrize("name", ["sersic", "B+D_wide"])
def test_wide_models_have_no_priors_and_wide_bounds(name):
    model = load_model(name)
    assert not model.priors and not model.band_priors
    assert all(p.prior is None for p in model.parameters)
    assert model.parameter_names[:2] == ["x", "y"]
    values, ranges = model.initial(CONTEXT)
    p = dict(zip(model.parameter_names, zip(values, ranges)))
    for radius in [k for k in ("re", "r_b", "r_d") if k in p]:
        # r_e may reach several detection radii (sersic_rg4 stops at 1.5)
        assert p[radius][1].hi >= 10 * CONTEXT["radius"], radius
        assert p[radius][1].lo <= 0.01 * CONTEXT["radius"], radius
    n = p["n" if "n" in p else "n_b"][1]
    assert n.lo <= 0.3 and n.hi >= 8.0


def test_wide_bulge_starts_inside_its_disk():
    values, _ = load_model("B+D_wide").initial(CONTEXT)
    p = dict(zip(load_model("B+D_wide").parameter_names, values))
    assert p["r_b"] < p["r_d"] / 3


def _finalized(model: str, radii: dict) -> np.ndarray:
    """FLAGS of finalize() on rows whose radius parameters are ``radii``."""
    mdef = load_model(model)
    n = len(next(iter(radii.values())))
    out = empty_results(n, mdef, ["F444W"])
    out["x"][:], out["y"][:] = 10.0, 10.0
    for name, values in radii.items():
        out[f"p_{name}"][:] = values
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix, wcs.wcs.cdelt = [53.1, -27.8], [10.0, 10.0], [-1e-5, 1e-5]
    det = BandCutout("DETECTION", np.zeros((20, 20), np.float32), np.ones((20, 20), np.float32), wcs,
                     pixel_scale=0.04)
    return np.asarray(finalize(out, None, det, mdef, ["F444W"])["FLAGS"])


def test_bulge_larger_flag_bit():
    assert int(FitFlag.BULGE_LARGER) == 16384
    assert all(int(f) != 16384 for f in FitFlag if f is not FitFlag.BULGE_LARGER)
    # bulge inside the disk, bulge larger, equal, and a point row (NaN radii)
    r_b, r_d = [2.0, 9.0, 4.0, np.nan], [6.0, 3.0, 4.0, np.nan]
    for model in ("B+D", "B+D_free", "B+D_wide"):
        flags = _finalized(model, {"r_b": r_b, "r_d": r_d}) & int(FitFlag.BULGE_LARGER)
        assert flags.tolist() == [0, 16384, 0, 0], model
    # a model without a bulge and a disk never has the bit
    assert not (_finalized("sersic", {"re": [2.0, 9.0]}) & int(FitFlag.BULGE_LARGER)).any()
