"""The README's Python example runs as a script; run()'s switches (issue 17)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.table import Table

import dja_sepp
from newcomer import write_tiny_field

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The Python block after the ``python-example`` marker of the README."""
    text = README.read_text()
    match = re.search(r"<!-- python-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no marked Python example"
    return match.group(1)


def test_readme_example_runs_as_a_script(tmp_path):
    images, psf_args = write_tiny_field(tmp_path)
    psfs = dict(a.split("=", 1) for a in psf_args[1::2])
    code = readme_example()
    # the tiny field instead of /data/gds; one worker; Gaussian PSFs (it has no stars to build from)
    for old, new in (('"/data/gds"', repr(str(images))), ('"run_gds"', repr(str(tmp_path / "run"))),
                     ("workers=4", f"workers=1, psfs={psfs!r}")):
        assert old in code, old
        code = code.replace(old, new)
    script = tmp_path / "fit_field.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 sources" in proc.stdout and "RADIUS" in proc.stdout, proc.stdout   # summary, table
    assert (tmp_path / "run" / "catalog_B+D.fits").exists()
    assert not (tmp_path / "run" / "mosaic.zarr").exists()     # mosaic=False
    assert "Traceback" not in proc.stderr, proc.stderr


def test_result_catalog_and_switches(tmp_path, dask_client):
    images, psf_args = write_tiny_field(tmp_path)
    psfs = dict(a.split("=", 1) for a in psf_args[1::2])
    result = dja_sepp.run(images, tmp_path / "run", models="sersic", psfs=psfs, mosaic=False,
                          cluster=dask_client, progress=False, tiling__tile_size=10.0,
                          tiling__overlap=2.0)
    assert result.complete and result.mosaic_path is None
    assert isinstance(result.catalog, Table) and len(result.catalog) == 4
    assert result.catalog is result.catalog                    # read once
    assert result.catalog.meta["MODEL"] == "sersic"
    text = result.summary()
    assert "4 sources" in text and "times:" in text and result.catalog_path in text


def test_command_line_spelling_is_refused(tmp_path):
    with pytest.raises(TypeError, match="mosaic=False"):
        dja_sepp.run(tmp_path, tmp_path / "run", no_mosaic=True)
