"""The README's configuration table and troubleshooting section (issue 17)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from dja_sepp.settings import default_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _config_rows():
    start = README.index("<!-- config-keys:")
    block = README[start:README.index("\n\n", start)]
    for line in block.splitlines():
        m = re.match(r"\| `([a-z_.]+)` \| `([^`]*)` \| (.+) \|$", line)
        if m:
            yield m.groups()


def test_every_documented_key_has_its_default():
    defaults = default_config()
    rows = list(_config_rows())
    assert len(rows) >= 30
    for key, default, meaning in rows:
        value = defaults
        for part in key.split("."):
            assert part in value, key
            value = value[part]
        assert yaml.safe_load(default) == value, (key, default, value)
        assert meaning.strip()


def test_main_sections_are_documented():
    keys = {k for k, _, _ in _config_rows()}
    for section in ("field", "tiling", "detection", "psf", "fit", "merge", "mosaic", "cluster"):
        assert any(k.startswith(section + ".") for k in keys), section
    for key in ("fit.models", "fit.passes", "tiling.tile_size", "tiling.overlap", "cluster.n_workers",
                "fit.coverage_flag", "fit.min_coverage"):
        assert key in keys, key


def test_troubleshooting_section():
    text = README[README.index("## Troubleshooting\n"):]
    text = text[:text.index("\n## ", 1)]
    for symptom in ("Nanny failed to start", "PSF star", "--resume", "KilledWorker", "PARTIAL_COVERAGE",
                    "unknown model", "-v run"):
        assert symptom in text, symptom
    assert "[Troubleshooting](#troubleshooting)" in README


def test_no_words_of_the_project_history():
    lower = README.lower()
    for words in ("issue 1", "before this work", "code of ", "within the session", "predecessor"):
        assert words not in lower, words
