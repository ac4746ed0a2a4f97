"""A clean catalog, end to end, judged per *true* object.

A JWST-like field (250 galaxies per arcmin^2 to mag 26.5, so that many are
measured at S/N 10-50 and some are extended, with realistic sizes, blends and
number counts; stars with
six diffraction spikes, drizzle-like correlated noise) goes through the whole
run on real scheduler/worker processes; the catalog is scored against the
simulator's truth (:func:`dja_sepp.sim.score.score_catalog`): bright rows are
real objects, no spike fragment survives as a galaxy, stars are points and
extended galaxies are not, nothing found is lost, and the flux errors describe
the real scatter of the fluxes once the noise correlation is measured.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

pytestmark = pytest.mark.slow

SIZE = 24.0        # arcsec, one tile


@pytest.fixture(scope="module")
def scored(dask_client, tmp_path_factory):
    pytest.importorskip("galsim")
    from dja_sepp import run
    from dja_sepp.sim import simulate_field
    from dja_sepp.sim.score import score_catalog
    out = tmp_path_factory.mktemp("field_quality")
    sim = simulate_field(out / "images", field="fq", size_arcsec=SIZE,
                         bands=("F200W", "F277W", "F444W"), density=250.0, mag_limit=26.5, n_stars=8,
                         bright_stars=3, seed=5, blank=None, correlated_noise=1.25)
    psfs = {b.upper(): str(p) for b, p in sim.psf_paths.items()}
    result = run(sim.images_dir, out / "run", psfs=psfs, cluster=dask_client, progress=False,
                 config={"tiling": {"tile_size": 60.0, "overlap": 3.0}, "mosaic": {"enabled": False}})
    cat = Table.read(result.catalog_path)
    truth = Table.read(sim.truth_path)
    return result, cat, truth, score_catalog(cat, truth), sim


def test_bright_rows_are_true_objects_and_spikes_are_not_rows(scored):
    result, cat, truth, score, _ = scored
    assert result.complete
    assert score.n_snr5 >= 20
    assert score.purity >= 0.95, score.purity
    assert score.spike_fragments == 0, score.fragment_rows
    assert score.completeness >= 0.98, score.completeness
    assert score.rows_per_true < 1.3


def test_stars_are_points_and_extended_galaxies_are_not(scored):
    _, _, _, score, _ = scored
    assert score.star_point_fraction >= 0.95
    assert score.galaxy_point_fraction < 0.02


def test_every_detection_is_a_row_or_rejected_with_a_reason(scored):
    result, cat, _, _, _ = scored
    rejected = Table.read(Path(result.catalog_path).with_name("catalog_rejected.fits"))
    reasons = set(np.char.strip(np.asarray(rejected["REJECT_REASON"]).astype(str)))
    assert reasons and reasons <= {"core_threshold", "cleaned", "explained_by_neighbour"}
    assert (np.char.strip(np.asarray(rejected["REJECT_REASON"]).astype(str)) != "").all()


def test_flux_errors_describe_the_scatter_on_correlated_noise(scored):
    _, _, _, score, sim = scored
    assert score.n_pull >= 40
    assert 0.8 <= score.pull_scatter <= 1.25, score.pull_scatter
