"""Data where it lives: a field read from an S3 bucket and the whole run
directory (tiles, catalogs, mosaic.zarr) written there, through s3fs against
moto's S3 API served on 127.0.0.1, with real scheduler/worker processes."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SMALL_SIZE
from dja_sepp import run
from dja_sepp.demo import demo_tiling
from dja_sepp.io.store import RunStore
from dja_sepp.mosaic import open_band

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-never-written-7f3a"
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": SECRET,
               "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"}}
    import boto3
    import s3fs
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key=SECRET).create_bucket(Bucket="dja")
    fs = s3fs.S3FileSystem(**options)
    yield fs, options
    server.stop()


@pytest.fixture(scope="module")
def s3_run(s3, small_field, dask_client, tmp_path_factory):
    fs, options = s3
    for path in small_field.images_dir.iterdir():
        fs.put(str(path), f"dja/field/{path.name}")
    psfs = {}
    for band, path in small_field.psf_paths.items():   # the PSFs live in the bucket too
        fs.put(str(path), f"dja/psf/{path.name}")
        psfs[band.upper()] = f"s3://dja/psf/{path.name}"
    # the credentials come from the configuration (field.storage_options)
    cfg = {"tiling": demo_tiling(SMALL_SIZE), "fit": {"passes": 1},
           "field": {"cache_dir": str(tmp_path_factory.mktemp("cache")), "storage_options": options}}
    result = run("s3://dja/field", "s3://dja/run", config=cfg, psfs=psfs, cluster=dask_client,
                 progress=False)
    assert result.complete, result.failed
    return result, options


def test_run_reads_the_bucket_and_writes_its_outputs_there(s3, s3_run):
    fs, _ = s3
    result, options = s3_run
    assert result.complete and result.catalog_path == "s3://dja/run/catalog.fits"
    names = set(p.split("/")[-1] for p in fs.ls("dja/run"))
    assert {"catalog.fits", "catalog.parquet", "summary.json", "run.yaml", "tiles.reg",
            "mosaic.zarr"} <= names
    assert len(fs.ls("dja/run/tiles")) == result.n_tiles
    catalog = RunStore("s3://dja/run", options).read_table("catalog.fits")
    assert len(catalog) > 30 and catalog.meta["COMPLETE"]


def test_no_credential_is_written_anywhere_in_the_run(s3, s3_run):
    fs, _ = s3
    result, _ = s3_run
    written = [p for p in fs.find("dja/run") if not p.split("/")[-1].startswith(("c/", "zarr"))]
    assert any(p.endswith("run.yaml") for p in written)
    for path in written:
        if path.endswith((".yaml", ".json", ".reg", ".txt", ".log")):
            assert SECRET not in fs.cat(path).decode(), path
    import yaml
    saved = yaml.safe_load(fs.cat("dja/run/run.yaml"))
    assert saved["field"]["storage_options"] == {}
    assert saved["run"]["psf_files"]["F444W"].startswith("s3://dja/psf/")


def test_mosaic_in_the_bucket_reads_back(s3_run, small_field):
    result, options = s3_run
    ds = open_band(result.mosaic_path, "F444W", storage_options=options)
    model = ds["model"].values
    assert model.shape == (400, 400) and np.isfinite(model).all()
    assert np.nanmax(model) > 1.0     # sources were rendered
    assert ds["model"].encoding["chunks"] == (256, 256)
