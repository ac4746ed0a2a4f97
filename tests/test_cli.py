"""Command line: clear one-line errors on bad input, exit codes, config init."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from dja_sepp.cli import main
from fieldfiles import write_field, write_image


def _run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.fixture
def images(tmp_path):
    return write_field(tmp_path / "images")


def test_missing_weight(capsys, images, tmp_path):
    (images / "tst-f444w-clear_drc_wht.fits").unlink()
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"))
    assert code == 2
    assert err[-1].startswith("dja-sepp: error:") and "tst-f444w-clear_drc_sci.fits: no weight" in err[-1]


def test_no_wcs(capsys, images, tmp_path):
    write_image(images / "tst-f200w-clear_drc_sci.fits", np.zeros((320, 448)), None, "F200W")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"))
    assert code == 2 and "tst-f200w-clear_drc_sci.fits: no celestial WCS" in err[-1]


def test_inconsistent_footprints(capsys, tmp_path):
    images = write_field(tmp_path / "images")
    other = write_field(tmp_path / "other", det_shape=(100, 224), bands=(("F444W", 1),))
    for kind in ("sci", "wht"):
        (other / f"tst-f444w-clear_drc_{kind}.fits").replace(images / f"tst-f444w-clear_drc_{kind}.fits")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"))
    assert code == 2 and "tst-f444w-clear_drc_sci.fits: footprint" in err[-1]


def test_corrupt_gz(capsys, tmp_path):
    images = write_field(tmp_path / "images", gz=True)
    path = images / "tst-ir_drc_wht.fits.gz"
    path.write_bytes(path.read_bytes()[:200])
    code, err = _run_cli(capsys, "tiles", "--images", str(images), "--out", str(tmp_path / "t"))
    assert code == 2 and "tst-ir_drc_wht.fits.gz: cannot read" in err[-1]


def test_unknown_model(capsys, images, tmp_path):
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"),
                         "--model", "sersic_rg5")
    assert code == 2 and "unknown model 'sersic_rg5'" in err[-1]
    assert not (tmp_path / "run" / "catalog.fits").exists()


def test_unwritable_output(capsys, images, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(blocker / "run"))
    assert code == 2 and "a_file/run: output directory is not writable" in err[-1]


def test_bad_config_file(capsys, images, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("detection:\n  treshold: 2\n")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "r"),
                         "--config", str(cfg))
    assert code == 2 and "cfg.yaml: unknown configuration key 'detection.treshold'" in err[-1]


def test_tiles_command_writes_regions(capsys, images, tmp_path):
    code = main(["tiles", "--images", str(images), "--out", str(tmp_path / "t"),
                 "--tile-size", "3", "--overlap", "0.5"])
    assert code == 0
    assert "12 tiles (3 x 4, core 64 px" in capsys.readouterr().out  # 3" = 75 px -> one 64 px unit
    assert (tmp_path / "t" / "tiles.reg").exists() and (tmp_path / "t" / "tiles.png").exists()


def test_config_init(capsys, tmp_path):
    assert main(["config", "init", str(tmp_path / "cfg")]) == 0
    assert (tmp_path / "cfg" / "defaults.yaml").exists()


def test_console_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dja_sepp", "run", "--images", str(tmp_path / "none"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"dja-sepp: error: {tmp_path / 'none'}: not a folder"
