"""Safe defaults: a local cluster listens on 127.0.0.1 only, output files
honour the umask, no secret of the configuration reaches a file of the run.
Real scheduler and worker processes on 127.0.0.1."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from dja_sepp.cli import main
from dja_sepp.io.store import RunStore
from fieldfiles import gaussian_psf_args, write_field

SECRET = "s3cr3t-T0KEN-do-not-write"


def _listening(pid: int) -> dict[int, str]:
    """port -> address of the listening TCP sockets of a process."""
    import psutil
    return {c.laddr.port: c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_local_cluster_listens_on_loopback_only():
    """The dashboard used to listen on 0.0.0.0 while the printed link said 127.0.0.1."""
    from urllib.parse import urlparse
    from dja_sepp.deploy import cluster_client
    cfg = {"kind": "local", "n_workers": 1, "worker_env": {"DJA_SEPP_TEST_VAR": "yes"}}
    with cluster_client(cfg) as client:
        assert "127.0.0.1" in client.dashboard_link
        # this process may hold other clusters (test fixtures): only this one's ports
        ours = {urlparse(client.dashboard_link).port, urlparse(client.scheduler.address).port}
        driver = {p: ip for p, ip in _listening(os.getpid()).items() if p in ours}
        assert set(driver) == ours and set(driver.values()) == {"127.0.0.1"}, driver
        for pid in client.run(os.getpid).values():   # worker and its nanny's sockets
            assert set(_listening(pid).values()) <= {"127.0.0.1"}
        assert list(client.run(os.getenv, "DJA_SEPP_TEST_VAR").values()) == ["yes"]


def test_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        RunStore(tmp_path).write_text("a.txt", "x")
        os.umask(0o077)
        RunStore(tmp_path).write_text("b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


@pytest.mark.slow
def test_a_secret_in_the_config_is_never_written(dask_client, tmp_path, capsys):
    images = write_field(tmp_path / "images", seed=5)
    psf_args = gaussian_psf_args(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"cluster:\n  worker_env:\n    AWS_SECRET_ACCESS_KEY: {SECRET}\n")
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        code = main(["-v", "run", "--images", str(images), "--out", str(out), "--config", str(cfg),
                     "--no-mosaic", "--cluster", dask_client.scheduler.address, *psf_args])
    finally:
        os.umask(old)
    printed = capsys.readouterr()
    assert code == 0, printed
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "run.yaml" for p in files) and any(p.name == "summary.json" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert SECRET not in printed.out + printed.err
    assert "AWS_SECRET_ACCESS_KEY" in (out / "run.yaml").read_text()  # its name, to give it again


def test_plots_never_switch_the_callers_matplotlib_backend(tmp_path):
    """Library code used to call matplotlib.use("Agg") (a notebook's backend changed)."""
    import matplotlib
    from dja_sepp.io.field import Field
    from dja_sepp.tiling import make_tiles
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        fld = Field.from_directory(write_field(tmp_path / "images"))
        make_tiles(fld, 3.0, 0.5, 64).plot(tmp_path / "tiles.png", np.zeros(fld.detection.shape))
        assert matplotlib.get_backend() == "pdf" and (tmp_path / "tiles.png").stat().st_size > 0
    finally:
        matplotlib.use(before)


def test_deploy_modules_have_no_import_cycle():
    """ec2.py and hpc.py imported THREAD_ENV from cluster.py, which imports them."""
    import ast
    from pathlib import Path
    import dja_sepp.deploy as deploy
    folder = Path(deploy.__file__).parent
    for name in ("ec2.py", "hpc.py", "env.py"):
        tree = ast.parse((folder / name).read_text())
        sources = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "cluster" not in sources, name
