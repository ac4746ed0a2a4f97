"""Make the real SourceXtractor++ output committed here (needs ``sourcextractor++`` on PATH).

Simulates a 6" x 6" field with :func:`dja_sepp.sim.simulate_field` (two bands, F200W on 0.02" and F444W on
0.04", 6 galaxies, no stars, seed 5), detects its sources with our detection, runs the SE++ engine
(``dja_sepp.fit.sepp.SeppEngine``, model ``sersic_rg4``, the shipped ``fit.sepp`` settings) on the whole
field as one tile and keeps:

- ``catalog.fits``: SE++'s own output catalog (``--output-catalog-filename``), unchanged;
- ``sources.fits``: our detections that were sent (the assoc catalog's ``ROW`` indexes them);
- ``detection_header.txt``: the detection cutout's WCS header (the parse needs it);
- ``truth.fits``: the simulator's truth of the field;
- ``command.txt``: the exact ``sourcextractor++`` command line and its version.

Run from the repository root: ``python tests/data/sepp/make_catalog.py``.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


HERE = Path(__file__).parent


def main() -> None:
    from dja_sepp.fit import sepp
    from dja_sepp.settings import default_config
    from dja_sepp.sim import simulate_field
    from dja_sepp.sim.field import whole_field

    work = Path(tempfile.mkdtemp(prefix="sepp_data_"))
    sim = simulate_field(work / "images", field="sepp", size_arcsec=6.0, bands=("F200W", "F444W"),
                         n_galaxies=6, n_stars=0, seed=5, blank=None, gzip=False)
    cfg = default_config()
    sources, det, bands = whole_field(sim, cfg["detection"])
    keep = work / "sepp"
    keep.mkdir()
    opts = {**cfg["fit"], "sepp": {**cfg["fit"]["sepp"], "keep_files": True, "scratch": str(keep)}}
    table = sepp.SeppEngine().fit(sources, det, bands, "sersic_rg4", opts)
    run_dir = next(keep.iterdir())
    shutil.copy(run_dir / "catalog.fits", HERE / "catalog.fits")
    sources.write(HERE / "sources.fits", overwrite=True)
    (HERE / "detection_header.txt").write_text(det.wcs.to_header().tostring(sep="\n"))
    shutil.copy(sim.truth_path, HERE / "truth.fits")
    exe = sepp.find_executable()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    cmd = (run_dir / "command.txt").read_text() if (run_dir / "command.txt").exists() else ""
    (HERE / "command.txt").write_text(f"{version}\n{cmd}")
    print(table["X_MODEL", "Y_MODEL", "RADIUS", "SERSIC", "MAG_MODEL_F200W", "MAG_MODEL_F444W",
                "CHI2_REDUCED", "FLAGS"])
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
