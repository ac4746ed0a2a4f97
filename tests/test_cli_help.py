"""The command line describes itself: --version, help for every argument (issue 17)."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import dja_sepp
from dja_sepp.cli import build_parser, main
from dja_sepp.settings import config_dir


def _parsers(parser, path=("dja-sepp",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dja-sepp {dja_sepp.__version__}"


def test_every_argument_has_help():
    missing = [f"{' '.join(path)} {action.dest}" for path, parser in _parsers(build_parser())
               for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction)
               and (not action.help or action.help == argparse.SUPPRESS)]
    assert not missing


def test_help_has_no_rst_markup():
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text, " ".join(path)


def test_model_help_lists_the_shipped_models():
    shipped = sorted(p.stem for p in (config_dir() / "models").glob("*.yaml"))
    assert len(shipped) >= 2
    for command in ("run", "demo"):
        text = " ".join(_help_of(command).split())   # argparse wraps lines
        for name in shipped:
            assert name in text, (command, name)


def _help_of(command):
    for path, parser in _parsers(build_parser()):
        if path == ("dja-sepp", command):
            return parser.format_help()
    raise AssertionError(command)


def test_console_help_runs():
    proc = subprocess.run([sys.executable, "-m", "dja_sepp", "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--model" in proc.stdout and "``" not in proc.stdout
