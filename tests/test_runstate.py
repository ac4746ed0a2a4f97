"""Run-state integrity: a bad re-run never destroys a finished run. Real
scheduler and worker processes on 127.0.0.1 (the session's ``dask_client``)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from conftest import SMALL_SIZE
from dja_sepp import run
from dja_sepp.cli import main
from dja_sepp.demo import demo_tiling
from dja_sepp.pipeline.driver import resume

pytestmark = pytest.mark.slow


def _psfs(sim):
    return {b.upper(): str(p) for b, p in sim.psf_paths.items()}


def _config(**extra) -> dict:
    cfg = {"tiling": demo_tiling(SMALL_SIZE), "fit": {"passes": 1}, "mosaic": {"enabled": False},
           "cluster": {"retries": 0}}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def tree_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(small_field, dask_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    result = run(small_field.images_dir, out, config=_config(), psfs=_psfs(small_field),
                 cluster=dask_client, progress=False)
    assert result.complete
    return out, result


@pytest.mark.parametrize("text", ["detection:\n  thresh: high\n", "merge:\n  match_radius: abc\n",
                                  "tiling: 5\n", "cluster:\n  retries: two\n"])
def test_bad_value_leaves_finished_run_byte_identical(finished, small_field, tmp_path, capsys, text):
    out, _ = finished
    before = tree_hashes(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    psf_args = [a for b, p in _psfs(small_field).items() for a in ("--psf", f"{b}={p}")]
    code = main(["run", "--images", str(small_field.images_dir), "--out", str(out),
                 "--config", str(bad), *psf_args])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and f"{bad}:" in err and text.split(":")[0] in err
    assert tree_hashes(out) == before


def test_failing_rerun_keeps_finished_run(finished, small_field, dask_client):
    """A re-run whose every tile fails (valid config, failure at run time)
    leaves the complete catalog, ok statuses and run.yaml as they were; its own
    state goes to RUN/attempt. A resume then finishes from the kept run."""
    out, _ = finished
    before = tree_hashes(out)
    kept = Table.read(out / "catalog.fits")
    tiles = [p.name for p in (out / "tiles").iterdir()]
    bad = _config(debug={"needs_resource": {t: "nowhere" for t in tiles}},
                  detection={"thresh": 0.9})  # changed: no tile is reused, all fail
    second = run(small_field.images_dir, out, config=bad, psfs=_psfs(small_field),
                 cluster=dask_client, progress=False)
    assert not second.complete and second.kept_previous == str(out)
    after = tree_hashes(out)
    assert {k: v for k, v in after.items() if not k.startswith("attempt/")} == before
    assert (out / "attempt" / "run.yaml").exists() and second.run_dir == str(out / "attempt")
    assert "kept as it was" in second.summary()
    third = resume(str(out), cluster=dask_client, progress=False)
    assert third.complete and third.n_skipped == len(tiles) and not (out / "attempt").exists()
    assert third.catalog_path == f"{out}/catalog.fits"
    # merged again from the kept tiles: the same rows (the header's DATE is the merge's own)
    again = Table.read(out / "catalog.fits")
    assert again.colnames == kept.colnames and len(again) == len(kept)
    for col in again.colnames:
        assert np.array_equal(np.asarray(again[col]), np.asarray(kept[col]), equal_nan=True) \
            if again[col].dtype.kind == "f" else (again[col] == kept[col]).all(), col


def test_changed_pixels_at_the_same_path_are_recomputed(small_field, dask_client, tmp_path,
                                                        monkeypatch):
    """New pixels written over a band (same path, size and mtime) make every
    tile stale; run.yaml holds absolute paths, so a resume from another
    folder reads the same images."""
    import gzip
    import shutil
    import yaml
    from astropy.io import fits
    from astropy.table import Table
    images = tmp_path / "images"
    shutil.copytree(small_field.images_dir, images)
    monkeypatch.chdir(tmp_path)
    first = run("images", "run", config=_config(), psfs=_psfs(small_field), cluster=dask_client,
                progress=False)
    assert first.complete
    a = Table.read(first.catalog_path)
    recorded = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["run"]
    assert recorded["images"] == str(images)
    path = next(images.glob("*-f444w-clear_drc_sci.fits*"))
    with fits.open(path) as hdul:
        hdul[0].data = hdul[0].data * 2.0  # every source twice as bright in F444W
        hdul.writeto(tmp_path / "new.fits")
    with open(tmp_path / "new.fits", "rb") as src, \
            (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as dst:
        shutil.copyfileobj(src, dst)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # "images" here names nothing: the record must be absolute
    second = resume(str(tmp_path / "run"), cluster=dask_client, progress=False)
    assert second.complete and second.n_skipped == 0
    b = Table.read(second.catalog_path)
    ratio = np.nanmedian(np.asarray(b["FLUX_MODEL_F444W"]) / np.asarray(a["FLUX_MODEL_F444W"]))
    assert ratio == pytest.approx(2.0, rel=0.05)


def test_resume_honours_workers_and_no_mosaic(finished, capsys):
    """--resume used to ignore --workers and --no-mosaic silently."""
    import yaml
    out, _ = finished
    code = main(["run", "--resume", str(out), "--workers", "1", "--no-mosaic"])
    assert code == 0, capsys.readouterr().err
    cfg = yaml.safe_load((out / "run.yaml").read_text())
    assert cfg["cluster"]["n_workers"] == 1 and cfg["mosaic"]["enabled"] is False


def test_a_band_unusable_everywhere_is_reported(dask_client, tmp_path, capsys):
    """F200W with zero weight over the whole field: warned on the console,
    recorded in summary.json and the catalog header, exit status 3."""
    import json
    from astropy.io import fits
    from fieldfiles import gaussian_psf_args, write_field
    images = write_field(tmp_path / "images", seed=4,
                         blank_region=("F200W", (slice(None), slice(None))))
    psf_args = gaussian_psf_args(tmp_path)
    out = tmp_path / "run"
    code = main(["run", "--images", str(images), "--out", str(out), "--no-mosaic",
                 "--cluster", dask_client.scheduler.address, *psf_args])
    printed = capsys.readouterr()
    assert code == 3, printed
    assert "WARNING: band F200W is unusable over the whole field (zero weight everywhere)" in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["unusable_bands"] == {"F200W": "zero weight everywhere"}
    assert fits.getheader(out / "catalog.fits", 1)["UNUSABLE"] == "F200W"
