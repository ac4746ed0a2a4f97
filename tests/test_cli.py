"""Command line: clear one-line errors on bad input, exit codes, config init."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from dja_sepp.cli import main
from fieldfiles import write_field, write_image


def _run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.fixture
def images(tmp_path):
    return write_field(tmp_path / "images")


def test_missing_weight(capsys, images, tmp_path):
    (images / "tst-f444w-clear_drc_wht.fits").unlink()
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"))
    assert code == 2
    assert err[-1].startswith("dja-sepp: error:") and "tst-f444w-clear_drc_sci.fits: no weight" in err[-1]


def test_no_wcs(capsys, images, tmp_path):
    write_image(images / "tst-f200w-clear_drc_sci.fits", np.zeros((320, 448)), None, "F200W")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"))
    assert code == 2 and "tst-f200w-clear_drc_sci.fits: no celestial WCS" in err[-1]


def test_inconsistent_footprints(capsys, tmp_path):
    images = write_field(tmp_path / "images")
    other = write_field(tmp_path / "other", det_shape=(100, 224), bands=(("F444W", 1),))
    for kind in ("sci", "wht"):
        (other / f"tst-f444w-clear_drc_{kind}.fits").replace(images / f"tst-f444w-clear_drc_{kind}.fits")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"))
    assert code == 2 and "tst-f444w-clear_drc_sci.fits: footprint" in err[-1]


def test_corrupt_gz(capsys, tmp_path):
    images = write_field(tmp_path / "images", gz=True)
    path = images / "tst-ir_drc_wht.fits.gz"
    path.write_bytes(path.read_bytes()[:200])
    code, err = _run_cli(capsys, "tiles", "--images", str(images), "--out", str(tmp_path / "t"))
    assert code == 2 and "tst-ir_drc_wht.fits.gz: cannot read" in err[-1]


def test_unknown_model(capsys, images, tmp_path):
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "run"),
                         "--model", "sersic_rg5")
    assert code == 2 and "unknown model 'sersic_rg5'" in err[-1]
    assert not (tmp_path / "run" / "catalog.fits").exists()


def test_unwritable_output(capsys, images, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(blocker / "run"))
    assert code == 2 and "a_file/run: output directory is not writable" in err[-1]


def test_bad_config_file(capsys, images, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("detection:\n  treshold: 2\n")
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "r"),
                         "--config", str(cfg))
    assert code == 2 and "cfg.yaml:2: unknown configuration key 'detection.treshold'" in err[-1]


def test_tiles_command_writes_regions(capsys, images, tmp_path):
    code = main(["tiles", "--images", str(images), "--out", str(tmp_path / "t"),
                 "--tile-size", "3", "--overlap", "0.5"])
    assert code == 0
    assert "12 tiles (3 x 4, core 64 px" in capsys.readouterr().out  # 3" = 75 px -> one 64 px unit
    assert (tmp_path / "t" / "tiles.reg").exists() and (tmp_path / "t" / "tiles.png").exists()


def test_config_init(capsys, tmp_path):
    assert main(["config", "init", str(tmp_path / "cfg")]) == 0
    assert (tmp_path / "cfg" / "defaults.yaml").exists()


def test_console_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dja_sepp", "run", "--images", str(tmp_path / "none"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"dja-sepp: error: {tmp_path / 'none'}: not a folder"


@pytest.mark.parametrize("argv, words", [
    (["--workers", "-1"], "--workers: must be a whole number of at least 1, not '-1'"),
    (["--workers", "0"], "--workers: must be a whole number of at least 1, not '0'"),
    (["--tile-size", "inf"], "--tile-size: must be a finite number, not 'inf'"),
    (["--tile-size", "nan"], "--tile-size: must be a finite number"),
    (["--overlap", "-3"], "--overlap: must not be negative"),
    (["--cluster", "slurmm"], "'slurmm' is neither a cluster kind"),
])
def test_bad_run_options_are_refused_up_front(capsys, images, tmp_path, argv, words):
    """-1 workers used to hang, 0 to start one per core, inf to dump a traceback."""
    with pytest.raises(SystemExit) as info:
        main(["run", "--images", str(images), "--out", str(tmp_path / "run"), *argv])
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cluster_kind_is_not_an_address():
    from dja_sepp.cli import _cluster, build_parser
    args = build_parser().parse_args(["run", "--cluster", "slurm"])
    assert _cluster(args) == {"cluster__kind": "slurm"}
    args = build_parser().parse_args(["run", "--cluster", "127.0.0.1:8786"])
    assert _cluster(args) == {"cluster": "127.0.0.1:8786"}


def test_overlap_larger_than_the_field_is_refused(capsys, images, tmp_path):
    """Several tiles whose halo is wider than the field would each fit the
    whole field: refused (one tile covering the field is only warned about)."""
    code, err = _run_cli(capsys, "tiles", "--images", str(images), "--out", str(tmp_path / "t"),
                         "--tile-size", "3", "--overlap", "60")
    assert code == 2 and "tiling.overlap 60\" is larger than the field tst" in err[-1]
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "r"),
                         "--tile-size", "3", "--overlap", "60")
    assert code == 2 and "each of its 12 tiles would fit the whole field" in err[-1]
    assert not (tmp_path / "r" / "run.yaml").exists()


@pytest.mark.parametrize("flag", [["--model", "B+D"], ["--psf", "F200W=x.fits"], ["--tile-size", "9"],
                                  ["--config", "c.yaml"], ["--images", "."]])
def test_resume_refuses_options_that_change_the_result(capsys, tmp_path, flag):
    code, err = _run_cli(capsys, "run", "--resume", str(tmp_path), *flag)
    assert code == 2 and f"{flag[0]} would change its result" in err[-1]


def test_bad_psf_option(capsys, images, tmp_path):
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "r"),
                         "--psf", "F200W")
    assert code == 2 and "--psf F200W: expected BAND=FILE" in err[-1]


def test_truncated_band_is_found_before_any_tile(capsys, images, tmp_path):
    path = images / "tst-f444w-clear_drc_sci.fits"
    path.write_bytes(path.read_bytes()[: 2880 * 3 + 50000])
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "r"))
    assert code == 2 and "tst-f444w-clear_drc_sci.fits: truncated FITS file" in err[-1]
    assert not (tmp_path / "r" / "tiles").exists()


def _psf_file(path, scale, data=None):
    yy, xx = np.mgrid[-12:13, -12:13]
    data = np.exp(-(xx ** 2 + yy ** 2) / 8.0) if data is None else data
    hdu = fits.PrimaryHDU(data.astype(np.float32))
    hdu.header["PIXSCALE"] = scale
    hdu.writeto(path)
    return path


@pytest.mark.parametrize("kind", ["text", "nan", "truncated"])
def test_bad_psf_file_is_found_before_any_tile(capsys, images, tmp_path, kind):
    bad = tmp_path / "bad_psf.fits"
    if kind == "text":
        bad.write_text("not a FITS file\n")
    elif kind == "nan":
        _psf_file(bad, 0.04, np.full((25, 25), np.nan))
    else:
        _psf_file(bad, 0.04)
        bad.write_bytes(bad.read_bytes()[:3000])
    good = _psf_file(tmp_path / "good.fits", 0.02)
    code, err = _run_cli(capsys, "run", "--images", str(images), "--out", str(tmp_path / "r"),
                         "--psf", f"F444W={bad}", "--psf", f"F200W={good}")
    assert code == 2 and f"{bad}: " in err[-1] and "F444W" in err[-1]
    assert not (tmp_path / "r" / "tiles").exists()


def test_storage_options_on_the_command_line(capsys, images, tmp_path, monkeypatch):
    """Remote images and run directory through --storage-option (there was no
    CLI flag); the credentials are used and never printed or written."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer
    import boto3
    import s3fs
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(var, raising=False)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="Sekr1t-0777").create_bucket(Bucket="dja")
        fs = s3fs.S3FileSystem(key="k", secret="Sekr1t-0777", client_kwargs={"endpoint_url": endpoint})
        for path in images.iterdir():
            fs.put(str(path), f"dja/field/{path.name}")
        opts = ["--storage-option", "key=k", "--storage-option", "secret=Sekr1t-0777",
                "--storage-option", f"client_kwargs={{endpoint_url: {endpoint}, region_name: us-east-1}}"]
        code, err = _run_cli(capsys, "tiles", "--images", "s3://dja/field", "--out", "s3://dja/t",
                             "--tile-size", "3", "--overlap", "0.5", "--field", "tst", *opts)
        assert code == 0, err
        assert fs.exists("dja/t/tiles.reg") and fs.exists("dja/t/tiles.png")
        assert "Sekr1t" not in " ".join(err)
        assert all(b"Sekr1t" not in fs.cat(p) for p in fs.find("dja/t"))
    finally:
        server.stop()


def test_storage_option_item_is_not_echoed(capsys, images, tmp_path):
    code, err = _run_cli(capsys, "tiles", "--images", str(images), "--out", str(tmp_path / "t"),
                         "--storage-option", "Sekr1t-0777")
    assert code == 2 and "--storage-option number 1: expected KEY=VALUE" in err[-1]
    assert "Sekr1t" not in err[-1]
