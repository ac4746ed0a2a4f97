"""Bulge + disk quality benchmark (issue 18): B/T per band and fits at a bound.

GalSim scenes of isolated bulge + disk galaxies (de Vaucouleurs bulge +
exponential disk, B/T rising with wavelength) drawn as the simulated field of
``dja_sepp.sim.field`` draws them (``dja_sepp.sim.scenes.bulge_disk_grid``) (the issue's field: mag 21-25, disk r_e
0.06-0.35" x 10^(0.12 (25 - mag)), bulge 0.2-0.5 x disk, so many bulges are
barely resolved; q_d 0.2-1, q_b 0.6-1, B/T0 0.1-0.7), on a grid, in F150W
(0.02"), F277W and F444W (0.04"), white noise, the truth PSFs; our
detection, then each bulge + disk model through the Engine API. For galaxies
at F277W S/N > 50 (fitted flux / error) it prints, per model: B/T robust
scatter and median offset per band, the fraction of fits flagged AT_BOUND,
which parameters sit at which bound (``BOUND_PARAMS``), BULGE_LARGER swaps,
dmag, and core-seconds per source-band (one thread).

Usage: python benchmarks/bulge_disk.py [--galaxies 24] [--models B+D B+D_corr B+D_free]
       [--label after] [--out benchmarks/results/issue18_bulge_disk.json]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # core-seconds: one thread

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BANDS = ("F150W", "F277W", "F444W")
REF = "F277W"
SPACING = 96          # detection pixels between galaxies (--spacing 48: neighbours' wings overlap)
SIGMA = 0.02


def built_like(psf, blur: float = 0.35, size: int = 35):
    """A stand-in for a PSF the run builds from stars: the truth's central
    ``size`` px (the builder's core stamp, its light share as ``ee_fraction``)
    blurred by a Gaussian of ``blur`` band px (an ePSF stack's registration
    broadens the core by ~1-3 %)."""
    from scipy.ndimage import gaussian_filter
    from dja_sepp.psf.base import ImagePSF
    data = psf.data
    c, h = data.shape[0] // 2, size // 2
    core = data[c - h:c + h + 1, c - h:c + h + 1]
    return ImagePSF(gaussian_filter(core, blur), psf.pixel_scale, band=psf.band,
                    ee_fraction=float(core.sum() / data.sum()))


def make(n_gal: int, seed: int, psf: str = "truth", spacing: int = SPACING, mags=(21.0, 25.0)):
    """The scene and its detections matched to the truth; ``psf``: the
    fits use the truth PSFs or :func:`built_like` ones."""
    from dja_sepp.bands import is_short_wave
    from dja_sepp.settings import load_config
    from dja_sepp.sim.scenes import bulge_disk_grid, detect_and_match, make_scene
    cfg = load_config()
    cfg["detection"]["thresh"] = 1.5
    cfg["fit"]["passes"] = 1
    ncols = min(n_gal, 6)
    nrows = int(np.ceil(n_gal / ncols))
    truth = bulge_disk_grid(np.random.default_rng(seed), nrows, ncols, spacing, BANDS, tuple(mags))
    scene = make_scene(truth, (nrows * spacing, ncols * spacing),
                       {b: 2 if is_short_wave(b) else 1 for b in BANDS}, SIGMA, seed + 1)
    if psf == "built":
        for cut in scene.bands:
            cut.psf = built_like(cut.psf)
    sources, nearest, found = detect_and_match(scene, cfg["detection"])
    return cfg, scene, sources, nearest, found


def measure(model: str, cfg, scene, sources, nearest, found) -> dict:
    from dja_sepp.fit.base import get_engine
    from dja_sepp.fit.flags import FitFlag
    from dja_sepp.sim.scenes import robust_scatter
    t0 = time.process_time()
    table = get_engine("builtin").fit(sources, scene.detection, scene.bands, model, cfg["fit"])
    cpu = time.process_time() - t0
    fits = table[nearest]
    truth = scene.truth
    flags = np.asarray(fits["FLAGS"])
    snr = np.asarray(fits[f"FLUX_MODEL_{REF}"] / fits[f"FLUX_MODEL_{REF}_err"])
    from dja_sepp.models.definition import load_model
    galaxy = np.asarray(fits["MODEL"]).astype(str) == load_model(model).name   # model: a name or a path
    sel = found & galaxy & (flags & int(FitFlag.ERROR | FitFlag.INSUFFICIENT_DATA) == 0) & (snr > 50)
    out = {"model": model, "sources": len(sources), "n_snr50": int(sel.sum()),
           "point_rows": int((found & ~galaxy).sum()),
           "core_s_per_source_band": cpu / (len(sources) * len(BANDS)), "bands": {}}
    for b in BANDS:
        dbt = np.asarray(fits[f"B/T_{b}"])[sel] - np.asarray(truth[f"BT_{b}"])[sel]
        dmag = -2.5 * np.log10(np.asarray(fits[f"FLUX_MODEL_{b}"])[sel] / truth[f"FLUX_{b}"][sel])
        out["bands"][b] = {"bt_scatter": robust_scatter(dbt), "bt_median": float(np.median(dbt)),
                           "bt_rms": float(np.sqrt(np.mean(dbt ** 2))),
                           "dmag_median": float(np.median(dmag))}
    mid = found & galaxy & (flags & int(FitFlag.ERROR | FitFlag.INSUFFICIENT_DATA) == 0) \
        & (snr > 20) & (snr <= 50)
    out["snr20_50"] = {"n": int(mid.sum())}
    for b in BANDS:   # where the band prior matters: B/T errors of ~0.05-0.1
        dbt = np.asarray(fits[f"B/T_{b}"])[mid] - np.asarray(truth[f"BT_{b}"])[mid]
        out["snr20_50"][b] = {"bt_scatter": robust_scatter(dbt) if mid.sum() > 2 else float("nan"),
                              "bt_median": float(np.median(dbt)) if mid.any() else float("nan")}
    bound = flags[sel] & int(FitFlag.AT_BOUND) != 0
    out["at_bound"] = int(bound.sum())
    out["at_bound_fraction"] = float(bound.mean()) if sel.any() else float("nan")
    out["bulge_larger"] = int((flags[sel] & int(FitFlag.BULGE_LARGER) != 0).sum())
    counts = collections.Counter()
    for text in np.asarray(fits["BOUND_PARAMS"]).astype(str)[sel]:
        for item in filter(None, text.split(",")):
            name = item.split("=")[0]
            for b in BANDS:   # per-band flux bounds counted once per component
                name = name.replace(f"_{b}", "")
            counts[name + "=" + item.split("=")[1]] += 1
    out["bounds"] = dict(counts.most_common())
    out["rows"] = [{"bt_true": {b: float(truth[f"BT_{b}"][i]) for b in BANDS},
                    "bt_fit": {b: float(fits[f"B/T_{b}"][i]) for b in BANDS},
                    "bound": str(fits["BOUND_PARAMS"][i]), "flags": int(flags[i]), "snr": float(snr[i])}
                   for i in np.flatnonzero(sel)]
    return out


def print_table(results: list[dict], label: str) -> None:
    print(f"\nB+D quality ({label}): galaxies at {REF} S/N > 50, white noise")
    head = "".join(f" {b + ' sc':>9s} {b + ' med':>10s}" for b in BANDS)
    print(f"{'model':9s} {'N':>3s}{head} {'AT_BOUND':>9s} {'swap':>4s} {'dmag':>7s} {'core-s/sb':>9s}")
    for r in results:
        cols = "".join(f" {r['bands'][b]['bt_scatter']:9.3f} {r['bands'][b]['bt_median']:+10.3f}"
                       for b in BANDS)
        print(f"{r['model']:9s} {r['n_snr50']:3d}{cols} {r['at_bound']:4d} ({100 * r['at_bound_fraction']:3.0f}%)"
              f" {r['bulge_larger']:4d} {r['bands'][REF]['dmag_median']:+7.3f} "
              f"{r['core_s_per_source_band']:9.3f}")
        print(f"{'':9s} bounds: {r['bounds']}")
        if "snr20_50" in r:
            mid = r["snr20_50"]
            print(f"{'':9s} S/N 20-50 ({mid['n']}): B/T scatter, median " + ", ".join(
                f"{b} {mid[b]['bt_scatter']:.3f} {mid[b]['bt_median']:+.3f}" for b in BANDS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--galaxies", type=int, default=24)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--models", nargs="+", default=["B+D", "B+D_corr", "B+D_free"])
    ap.add_argument("--label", default="current")
    ap.add_argument("--psf", choices=("truth", "built"), default="truth")
    ap.add_argument("--spacing", type=int, default=SPACING)
    ap.add_argument("--mags", type=float, nargs=2, default=(21.0, 25.0), help="magnitude range drawn")
    ap.add_argument("--restart", type=float, default=None, help="fit.bd_restart (default: the config's)")
    ap.add_argument("--staged", action="store_true", help="fit.bd_staged: start from a Sersic fit")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cfg, scene, sources, nearest, found = make(args.galaxies, args.seed, args.psf, args.spacing, args.mags)
    if args.restart is not None:
        cfg["fit"]["bd_restart"] = args.restart
    if args.staged:
        cfg["fit"]["bd_staged"] = True
    results = []
    for model in args.models:
        results.append(measure(model, cfg, scene, sources, nearest, found))
        print_table(results[-1:], f"{args.label}, {model}, {args.psf} PSFs")
    print_table(results, f"{args.label}, {args.psf} PSFs")
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[f"{args.label}/{args.psf}"] = {"galaxies": args.galaxies, "seed": args.seed, "bands": list(BANDS),
                            "psf": args.psf, "spacing": args.spacing, "mags": list(args.mags),
                                                "bd_restart": cfg["fit"].get("bd_restart"),
                                                "bd_staged": bool(cfg["fit"].get("bd_staged")), "results": results}
        path.write_text(json.dumps(data, indent=1))
        print(f"wrote {path} [{args.label}/{args.psf}]")


if __name__ == "__main__":
    main()
