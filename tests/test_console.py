"""A clean run's console: a few useful lines, no distributed chatter (issue 17)."""
from __future__ import annotations

import re
import subprocess
import sys

from newcomer import SOURCES, write_tiny_field


def _run_cli(tmp_path, *extra):
    images, psf_args = write_tiny_field(tmp_path)
    argv = [sys.executable, "-m", "dja_sepp", *extra, "run", "--images", str(images),
            "--out", str(tmp_path / "run"), "--workers", "1", "--tile-size", "6.4",
            "--overlap", "2", *psf_args]
    proc = subprocess.run(argv, capture_output=True, timeout=600)
    # lines as a terminal shows them: a progress bar redraws one line with "\r"
    # (bytes: text mode would turn every "\r" into a line of its own)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    return proc, out.rstrip("\n").split("\n")


def test_clean_run_console_is_short(tmp_path):
    proc, lines = _run_cli(tmp_path)
    text = "\n".join(lines)
    assert proc.returncode == 0, text
    # the tiles and the mosaic share one cluster: one dashboard link
    assert sum("dashboard" in line for line in lines) == 1, text
    # (a WARNING, e.g. a worker slow to stop on a busy machine, is still shown)
    assert not [line for line in lines if "distributed." in line and " INFO " in line], text
    assert not [line for line in lines if "Warning" in line or "warnings.warn" in line], text
    assert len(lines) <= 25, text     # 52 before issue 17 (47 of them distributed INFO)
    assert any("catalog" in line for line in lines), text
    # progress in sources fitted (the tasks report it), and of the mosaic's chunks:
    # each bar is one terminal line whose last redraw shows the step finished
    fit = [line for line in lines if line.lstrip("\r").startswith("fit")]
    assert len(fit) == 1, text
    last = fit[0].split("\r")[-1]
    done, total = re.search(r"(\d+)/(\d+) sources", last).groups()
    assert done == total and int(total) >= len(SOURCES), last   # every source counted
    assert "tiles 2/2" in last, last
    # the total was known while the tiles were still fitting (not only tile by tile)
    assert re.search(r"\d+/[1-9]\d* sources [^\r]*tiles [01]/2", fit[0]), fit[0]
    mosaic = [line for line in lines if line.lstrip("\r").startswith("mosaic:")]
    assert len(mosaic) == 1 and "100%" in mosaic[0].split("\r")[-1], text
    # the closing summary: times per stage, flag counts, where every output is
    assert any(line.startswith("times: setup") and " tiles " in line and " mosaic " in line
               for line in lines), text
    assert any(line.startswith("  FLAGS == 0:") for line in lines), text
    assert "outputs:" in lines, text
    listed = "\n".join(lines[lines.index("outputs:"):])
    for name in ("catalog.fits", "catalog_rejected.fits", "mosaic.zarr", "run.yaml", "summary.json"):
        assert name in listed, name
    # a finished tile folder keeps its status, not the marker of the running attempt
    tiles = sorted((tmp_path / "run" / "tiles").iterdir())
    assert len(tiles) == 2 and all((t / "status.json").exists() for t in tiles)
    assert not list((tmp_path / "run" / "tiles").glob("*/running.json"))


def test_verbose_shows_distributed_logs(tmp_path):
    proc, lines = _run_cli(tmp_path, "-v")
    assert proc.returncode == 0, "\n".join(lines)
    assert any("distributed." in line and "INFO" in line for line in lines)
