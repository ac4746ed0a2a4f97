"""A refused run leaves no trace; the demo's output folder is git-ignored (issue 17)."""
from __future__ import annotations

from pathlib import Path

import pytest

from newcomer import write_tiny_field

from dja_sepp.cli import main


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_refused_run_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--images", str(tmp_path / "no_such_folder"), "--out", str(out)]) == 2
    assert not out.exists()
    # a truncated mosaic is refused before any tile: no folder either
    images, psf_args = write_tiny_field(tmp_path)
    det = next(images.glob("*-ir_drc_sci.fits"))
    det.write_bytes(det.read_bytes()[:20000])
    assert main(["run", "--images", str(images), "--out", str(out), *psf_args]) == 2
    assert "ir_drc_sci.fits" in capsys.readouterr().err   # the file is named
    assert not out.exists()


def test_refused_run_keeps_an_existing_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    assert main(["run", "--images", str(tmp_path / "no_such_folder"), "--out", str(out)]) == 2
    assert out.is_dir()   # made by the user: never removed


def test_demo_output_folder_is_git_ignored():
    ignored = (Path(__file__).parents[1] / ".gitignore").read_text().split()
    assert "/demo/" in ignored   # the README's `dja-sepp demo --out demo`
