"""``config init`` keeps edited files; a model added to its ``models/`` is found (issue 17)."""
from __future__ import annotations

import shutil

import pytest
from astropy.io import fits

from dja_sepp.cli import main
from dja_sepp.settings import ConfigError, config_dir, load_config, model_path, use_model_dirs
from newcomer import write_tiny_field


@pytest.fixture(autouse=True)
def _shipped_models_only():
    use_model_dirs([])        # load_config sets the search folders of this process
    yield
    use_model_dirs([])


def test_config_init_never_overwrites_without_force(tmp_path, capsys):
    assert main(["config", "init", str(tmp_path / "cfg")]) == 0
    edited = tmp_path / "cfg" / "defaults.yaml"
    edited.write_text(edited.read_text() + "\n# my edit\n")
    capsys.readouterr()
    assert main(["config", "init", str(tmp_path / "cfg")]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err
    assert edited.read_text().endswith("# my edit\n")
    assert main(["config", "init", str(tmp_path / "cfg"), "--force"]) == 0
    assert "# my edit" not in edited.read_text()


def _user_model(tmp_path):
    assert main(["config", "init", str(tmp_path / "cfg")]) == 0
    shutil.copyfile(config_dir() / "models" / "sersic.yaml", tmp_path / "cfg" / "models" / "my_sersic.yaml")
    return tmp_path / "cfg" / "defaults.yaml"


def test_user_model_is_found_by_name(tmp_path):
    defaults = _user_model(tmp_path)
    with pytest.raises(ConfigError, match="unknown model 'my_sersic'"):
        model_path("my_sersic")
    cfg = load_config(defaults, fit__models=["my_sersic"])
    assert cfg["fit"]["model_dirs"] == [str((tmp_path / "cfg" / "models").resolve())]
    assert model_path("my_sersic") == tmp_path.resolve() / "cfg" / "models" / "my_sersic.yaml"


def test_run_with_a_user_model(tmp_path, capsys):
    """Workers (processes of their own) find the model too, for the fit and the mosaic."""
    defaults = _user_model(tmp_path)
    images, psf_args = write_tiny_field(tmp_path)
    code = main(["run", "--images", str(images), "--out", str(tmp_path / "run"), "--config",
                 str(defaults), "--model", "my_sersic", "--workers", "1", "--tile-size", "10",
                 "--overlap", "2", *psf_args])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    header = fits.getheader(tmp_path / "run" / "catalog.fits", 1)
    assert header["MODEL"] == "my_sersic"
    assert (tmp_path / "run" / "mosaic_F200W.png").exists()
