"""A clean run's console: a few useful lines, no distributed chatter (issue 17)."""
from __future__ import annotations

import subprocess
import sys

from newcomer import write_tiny_field


def _run_cli(tmp_path, *extra):
    images, psf_args = write_tiny_field(tmp_path)
    argv = [sys.executable, "-m", "dja_sepp", *extra, "run", "--images", str(images),
            "--out", str(tmp_path / "run"), "--workers", "1", "--tile-size", "6.4",
            "--overlap", "2", *psf_args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    # lines as a terminal shows them: the progress bar redraws one line with "\r"
    return proc, (proc.stdout + proc.stderr).rstrip("\n").split("\n")


def test_clean_run_console_is_short(tmp_path):
    proc, lines = _run_cli(tmp_path)
    text = "\n".join(lines)
    assert proc.returncode == 0, text
    # the tiles and the mosaic share one cluster: one dashboard link
    assert sum("dashboard" in line for line in lines) == 1, text
    # (a WARNING, e.g. a worker slow to stop on a busy machine, is still shown)
    assert not [line for line in lines if "distributed." in line and " INFO " in line], text
    assert not [line for line in lines if "Warning" in line or "warnings.warn" in line], text
    assert len(lines) <= 25, text     # 52 before issue 17 (47 of them distributed INFO); 7 now
    assert any("catalog" in line for line in lines), text


def test_verbose_shows_distributed_logs(tmp_path):
    proc, lines = _run_cli(tmp_path, "-v")
    assert proc.returncode == 0, "\n".join(lines)
    assert any("distributed." in line and "INFO" in line for line in lines)
