"""Shared fixtures: a small simulated field and a real local Dask cluster."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (fieldfiles)
os.environ.setdefault("MPLBACKEND", "Agg")

SMALL_SIZE = 16.0  # arcsec: 400 x 400 detection pixels, 2 x 2 tiles of 256 px cores


@pytest.fixture(scope="session")
def small_field(tmp_path_factory):
    """A GalSim field, 3 bands (one on the 0.02" grid), sources on core borders."""
    pytest.importorskip("galsim")
    from dja_sepp.demo import border_positions
    from dja_sepp.sim import simulate_field
    out = tmp_path_factory.mktemp("small_field")
    return simulate_field(out / "images", field="tst", size_arcsec=SMALL_SIZE,
                          bands=("F200W", "F277W", "F444W"), n_galaxies=40, n_stars=4, seed=3,
                          extra_positions=border_positions(SMALL_SIZE), blank=("F200W", 0.85))


@pytest.fixture(scope="session")
def dask_client():
    """Two single-threaded worker processes on 127.0.0.1 (a real scheduler)."""
    from distributed import Client, LocalCluster
    from dja_sepp.deploy.cluster import THREAD_ENV
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", env=THREAD_ENV) as cluster, Client(cluster) as client:
        yield client
