"""A run directory and DJA-format catalogs made from one simulated truth, for
the report tests (issue 15), without any fitting.

The truth is a population of sources on a 40" field; the run's catalogs hold
the detected ones (position noise 0.03") with shapes chosen to hit every flag
rule (n at 0.36 and the bounds, q >= 0.99, disk q at 0.5 / bounds, FLAGS
bits, faint rows), plus spurious rows far from any true source and "twins"
(a second row of ours 0.15" from a true source). The DJA catalog is written
from the same truth (:mod:`dja_sepp.sim.dja`) with "split" rows (a second DJA
source 0.12" from one of ours) and DJA-only rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from astropy.table import Table

from dja_sepp.fit.flags import FitFlag
from dja_sepp.sim.dja import dja_catalogs_from_truth

BANDS = ("F200W", "F277W", "F444W")
RA0, DEC0 = 53.16, -27.78
N_TRUE = 240


def truth_table(seed: int = 5) -> Table:
    rng = np.random.default_rng(seed)
    # a jittered grid: true sources at least ~2" apart, so matches are unambiguous
    side = int(np.ceil(np.sqrt(N_TRUE)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    x = (gx.ravel()[:N_TRUE] + rng.uniform(-0.2, 0.2, N_TRUE)) * 2.4 - 18
    y = (gy.ravel()[:N_TRUE] + rng.uniform(-0.2, 0.2, N_TRUE)) * 2.4 - 18
    t = Table()
    t["RA"] = RA0 + x / 3600 / np.cos(np.radians(DEC0))
    t["DEC"] = DEC0 + y / 3600
    mag = rng.uniform(22, 29.5, N_TRUE)
    for k, band in enumerate(BANDS):
        t[f"FLUX_{band}"] = 10 ** (-0.4 * (mag + 0.1 * k - 28.9))
    t["N"] = rng.uniform(0.5, 5, N_TRUE)
    t["BT0"] = rng.uniform(0, 1, N_TRUE)
    return t


def _offset(ra, dec, dx, dy):
    return ra + dx / 3600 / np.cos(np.radians(dec)), dec + dy / 3600


def make_run(folder: Path, field: str = "gds", seed: int = 5) -> dict:
    """Write a run directory and DJA files into ``folder``; returns what the
    tests need to know (paths, which truth rows are detected, twins, splits)."""
    rng = np.random.default_rng(seed + 1)
    truth = truth_table(seed)
    detected = np.flatnonzero(rng.random(N_TRUE) < 0.85)
    run = folder / "run"
    run.mkdir(parents=True)
    # our rows: detected true sources, then twins, then spurious rows
    twins_of = detected[:4]
    ra, dec = _offset(np.asarray(truth["RA"])[detected], np.asarray(truth["DEC"])[detected],
                      rng.normal(0, 0.03, len(detected)), rng.normal(0, 0.03, len(detected)))
    tra, tdec = _offset(np.asarray(truth["RA"])[twins_of], np.asarray(truth["DEC"])[twins_of],
                        np.full(len(twins_of), 0.15), np.zeros(len(twins_of)))
    n_spur = 6
    sra = RA0 + rng.uniform(-28, -25, n_spur) / 3600   # outside the true sources' grid
    sdec = DEC0 + rng.uniform(-20, 20, n_spur) / 3600
    ra, dec = np.concatenate([ra, tra, sra]), np.concatenate([dec, tdec, sdec])
    n = len(ra)
    src = np.concatenate([detected, twins_of, np.full(n_spur, -1)])   # truth row or -1
    cat = Table()
    cat["ID"] = np.arange(1, n + 1)
    cat["TILE_ID"] = np.array(["r00c00"] * n)
    cat["RA"], cat["DEC"] = ra, dec
    cat["RA_MODEL"], cat["DEC_MODEL"] = _offset(ra, dec, rng.normal(0, 0.01, n), 0 * ra)
    flux = np.where(src >= 0, np.asarray(truth["FLUX_F277W"])[np.maximum(src, 0)], 5.0)
    cat["FLUX_AUTO"] = flux * rng.normal(1, 0.05, n)
    cat["FLUXERR_AUTO"] = np.full(n, 2.0)
    for band in BANDS:
        f = np.where(src >= 0, np.asarray(truth[f"FLUX_{band}"])[np.maximum(src, 0)], 5.0)
        f = f * rng.normal(1, 0.03, n)
        cat[f"FLUX_MODEL_{band}"] = f
        cat[f"MAG_MODEL_{band}"] = np.where(f > 0, -2.5 * np.log10(np.abs(f)) + 28.9, np.nan)
    cat["RADIUS"] = rng.uniform(0.05, 0.6, n)
    cat["AXRATIO"] = rng.uniform(0.2, 0.95, n)
    cat["SERSIC"] = rng.uniform(0.5, 6, n)
    cat["FLAGS"] = np.zeros(n, np.int32)
    cat["CHI2_REDUCED"] = rng.uniform(0.8, 3, n)
    cat["N_ITER"] = rng.integers(5, 30, n)
    cat["MODEL"] = np.array(["sersic_rg4"] * n)
    # every artefact rule, a few rows each
    cat["SERSIC"][0:3] = 0.36
    cat["SERSIC"][3:5] = 8.4
    cat["SERSIC"][5:7] = 0.3
    cat["AXRATIO"][7:10] = 0.995
    cat["FLAGS"][10:12] = int(FitFlag.AT_BOUND)
    cat["FLAGS"][12] = int(FitFlag.ERROR)
    cat["FLAGS"][13] = int(FitFlag.BLENDED)            # not an artefact bit
    cat["SERSIC"][14] = np.nan                          # a point-source row: no shape
    cat["MODEL"][14] = "point"
    cat["MAG_MODEL_F277W"][15:18] = 30.2                # beyond GDS's 29.93
    cat.write(run / "catalog.fits")
    # bulge + disk: the same detections minus a few rows
    bd = cat["ID", "TILE_ID", "RA", "DEC", "RA_MODEL", "DEC_MODEL", "FLUX_AUTO", "FLUXERR_AUTO",
             *[f"{p}_MODEL_{b}" for b in BANDS for p in ("FLUX", "MAG")], "FLAGS",
             "CHI2_REDUCED"]
    bd["DISK_AXRATIO"] = rng.uniform(0.15, 0.95, n)
    bd["BULGE_AXRATIO"] = rng.uniform(0.3, 1, n)
    bd["DISK_RADIUS_deg"] = rng.uniform(0.1, 0.8, n) / 3600
    bd["BULGE_RADIUS_deg"] = rng.uniform(0.02, 0.2, n) / 3600
    for band in BANDS:
        bd[f"B/T_{band}"] = rng.uniform(0, 1, n)
    bd["FLAGS"] = np.zeros(n, np.int32)
    bd["DISK_AXRATIO"][20:23] = 0.5
    bd["DISK_AXRATIO"][23:25] = 0.1
    bd["DISK_AXRATIO"][25] = 0.99995
    bd["FLAGS"][26:28] = int(FitFlag.BULGE_LARGER)
    bd_keep = np.ones(n, bool)
    bd_keep[[30, 31, 32]] = False
    bd = bd[bd_keep]
    bd.write(run / "catalog_B+D.fits")
    cfg = {"fit": {"models": ["sersic_rg4", "B+D"]},
           "run": {"images": str(folder / "images"), "field": field, "bands": list(BANDS),
                   "psf_files": {}}}
    (run / "run.yaml").write_text(yaml.safe_dump(cfg))
    (run / "summary.json").write_text(json.dumps({
        "complete": True, "n_tiles": 1, "n_ok": 1, "n_reused": 0, "failed": {},
        "timings": {"setup": 1.0, "tiles": 9.0, "merge": 0.5, "total": 10.5},
        "merge": {"n_input": n + 2, "n_output": n, "n_duplicates": 2, "n_outside_core": 0},
        "catalogs": {}, "noise_correlation": {"F277W": 1.4}, "unusable_bands": {}}))
    (run / "tiles" / "r00c00").mkdir(parents=True)
    (run / "tiles" / "r00c00" / "status.json").write_text(json.dumps(
        {"state": "ok", "dropped_bands": {"F200W": "all weights zero"}}))
    # DJA: the truth, "split" rows 0.12" from some of ours, DJA-only rows elsewhere
    split_of = detected[40:43]
    split = truth[split_of]
    split["RA"], split["DEC"] = _offset(np.asarray(split["RA"]), np.asarray(split["DEC"]),
                                        np.zeros(3), np.full(3, 0.12))
    from astropy.table import vstack
    dja_truth = vstack([truth, split])
    extent = (RA0 + 28 / 3600, RA0 + 31 / 3600, DEC0 - 20 / 3600, DEC0 + 20 / 3600)
    phot, zout = dja_catalogs_from_truth(dja_truth, bands=BANDS, seed=seed, jitter=0.02,
                                         n_extra=5, extent=extent)
    dja = folder / "dja"
    dja.mkdir()
    phot.write(dja / f"{field}-fix_phot_apcorr.fits")
    zout.write(dja / f"{field}_zout.fits")
    return {"run": run, "phot": dja / f"{field}-fix_phot_apcorr.fits",
            "zout": dja / f"{field}_zout.fits", "catalog": cat, "bd": bd, "src": src,
            "detected": detected, "twins_of": twins_of, "split_rows": N_TRUE + np.arange(3),
            "split_of": split_of, "n_dja": len(phot)}
