"""The report of a real (tiny) run, opened in headless Chromium (issue 15).

The run fits the four sources of ``newcomer.write_tiny_field`` with mosaics,
the DJA-format catalogs are written from its truth exactly as ``dja-sepp
demo`` does (:func:`dja_sepp.demo.demo_report`), and the page must load in a
real browser without console messages and with every image decoded.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import dja_sepp
from newcomer import SOURCES, write_tiny_field

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

_PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  for (var img of document.images) {
    out.push(img.getAttribute('src') + ' ' + img.naturalWidth + ' ' + img.naturalHeight);
  }
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = out.join('\\n');
  document.body.appendChild(pre);
});
</script>"""


def _truth(images: Path) -> Table:
    """The tiny field's sources: sky positions and total fluxes (10 nJy) per band."""
    det = fits.open(images / "tst-ir_drc_sci.fits")[0].header
    ra, dec = WCS(det).pixel_to_world_values([s[0] for s in SOURCES], [s[1] for s in SOURCES])
    t = Table({"RA": ra, "DEC": dec})
    for band, f in (("F200W", 2), ("F444W", 1)):   # Gaussian sigma 1.5 f band pixels
        t[f"FLUX_{band}"] = [peak * 2 * np.pi * (1.5 * f) ** 2 for *_, peak in SOURCES]
    t["N"] = 0.5
    return t


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, dask_client):
    from dja_sepp.demo import demo_report
    folder = tmp_path_factory.mktemp("tiny_report")
    images, psf_args = write_tiny_field(folder)
    psfs = dict(a.split("=", 1) for a in psf_args[1::2])
    result = dja_sepp.run(images, folder / "run", psfs=psfs, cluster=dask_client, progress=False,
                          tiling__tile_size=6.4, tiling__overlap=2.0)
    assert result.complete, result.summary()
    truth_path = folder / "truth.fits"
    _truth(images).write(truth_path)
    rep = demo_report(folder, result.run_dir, truth_path, ("F200W", "F444W"))
    return folder, result, rep


def test_report_of_a_real_run(tiny_report):
    folder, result, rep = tiny_report
    assert rep.index == f"{result.run_dir}/report/index.html"
    names = {os.path.basename(p) for p in rep.figures}
    assert {"tiles.png", "mosaic_F200W.png", "mosaic_F444W.png", "psf_stamps.png",
            "mag_vs_dja.png", "gallery_good.png", "gallery_worst_chi2.png"} <= names, names
    hdul = fits.open(rep.morpho_phot)
    assert [h.name for h in hdul] == ["PRIMARY", "DJA", "SERSIC_RG4"]
    t = Table(hdul["SERSIC_RG4"].data)
    assert len(t) == len(SOURCES) and np.isfinite(t["ID"]).all()     # all four matched
    assert sorted(t["ID"].astype(int)) == [1, 2, 3, 4]
    assert (folder / "dja" / "demo-fix_phot_apcorr.fits").exists()
    assert (folder / "dja" / "demo_zout.fits").exists()


def _chromium(url: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=180)


def _image_sizes(dom: str) -> dict[str, tuple[int, int]]:
    text = dom.split("<pre id=\"probe\">", 1)[1].split("</pre>", 1)[0]
    out = {}
    for line in text.strip().splitlines():
        src, w, h = line.rsplit(" ", 2)
        out[src] = (int(w), int(h))
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_page_renders_in_chromium(tiny_report, tmp_path):
    _, result, rep = tiny_report
    page = Path(rep.index)
    shown = _chromium(page.as_uri(), tmp_path / "profile")
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    assert "dja-sepp report: field tst" in dom and "Cross-match and flags" in dom
    assert "Worst reduced chi2" in dom and "Magnitudes against DJA" in dom
    console = [line for line in shown.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    # every image decoded with a non-zero natural size (a copy of the page with a probe)
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    sizes = _image_sizes(_chromium(probe.as_uri(), tmp_path / "profile").stdout)
    expected = {os.path.basename(p) for p in rep.figures}
    assert set(sizes) == expected
    assert all(w > 0 and h > 0 for w, h in sizes.values()), sizes
    # the probe sees a broken image as one (so it would catch a missing PNG)
    probe.write_text(page.read_text().replace(
        "</body>", "<img src='no_such.png'>" + _PROBE + "</body>"))
    sizes = _image_sizes(_chromium(probe.as_uri(), tmp_path / "profile").stdout)
    assert sizes["no_such.png"] == (0, 0)
    probe.unlink()


def test_demo_ends_with_the_report(tiny_report, monkeypatch, tmp_path, capsys):
    """``run_demo`` writes DJA-format catalogs from the truth and reports the run
    (the simulation and the run are replaced by the tiny field's)."""
    import dja_sepp.demo as demo
    import dja_sepp.sim as sim
    folder, result, _ = tiny_report

    def fake_simulate(out_dir, **kw):
        images, psf_args = write_tiny_field(Path(out_dir).parent)
        _truth(images).write(Path(out_dir) / "truth.fits", overwrite=True)
        psfs = dict(a.split("=", 1) for a in psf_args[1::2])
        return sim.SimulatedField(Path(out_dir), Path(out_dir) / "truth.fits", psfs,
                                  ("F200W", "F444W"), "tst", (160, 224), {})

    monkeypatch.setattr(sim, "simulate_field", fake_simulate)
    monkeypatch.setattr(demo, "run", lambda *a, **k: result)
    index = Path(result.run_dir) / "report" / "index.html"
    index.unlink()
    demo.run_demo(tmp_path / "demo", size=8.0, n_galaxies=4, progress=False, compare=False)
    assert index.exists()
    assert "dja-sepp demo: report" in capsys.readouterr().err
    assert (tmp_path / "demo" / "dja" / "demo-fix_phot_apcorr.fits").exists()
