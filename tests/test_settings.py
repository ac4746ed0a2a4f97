"""Configuration: defaults, overrides, clear errors, model names."""
import pytest

from dja_sepp.settings import (ConfigError, config_hash, init_config_dir, load_config,
                               model_path)


def test_defaults_are_the_predecessors():
    cfg = load_config()
    assert cfg["tiling"]["tile_size"] == 120.0 and cfg["tiling"]["overlap"] == 30.0
    det = cfg["detection"]
    assert (det["thresh"], det["minarea"], det["deblend_nthresh"], det["deblend_cont"]) == \
        (0.8, 7, 42, 1e-4)
    assert cfg["field"]["zeropoint"] == pytest.approx(28.90)


def test_overrides_and_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tiling:\n  tile_size: 60\nfit:\n  models: [sersic_rg4]\n")
    cfg = load_config(path, tiling__overlap=10)
    assert cfg["tiling"]["tile_size"] == 60 and cfg["tiling"]["overlap"] == 10


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tiling:\n  tile_sise: 60\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: unknown configuration key 'tiling.tile_sise'"):
        load_config(path)


def test_bad_yaml_and_values(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("tiling: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="tile_size must be positive"):
        load_config(tiling__tile_size=0)


def test_hash_changes_with_result_relevant_settings():
    a = config_hash(load_config())
    assert a == config_hash(load_config(cluster__n_workers=7))  # where it runs: same result
    assert a == config_hash(load_config(fit__processes=2)) == config_hash(load_config(fit__threads=2))  # idem
    assert a != config_hash(load_config(detection__thresh=1.5))


def test_unknown_model_lists_shipped(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; known models"):
        model_path("nope")


def test_config_init_copies_files(tmp_path):
    written = init_config_dir(tmp_path / "cfg")
    assert (tmp_path / "cfg" / "defaults.yaml") in written
    assert load_config(tmp_path / "cfg" / "defaults.yaml")["tiling"]["align"] == 64


@pytest.mark.parametrize("text, key, words", [
    ("detection:\n  thresh: high\n", "detection.thresh", "a finite number"),
    ("merge:\n  match_radius: abc\n", "merge.match_radius", "a finite number"),
    ("tiling: 5\n", "tiling", "a section"),
    ("cluster:\n  retries: two\n", "cluster.retries", "an integer"),
    ("tiling:\n  tile_size: .inf\n", "tiling.tile_size", "a finite number"),
    ("mosaic:\n  enabled: maybe\n", "mosaic.enabled", "true or false"),
    ("fit:\n  engine: sextractor\n", "fit.engine", "one of builtin, sourcextractor++"),
    ("cluster:\n  n_workers: -1\n", "cluster.n_workers", "at least 1"),
    ("psf:\n  files: {F200W: 3}\n", "psf.files", "a string"),
])
def test_wrong_types_name_the_key_and_line(tmp_path, text, key, words):
    """Every value is type-checked at load time, naming file, line and key
    (a wrong type used to crash inside tiles or after fitting every tile)."""
    path = tmp_path / "bad.yaml"
    path.write_text("# a comment\n" + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = 2 if "." not in key else 3
    assert str(info.value).startswith(f"{path}:{line}: {key}") and words in str(info.value)


def test_numbers_written_as_yaml_strings_are_read(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("detection:\n  deblend_cont: 1e-5\n  minarea: 9.0\nfit:\n  models: B+D\n")
    cfg = load_config(path)
    assert cfg["detection"]["deblend_cont"] == 1e-5 and cfg["detection"]["minarea"] == 9
    assert cfg["fit"]["models"] == ["B+D"]


def test_overrides_are_checked_too():
    with pytest.raises(ConfigError, match=r"<arguments>: tiling.overlap must be a finite number"):
        load_config(tiling__overlap=float("inf"))


def test_run_yaml_is_accepted_as_config(tmp_path):
    """run.yaml (settings + the run: record) is what --config accepts."""
    from dja_sepp.settings import dump_config
    cfg = load_config(detection__thresh=1.2)
    cfg["run"] = {"images": "/data/images", "psf_files": {"F200W": "psf/F200W.fits"}}
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again["detection"]["thresh"] == 1.2 and "run" not in again


def test_fit_threads_and_processes_are_not_both_asked_for():
    assert load_config({"fit": {"processes": 2}})["fit"]["processes"] == 2
    with pytest.raises(ConfigError, match=r"fit\.threads \(2\) and fit\.processes \(2\) are both > 1"):
        load_config({"fit": {"threads": 2, "processes": 2}})
