"""Fit a DJA field on this machine: one single-threaded Dask worker per core.

    python examples/run_local.py /data/gds run_gds --psf F444W=psf/f444w.fits ...

The dashboard link is printed when the cluster starts; the run directory gets
the merged catalog, per-tile status files and the model/residual mosaics.
"""
import argparse

import dja_sepp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", help="folder or URL with DJA-named mosaics")
    ap.add_argument("out", help="run directory (local or s3://)")
    ap.add_argument("--psf", action="append", default=[], metavar="BAND=FILE")
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    psfs = dict(item.split("=", 1) for item in args.psf)
    config = {"cluster": {"kind": "local", "n_workers": args.workers}}
    result = dja_sepp.run(args.images, out=args.out, models=args.model, config=config, psfs=psfs)
    print(result.summary())


if __name__ == "__main__":
    main()
