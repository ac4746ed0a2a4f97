"""Fit a DJA field on a SLURM cluster (dask-jobqueue; ``pip install 'dja-sepp[hpc]'``).

Run this on a login node. Each batch job starts ``cores`` single-threaded
workers; the cluster adapts between 0 and ``maximum_jobs`` jobs, and a tile
that runs longer than ``tile_timeout`` seconds is stopped and retried.
PBS: use ``kind: pbs`` and a ``pbs:`` section with the same settings.
"""
import dja_sepp

CONFIG = {
    "cluster": {
        "kind": "slurm",
        "tile_timeout": 3600,
        "retries": 2,
        "slurm": {"cores": 32, "memory": "128GB", "walltime": "04:00:00", "queue": "normal",
                  "account": "my_allocation", "maximum_jobs": 8,
                  "job_extra_directives": ["--constraint=cpu"]},
    },
}

if __name__ == "__main__":
    result = dja_sepp.run("/scratch/dja/gds", out="/scratch/runs/gds", models=["sersic_rg4"],
                          config=CONFIG, psfs={"F444W": "/scratch/dja/psf/f444w.fits"})
    print(result.summary())
