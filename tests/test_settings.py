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
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown configuration key 'tiling.tile_sise'"):
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
    assert a != config_hash(load_config(detection__thresh=1.5))


def test_unknown_model_lists_shipped(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; shipped models"):
        model_path("nope")


def test_config_init_copies_files(tmp_path):
    written = init_config_dir(tmp_path / "cfg")
    assert (tmp_path / "cfg" / "defaults.yaml") in written
    assert load_config(tmp_path / "cfg" / "defaults.yaml")["tiling"]["align"] == 64
