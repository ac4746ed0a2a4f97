"""A self-describing catalog: flux units, zero point, provenance (issue 17)."""
from __future__ import annotations

import pytest
import yaml
from astropy.io import fits
from astropy.table import Table

import dja_sepp
from dja_sepp.mosaic import export_fits
from dja_sepp.settings import config_hash
from newcomer import write_tiny_field

# a header card astropy has to cut is a warning on every run: an error here
pytestmark = pytest.mark.filterwarnings("error::astropy.io.fits.verify.VerifyWarning")


def _psfs(args):
    return dict(a.split("=", 1) for a in args[1::2])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, dask_client):
    folder = tmp_path_factory.mktemp("tiny")
    images, psf_args = write_tiny_field(folder)
    result = dja_sepp.run(images, folder / "run", psfs=_psfs(psf_args), cluster=dask_client,
                          progress=False, tiling__tile_size=6.4, tiling__overlap=2.0)
    assert result.complete, result.summary()
    return result


def test_flux_columns_carry_the_image_unit(tiny_run):
    cat = Table.read(tiny_run.catalog_path)
    assert len(cat) == 4
    for col in ("FLUX_MODEL_F200W", "FLUX_MODEL_F200W_err", "FLUX_MODEL_F444W", "FLUX_ISO",
                "FLUXERR_AUTO"):
        assert cat[col].unit is not None and cat[col].unit.to("nJy") == pytest.approx(10.0), col
    assert str(cat["FLUX_RADIUS"].unit) == "pix"      # not a flux: its own unit kept
    assert str(cat["MAG_MODEL_F444W"].unit) == "mag"


def test_header_describes_the_catalog(tiny_run):
    header = fits.getheader(tiny_run.catalog_path, 1)
    assert header["BUNIT"] == "10*nJy"
    assert header["ZP"] == pytest.approx(28.9) and header["MAGZERO"] == pytest.approx(28.9)
    assert header["SWVERSN"] == dja_sepp.__version__
    assert dja_sepp.__version__ in header["CREATOR"]
    assert header["DATE"].startswith("20")
    assert header["ENGINE"] == "builtin" and header["MODEL"]
    cfg = yaml.safe_load(open(f"{tiny_run.run_dir}/run.yaml"))
    assert header["CFGHASH"] == config_hash(cfg)
    for stale in ("TILE_ID", "DROPPED", "NOISECOR"):
        assert stale not in header, stale


def test_rejected_catalog_is_described_too(tiny_run):
    header = fits.getheader(tiny_run.catalog_path.replace(".fits", "_rejected.fits"), 1)
    assert "CFGHASH" in header and "TILE_ID" not in header


def test_mosaic_exports_carry_bunit(tiny_run, tmp_path):
    for path in export_fits(tiny_run.mosaic_path, "F200W", tmp_path):
        header = fits.getheader(path)
        assert header["BUNIT"] == "10*nJy"
        assert header["MAGZERO"] == pytest.approx(28.9)


def _readme():
    from pathlib import Path
    return (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_catalog_column_is_in_the_readme(tiny_run):
    """The README's column table names every column of a real catalog."""
    import re
    text = _readme()
    table = text[text.index("### Catalog columns"):text.index("### Detection and clean catalogs")]
    documented = set(re.findall(r"`([A-Z0-9_/{}]+?)`", table))
    for line in table.splitlines():   # "| `X_MODEL`, `Y_MODEL` (+`_err`) | ..." rows
        first = line.split("|")[1] if line.startswith("|") else ""
        if "(+`_err`)" in first:
            documented.update(n + "_err" for n in re.findall(r"`([A-Z_{}0-9]+)`", first))
    cat = Table.read(tiny_run.catalog_path)
    missing = []
    for col in cat.colnames:
        generic = re.sub(r"_(F200W|F444W)(?=_err$|$)", "_{BAND}", col)
        if col not in documented and generic not in documented:
            missing.append(col)
    assert not missing


def test_no_words_that_assume_the_project_history():
    from pathlib import Path
    from dja_sepp.settings import config_dir
    texts = {"README.md": _readme()}
    texts.update({str(p): p.read_text() for p in Path(config_dir()).rglob("*.yaml")})
    for name, text in texts.items():
        for word in ("predecessor", "seed_models", "issue's target"):
            assert word not in text.lower(), (name, word)


def test_rendering_a_catalog_read_from_fits_is_silent(tiny_run, tmp_path):
    """FITS reads NaN as masked entries; rendering them used to warn once per row
    ('converting a masked element to nan', fit/catalog.py) on every clean run."""
    import warnings

    import numpy as np
    from dja_sepp.mosaic import build_mosaics
    from dja_sepp.pipeline.driver import rebuild_grid
    _, cfg, fld, grid = rebuild_grid(tiny_run.run_dir)
    cat = Table.read(tiny_run.catalog_path)
    cat["FLUX_MODEL_F444W"][0] = np.nan     # a row without a flux in one band
    cat.write(tmp_path / "nan.fits")
    cat = Table.read(tmp_path / "nan.fits")
    assert cat.has_masked_values
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_mosaics(str(tmp_path), fld, grid, cat, cfg["run"]["psf_files"], cfg["fit"]["models"][0])
