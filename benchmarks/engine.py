"""Engine benchmark: cost per source-band, accuracy per S/N, pyimfit side by side.

Part 1 - our engine on GalSim scenes of isolated galaxies (JWST-like PSFs with
spikes, white noise) in 1, 4 and 8 bands on their DJA grids (short-wave bands
on 0.02", long-wave on 0.04"), single-Sersic (``sersic_rg4``) and bulge+disk
(``B+D``) models: core-seconds per source-band (one thread), and accuracy
against truth per S/N bin (magnitude bias and robust scatter, r_e and n
robust scatter, B/T scatter).

Each model and band set is fitted twice: with the simulator's true PSFs and
with PSFs *built by the pipeline* (``dja_sepp.psf.build_psfs``: stars
selected and stacked, encircled energy to large radius, ``EEFRAC``) from a
separate simulated star field with the same optics, as a run would build them.

Part 2 - pyimfit (imfit's Levenberg-Marquardt, C++) and our engine on the
same single-band 64x64 F444W stamps, same PSF (65x65, unit sum), same noise,
both started from the same detection measurements: time per fit and accuracy
against truth.

Targets (issue #3): <= 0.05 core-s per source-band for multi-band Sersic; at
least 20x faster than pyimfit per single-band fit at equal or better accuracy.

Usage: python benchmarks/engine.py [--galaxies 48] [--psf both|truth|built] [--out bench_out/engine]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # core-seconds: one thread

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BAND_SETS = {1: ("F444W",), 4: ("F150W", "F200W", "F277W", "F444W"),
             8: ("F090W", "F115W", "F150W", "F200W", "F277W", "F356W", "F410M", "F444W")}
SIGMA = 0.02          # noise per 0.04" pixel (surface-brightness depth is the same on 0.02")
SPACING = 64          # detection pixels between galaxies


def _config() -> dict:
    from dja_sepp.settings import load_config
    cfg = load_config()
    cfg["detection"]["thresh"] = 1.5
    cfg["fit"]["passes"] = 1
    return cfg


def _scene(n_gal: int, bands, kind: str, seed: int):
    from dja_sepp.bands import is_short_wave
    from dja_sepp.sim.scenes import galaxy_grid, make_scene
    ncols = 8
    nrows = int(np.ceil(n_gal / ncols))
    truth = galaxy_grid(np.random.default_rng(seed), nrows, ncols, SPACING, bands, kind=kind,
                        flux_range=(8.0, 800.0) if kind == "sersic" else (100.0, 1500.0))
    factors = {b: 2 if is_short_wave(b) else 1 for b in bands}
    return make_scene(truth, (nrows * SPACING, ncols * SPACING), factors, SIGMA, seed + 1)


def _accuracy(truth, fits, found, bands, kind: str) -> dict:
    from dja_sepp.sim.scenes import robust_scatter
    ref = bands[-1]
    snr = np.asarray(fits[f"FLUX_MODEL_{ref}"] / fits[f"FLUX_MODEL_{ref}_err"])
    ok = found & (np.asarray(fits["FLAGS"]) & (128 | 256) == 0)
    out = {}
    for name, sel in (("S/N>50", ok & (snr > 50)), ("20-50", ok & (snr > 20) & (snr <= 50)),
                      ("<20", ok & (snr <= 20))):
        if sel.sum() < 3:
            continue
        dmag = -2.5 * np.log10(np.asarray(fits[f"FLUX_MODEL_{ref}"])[sel] / truth[f"FLUX_{ref}"][sel])
        row = {"n": int(sel.sum()), "dmag_median": float(np.median(dmag)),
               "dmag_scatter": robust_scatter(dmag)}
        if kind == "sersic":
            row["re_scatter"] = robust_scatter(np.log(np.asarray(fits["RADIUS"])[sel] / truth["RE"][sel]))
            row["n_scatter"] = robust_scatter(np.log(np.asarray(fits["SERSIC"])[sel] / truth["N"][sel]))
        else:
            row["bt_scatter"] = robust_scatter(np.asarray(fits[f"B/T_{ref}"])[sel] - truth[f"BT_{ref}"][sel])
        out[name] = row
    return out


def built_psfs(bands, out: Path) -> dict:
    """PSFs of ``bands`` built by the pipeline's PSF step from a simulated
    40" field with 60 stars (same optics as the scenes), as a run builds them."""
    from dja_sepp.io.field import Field
    from dja_sepp.io.store import RunStore
    from dja_sepp.psf import build_psfs, load_psf
    from dja_sepp.settings import load_config
    from dja_sepp.sim import simulate_field
    from dja_sepp.tiling import make_tiles
    sim = simulate_field(out / "stars" / "images", field="stars", size_arcsec=40, bands=tuple(bands),
                         n_galaxies=40, n_stars=60, seed=7, blank=None)
    fld = Field.from_directory(sim.images_dir)
    cfg = load_config()
    grid = make_tiles(fld, 20.0, 3.0, 64)
    paths = build_psfs(fld, grid, RunStore(out / "stars" / "run"), cfg, bands=list(fld.bands))
    return {b: load_psf(p, band=b, pixel_scale=fld.bands[b].pixel_scale) for b, p in paths.items()}


def run_engine(n_gal: int, psf_modes=("truth", "built"), out: Path = Path("bench_out/engine")) -> list[dict]:
    from dja_sepp.fit.base import get_engine
    from dja_sepp.sim.scenes import detect_and_match
    cfg = _config()
    engine = get_engine("builtin")
    built = built_psfs(BAND_SETS[max(BAND_SETS)], out) if "built" in psf_modes else {}
    rows = []
    for model, kind in (("sersic_rg4", "sersic"), ("B+D", "bulge+disk")):
        for nb, bands in BAND_SETS.items():
            for mode in psf_modes:
                scene = _scene(n_gal, bands, kind, seed=100 + nb)
                if mode == "built":
                    for cut in scene.bands:
                        cut.psf = built[cut.band]
                sources, nearest, found = detect_and_match(scene, cfg["detection"])
                t0 = time.process_time()
                table = engine.fit(sources, scene.detection, scene.bands, model, cfg["fit"])
                cpu = time.process_time() - t0
                fits = table[nearest]
                rows.append({"model": model, "bands": nb, "psf": mode, "sources": len(sources),
                             "core_s_per_source_band": cpu / (len(sources) * nb),
                             "accuracy": _accuracy(scene.truth, fits, found, bands, kind)})
                print(f"  {model:10s} {nb} bands, {mode} PSF: "
                      f"{rows[-1]['core_s_per_source_band']:.3f} core-s/source-band", flush=True)
    return rows


# -- pyimfit side by side ---------------------------------------------------

def _stamps(n_gal: int):
    """64x64 F444W stamps of isolated galaxies, their truth and the shared PSF."""
    from dja_sepp.sim.psf import psf_image
    scene = _scene(n_gal, ("F444W",), "sersic", seed=7)
    sci, wht = scene.bands[0].sci, scene.bands[0].wht
    psf = psf_image("F444W", 0.04, size=65)
    stamps = []
    for row in scene.truth:
        j, i = int(row["X_DET"] // SPACING), int(row["Y_DET"] // SPACING)
        sl = (slice(i * SPACING, (i + 1) * SPACING), slice(j * SPACING, (j + 1) * SPACING))
        stamps.append((row, sci[sl].astype(np.float64), wht[sl].astype(np.float64)))
    return stamps, psf


def _ours_on_stamp(sci, wht, psf):
    from dja_sepp.detect import detect_sources
    from dja_sepp.fit.base import BandCutout, get_engine
    from dja_sepp.psf.base import ImagePSF
    from dja_sepp.sim.field import field_wcs
    wcs = field_wcs(sci.shape, 0.04)
    band = BandCutout("F444W", sci.astype(np.float32), wht.astype(np.float32), wcs, pixel_scale=0.04,
                      psf=ImagePSF(psf, 0.04, band="F444W"), wavelength=4.421)
    det = BandCutout("DETECTION", band.sci, band.wht, wcs, pixel_scale=0.04)
    sources, det.segmap = detect_sources(det, _config()["detection"])
    sources["IN_CORE"] = np.ones(len(sources), bool)
    if len(sources) == 0:
        return None, 0.0, None
    k = int(np.argmin(np.hypot(sources["x"] - 31.5, sources["y"] - 31.5)))
    t0 = time.process_time()
    table = get_engine("builtin").fit(sources, det, [band], "sersic_rg4", _config()["fit"])
    cpu = (time.process_time() - t0) / len(sources)
    r = table[k]
    return {"flux": float(r["FLUX_MODEL_F444W"]), "re": float(r["RADIUS"]), "n": float(r["SERSIC"])}, \
        cpu, sources[k]


def _imfit_on_stamp(sci, wht, psf, src):
    import pyimfit
    from scipy.special import gamma, gammaincinv
    n0, q = 2.0, float(src["B_IMAGE"] / src["A_IMAGE"])
    re = max(float(src["FLUX_RADIUS"]), 0.5)
    b = gammaincinv(2 * n0, 0.5)
    i_e = float(src["FLUX_AUTO"]) / (2 * np.pi * re**2 * q * n0 * np.exp(b) * b ** (-2 * n0) * gamma(2 * n0))
    model = pyimfit.SimpleModelDescription()
    model.x0.setValue(float(src["x"]) + 1, [float(src["x"]) - 2, float(src["x"]) + 4])
    model.y0.setValue(float(src["y"]) + 1, [float(src["y"]) - 2, float(src["y"]) + 4])
    sersic = pyimfit.make_imfit_function("Sersic")
    sersic.PA.setValue((float(src["THETA_IMAGE"]) - 90) % 180, [-360, 360])
    sersic.ell.setValue(min(1 - q, 0.9), [0, 0.99])
    sersic.n.setValue(n0, [0.3, 8.4])
    sersic.I_e.setValue(i_e, [0, 100 * i_e + 1])
    sersic.r_e.setValue(re, [0.05, 50])
    model.addFunction(sersic)
    fitter = pyimfit.Imfit(model, psf=psf, maxThreads=1)
    t0 = time.process_time()
    fitter.fit(sci, error=1 / np.sqrt(wht), solver="LM")
    cpu = time.process_time() - t0
    p = fitter.getModelAsDict()["function_sets"][0]["function_list"][0]["parameters"]
    return {"flux": float(fitter.getModelFluxes()[0]), "re": p["r_e"][0] * 0.04, "n": p["n"][0]}, cpu


def run_pyimfit(n_gal: int) -> dict:
    from dja_sepp.sim.scenes import robust_scatter
    stamps, psf = _stamps(n_gal)
    res = {"ours": [], "pyimfit": []}
    times = {"ours": [], "pyimfit": []}
    truths = []
    for row, sci, wht in stamps:
        ours, t_ours, src = _ours_on_stamp(sci, wht, psf)
        if ours is None:
            continue
        imf, t_imf = _imfit_on_stamp(sci, wht, psf, src)
        res["ours"].append(ours)
        res["pyimfit"].append(imf)
        times["ours"].append(t_ours)
        times["pyimfit"].append(t_imf)
        truths.append(row)
    out = {"stamps": len(truths)}
    for who in res:
        flux = np.array([r["flux"] for r in res[who]])
        re = np.array([r["re"] for r in res[who]])
        n = np.array([r["n"] for r in res[who]])
        t_flux = np.array([t["FLUX_F444W"] for t in truths])
        dmag = -2.5 * np.log10(flux / t_flux)
        out[who] = {"core_s_per_fit": float(np.median(times[who])),
                    "dmag_median": float(np.nanmedian(dmag)), "dmag_scatter": robust_scatter(dmag),
                    "re_scatter": robust_scatter(np.log(re / np.array([t["RE"] for t in truths]))),
                    "n_scatter": robust_scatter(np.log(n / np.array([t["N"] for t in truths])))}
    out["speedup"] = out["pyimfit"]["core_s_per_fit"] / out["ours"]["core_s_per_fit"]
    return out


def print_tables(engine_rows: list[dict], peer: dict) -> None:
    print("\nEngine cost and accuracy (F444W, or the reddest band; S/N = flux / error)")
    print(f"{'model':10s} {'bands':>5s} {'PSF':>5s} {'core-s/src-band':>15s}  {'S/N bin':8s} {'N':>3s} "
          f"{'dmag med':>9s} {'dmag sc':>8s} {'re sc':>6s} {'n sc':>6s} {'B/T sc':>6s}")
    for r in engine_rows:
        first = True
        for name, a in r["accuracy"].items():
            head = f"{r['model']:10s} {r['bands']:5d} {r.get('psf', 'truth'):>5s} " \
                   f"{r['core_s_per_source_band']:15.3f}" if first else " " * 38
            print(f"{head}  {name:8s} {a['n']:3d} {a['dmag_median']:+9.3f} {a['dmag_scatter']:8.3f} "
                  f"{a.get('re_scatter', np.nan):6.3f} {a.get('n_scatter', np.nan):6.3f} "
                  f"{a.get('bt_scatter', np.nan):6.3f}")
            first = False
    print(f"\npyimfit vs ours, {peer['stamps']} single-band 64x64 Sersic stamps (same PSF, noise, start)")
    print(f"{'code':8s} {'core-s/fit':>10s} {'dmag med':>9s} {'dmag sc':>8s} {'re sc':>6s} {'n sc':>6s}")
    for who in ("ours", "pyimfit"):
        a = peer[who]
        print(f"{who:8s} {a['core_s_per_fit']:10.3f} {a['dmag_median']:+9.3f} {a['dmag_scatter']:8.3f} "
              f"{a['re_scatter']:6.3f} {a['n_scatter']:6.3f}")
    print(f"speed-up (pyimfit / ours): {peer['speedup']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--galaxies", type=int, default=48)
    ap.add_argument("--psf", choices=("both", "truth", "built"), default="both",
                    help="fit with the true PSFs, with PSFs built by the pipeline, or both (default)")
    ap.add_argument("--out", default="bench_out/engine")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("our engine on GalSim scenes:", flush=True)
    modes = ("truth", "built") if args.psf == "both" else (args.psf,)
    engine_rows = run_engine(args.galaxies, modes, out)
    print("pyimfit side by side:", flush=True)
    peer = run_pyimfit(min(args.galaxies, 32))
    print_tables(engine_rows, peer)
    (out / "engine.json").write_text(json.dumps({"engine": engine_rows, "pyimfit": peer}, indent=1))
    print(f"\nwrote {out / 'engine.json'}")


if __name__ == "__main__":
    main()
