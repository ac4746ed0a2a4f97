"""The SourceXtractor++ engine without the binary: the configuration we
generate (exact text and, through a stand-in of SE++'s Python API, every
parameter's start, range and prior against the YAML model's own evaluation),
the watchdog (a fake executable that stalls), crashes, and the error when
``sourcextractor++`` is missing. Tests that run the real binary live in
``test_sepp_binary.py`` and skip without it."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from dja_sepp.fit.base import check_engines, engine_for, get_engine
from dja_sepp.fit.sepp import (SeppError, SeppUnavailable, assoc_arguments, assoc_table,
                               find_executable, run_sepp)
from dja_sepp.fit.sepp_config import ASSOC_NAMES, SeppBand, output_names, python_config
from dja_sepp.models.definition import detection_context, evaluate, load_model
from dja_sepp.settings import default_config

import sepp_stub

DATA = Path(__file__).parent / "data" / "sepp"
SEPP = default_config()["fit"]["sepp"]
BANDS = [SeppBand("F200W", "F200W_sci.fits", "F200W_wht.fits", "F200W_psf.fits", 1.9886),
         SeppBand("F444W", "F444W_sci.fits", "F444W_wht.fits", "F444W_psf.fits", 4.4043)]
MODELS = ("sersic_rg4", "B+D", "B+D_corr", "B+D_free")


def _sources() -> Table:
    return Table({"x": [20.3, 41.0], "y": [30.7, 12.2], "FLUX_ISO": [812.0, -3.0], "NPIX": [120, 9],
                  "A_IMAGE": [4.1, 1.2], "B_IMAGE": [2.2, 1.0], "THETA_IMAGE": [33.0, -70.0],
                  "FLUX_RADIUS": [3.3, 1.1], "XMIN": [12, 39], "XMAX": [29, 43], "YMIN": [24, 10],
                  "YMAX": [37, 14], "PARENT_ID": [5, 6], "IN_CORE": [True, True]})


class _Obj:
    """SE++'s source object ``o`` as the assoc segmentation fills it."""

    def __init__(self, row):
        self.centroid_x, self.centroid_y = float(row["X"]), float(row["Y"])
        for i, name in enumerate(ASSOC_NAMES):
            setattr(self, f"assoc_value_{i}", float(row[name.upper()]))


@pytest.mark.parametrize("model", MODELS)
def test_config_reproduces_the_yaml_model(model):
    mdef = load_model(model)
    text = python_config(mdef, BANDS, 0.04, SEPP)
    scope = sepp_stub.run_config(text)
    st = sepp_stub.STATE
    assert st["settings"] == {"set_engine": "levmar", "set_max_iterations": 500,
                              "use_iterative_fitting": True, "set_meta_iterations": 3,
                              "set_deblend_factor": 1.0, "set_meta_iteration_stop": 0.02}
    sources = _sources()
    assoc = assoc_table(sources, np.ones(2, bool), 0.04)
    for k in range(2):
        o = _Obj(assoc[k])
        ctx = detection_context(sources[k], 0.04)
        ctx.update(x=ctx["x"] + 1.0, y=ctx["y"] + 1.0, flux=max(ctx["flux"], 1e-4))
        values, ranges = mdef.initial(ctx)
        params = scope["P"]
        assert list(params) == mdef.parameter_names
        for p, v, rng in zip(mdef.parameters, values, ranges):
            fp = params[p.name]
            if rng.kind == "free":
                assert fp.range is None
                assert fp.init(o) == pytest.approx(v)
                continue
            lo, hi = fp.range.limits(fp.init(o), o)
            assert (lo, hi) == pytest.approx((rng.lo, rng.hi)), p.name
            assert fp.range.type.name.lower() == rng.kind, p.name
            assert float(np.clip(fp.init(o), lo, hi)) == pytest.approx(v), p.name
        # priors: the same transforms, means and sigmas
        names = dict(zip(mdef.parameter_names, values))
        expected = [(p.prior.transform, p.prior.mean, p.prior.sigma) for p in mdef.parameters if p.prior]
        expected += [(q.transform, q.mean, q.sigma) for q in mdef.priors]
        shape_priors = st["priors"][:len(expected)]
        for (param, mean, sigma), (transform, emean, esigma) in zip(shape_priors, expected):
            assert param.value(o) == pytest.approx(evaluate(transform, names, "test"))
            assert mean(o) == pytest.approx(evaluate(emean, ctx, "test"))
            assert sigma(o) == pytest.approx(evaluate(esigma, ctx, "test"))
    # band priors (B/T), one per band, at the band's pivot wavelength
    band_priors = st["priors"][len(expected):]
    assert len(band_priors) == len(mdef.band_priors) * len(BANDS)
    for (param, mean, sigma), band in zip(band_priors, BANDS):
        bp = mdef.band_priors[0]
        assert mean == pytest.approx(evaluate(bp.mean, {"L": band.wavelength}, "test"))
        assert sigma == pytest.approx(evaluate(bp.sigma, {"L": band.wavelength}, "test"))
        assert param.value(o) == pytest.approx(math.log((0.1 + 0.01) / (1.01 - 0.1)))
    # one model per component and band, all sharing the centre
    kinds = [type(m).__name__ for _, m in st["models"]]
    per_band = {"sersic_rg4": ["SersicModel"], "B+D": ["DeVaucouleursModel", "ExponentialModel"],
                "B+D_corr": ["DeVaucouleursModel", "ExponentialModel"],
                "B+D_free": ["SersicModel", "ExponentialModel"]}[model]
    assert kinds == per_band * len(BANDS)
    assert all(m.params[0] is scope["P"]["x"] and m.params[1] is scope["P"]["y"] for _, m in st["models"])
    assert [img for img, _ in st["models"]] == [b.sci for b in BANDS for _ in per_band]
    assert st["frames"] == [st["images"][0]] and st["images"][0]["image"] == "detection.fits"
    for info, band in zip(st["images"][1:], BANDS):
        assert (info["psf"], info["weight"]) == (band.psf, band.wht)
        assert info["weight_type"] == "weight" and info["weight_absolute"] is True
        assert info["psf_renormalize"] is False and info["constant_background"] == 0.0
    assert set(output_names(mdef, [b.band for b in BANDS])) <= set(st["outputs"])


def test_config_flux_split_and_start():
    """B+D: bulge = f B/T, disk = f (1 - B/T); fluxes start at the isophotal
    flux (at least 1e-4) within (1e-3, 1e3) x it."""
    scope = sepp_stub.run_config(python_config(load_model("B+D"), BANDS[:1], 0.04, SEPP))
    out = sepp_stub.STATE["outputs"]
    o = _Obj(assoc_table(_sources(), np.ones(2, bool), 0.04)[0])
    total, bt = out["f_total_F200W"], out["bt_F200W"]
    assert total.init(o) == pytest.approx(812.0)
    assert total.range.limits(812.0, o) == pytest.approx((0.812, 812000.0))
    assert bt.init(o) == 0.1 and bt.range.limits(0.1, o) == (5e-5, 1.0)
    assert out["f_bulge_F200W"].value(o) == pytest.approx(81.2)
    assert out["f_disk_F200W"].value(o) == pytest.approx(730.8)
    assert "E" not in scope  # no e1/e2 in a bulge + disk model
    faint = _Obj(assoc_table(_sources(), np.ones(2, bool), 0.04)[1])
    assert total.init(faint) == pytest.approx(1e-4)  # negative isophotal flux: the floor


def test_config_text_sersic_rg4_exact():
    """The exact text for sersic_rg4 (regenerate tests/data/sepp/config_sersic_rg4.py
    with the snippet in tests/data/sepp/README.md when the generator changes on purpose)."""
    text = python_config(load_model("sersic_rg4"), BANDS, 0.04, SEPP)
    assert text == (DATA / "config_sersic_rg4.py").read_text()
    compile(text, "config", "exec")


def test_assoc_catalog_and_arguments():
    sources = _sources()
    table = assoc_table(sources, np.array([False, True]), 0.04)
    assert len(table) == 1 and table["ROW"][0] == 1.0
    assert (table["X"][0], table["Y"][0]) == (42.0, 13.2)  # 1-based
    assert np.isnan(table["RA"][0])  # no WCS given
    assert table["GROUP"][0] == 6 and table["HALF_W"][0] == pytest.approx(3.0)
    args = assoc_arguments("assoc.fits")
    cols = table.colnames
    assert cols[int(args[args.index("--assoc-source-half-widths") + 1]) - 1] == "HALF_W"
    assert cols[int(args[args.index("--assoc-group-id") + 1]) - 1] == "GROUP"
    copied = [cols[int(i) - 1] for i in args[args.index("--assoc-copy") + 1].split(",")]
    assert copied == [n.upper() for n in ASSOC_NAMES]


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (one left for init to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_watchdog_kills_a_stalled_run(tmp_path):
    """Progress frozen, CPU idle (the test hook: a fake executable that stops
    progressing): killed with everything it started, reported as a stall."""
    fake = _script(tmp_path / "fake-sepp", "echo 'Segmentation: 10%'\necho $$ > pid\nsleep 60 &\n"
                                           "echo $! > child\nwait\n")
    start = time.monotonic()
    with pytest.raises(SeppError, match="(?s)stalled.*killed.*Segmentation: 10%"):
        run_sepp([fake], tmp_path, {**SEPP, "stall_timeout": 1.0})
    assert time.monotonic() - start < 10
    time.sleep(0.2)
    for name in ("pid", "child"):
        assert not _running(int((tmp_path / name).read_text())), name


def test_watchdog_spares_a_busy_silent_run(tmp_path):
    """No output for a while but a busy CPU is work, not a stall."""
    busy = f"{sys.executable} -c \"import time; t = time.time()\nwhile time.time() - t < 2.5: pass\"\n"
    fake = _script(tmp_path / "fake-sepp", busy + "touch catalog.fits\n")
    wall, cpu = run_sepp([fake], tmp_path, {**SEPP, "stall_timeout": 1.0})
    assert wall > 2.0 and cpu > 0.1  # CPU share: the test machine may be loaded
    assert (tmp_path / "command.txt").read_text().strip() == fake


def test_crash_and_missing_catalog_fail_the_tile(tmp_path):
    crash = _script(tmp_path / "crash", "echo 'Model fitting: bad_alloc'\nexit 3\n")
    with pytest.raises(SeppError, match="(?s)status 3.*bad_alloc"):
        run_sepp([crash], tmp_path, SEPP)
    quiet = _script(tmp_path / "quiet", "exit 0\n")
    with pytest.raises(SeppError, match="no catalog"):
        run_sepp([quiet], tmp_path, SEPP)


def test_missing_executable_is_named():
    fit = {**default_config()["fit"], "engine": "sourcextractor++"}
    fit["sepp"] = {**SEPP, "executable": "no-such-sourcextractor++"}
    with pytest.raises(SeppUnavailable, match="no-such-sourcextractor\\+\\+.*not on PATH"):
        check_engines(fit)
    with pytest.raises(SeppUnavailable):
        find_executable(fit["sepp"])
    fit = {**fit, "engine": "builtin", "model_engines": {"B+D": "sourcextractor++"},
           "models": ["sersic_rg4", "B+D"]}
    assert engine_for(fit, "B+D") == "sourcextractor++" and engine_for(fit, "sersic_rg4") == "builtin"
    with pytest.raises(SeppUnavailable):  # only B+D needs it, and that is enough to refuse the run
        check_engines(fit)
    assert get_engine("sourcextractor++").name == "sourcextractor++"


def test_cli_refuses_before_any_tile(tmp_path, monkeypatch):
    """``--engine sourcextractor++`` without the executable: exit 2 naming it,
    nothing written."""
    from fieldfiles import write_field
    images = write_field(tmp_path / "img")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    proc = subprocess.run([sys.executable, "-m", "dja_sepp", "run", "--images", str(images),
                           "--out", str(tmp_path / "run"), "--engine", "sourcextractor++"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "sourcextractor++" in proc.stderr and "not on PATH" in proc.stderr
    assert not (tmp_path / "run").exists()
