"""The demo builds its PSFs and ends with its catalog against its own truth (issue 17)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from dja_sepp.demo import compare_with_truth
from dja_sepp.cli import build_parser

BANDS = ("F200W", "F444W")


def _truth(n=60, seed=0):
    rng = np.random.default_rng(seed)
    mag = rng.uniform(20, 27, n)
    t = Table({"ID": np.arange(1, n + 1), "KIND": ["sersic"] * (n - 5) + ["star"] * 5,
               "RA": 53.16 + rng.uniform(0, 0.01, n), "DEC": -27.78 + rng.uniform(0, 0.01, n),
               "RE": rng.uniform(0.05, 0.5, n), "N": rng.uniform(0.5, 4, n)})
    for b in BANDS:
        t[f"MAG_{b}"] = mag
        t[f"FLUX_{b}"] = 10 ** (-0.4 * (mag - 28.9))
    return t


def test_comparison_prints_completeness_purity_and_dmag_per_band(tmp_path):
    truth = _truth()
    keep = truth[truth["MAG_F200W"] < 25.5]            # the faint ones are not found
    cat = Table({"RA": keep["RA"], "DEC": keep["DEC"]})
    for b in BANDS:
        cat[f"FLUX_MODEL_{b}"] = keep[f"FLUX_{b}"] * 10 ** (-0.4 * 0.05)   # 0.05 mag faint
        cat[f"FLUX_MODEL_{b}_err"] = 0.01 * keep[f"FLUX_{b}"]
    truth.write(tmp_path / "truth.fits")
    score, text = compare_with_truth(cat, tmp_path / "truth.fits", tmp_path)
    assert score.purity == 1.0
    eligible = truth["MAG_F444W"] < 26
    assert score.completeness == pytest.approx(np.mean(truth["MAG_F444W"][eligible] < 25.5))
    assert f"completeness {score.completeness:.3f}" in text and "purity 1.000" in text
    for b in BANDS:
        line = next(line for line in text.splitlines() if line.split()[:1] == [b])
        assert "+0.050" in line, line
    assert (tmp_path / "truth_comparison.png").stat().st_size > 10_000
    assert (tmp_path / "truth_comparison.json").exists()


def test_demo_builds_psfs_unless_asked_for_the_truth():
    parser = build_parser()
    assert not parser.parse_args(["demo", "--out", "x"]).truth_psf
    assert parser.parse_args(["demo", "--out", "x", "--truth-psf"]).truth_psf
    import inspect
    from dja_sepp.demo import run_demo
    assert inspect.signature(run_demo).parameters["psf"].default == "build"
    # smaller fields get more stars, so every band keeps enough for its PSF
    from dja_sepp.demo import demo_stars
    assert demo_stars(32) == 20 and demo_stars(20) >= 40 and demo_stars(16) >= 40


@pytest.mark.slow
@pytest.mark.timeout(2400)   # ~10 min on 2 free cores; much longer on a shared machine
def test_demo_end_to_end_prints_its_truth_comparison(tmp_path):
    """A small demo (16", 30 galaxies, built PSFs, no mosaic): the console ends
    with the comparison against the truth."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from dja_sepp.cli import main; sys.exit(main(sys.argv[1:]))",
         "demo", "--out", str(tmp_path / "demo"), "--size", "16", "--galaxies", "30",
         "--workers", "2"], capture_output=True, timeout=1800)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode in (0, 3), out
    tail = out[out.index("the catalog against the simulation's truth"):]
    assert "(PSFs built by the run)" in tail and "completeness" in tail and "purity" in tail
    assert (tmp_path / "demo" / "truth_comparison.png").exists()
    assert (tmp_path / "demo" / "run" / "psf" / "F200W.fits").exists()
