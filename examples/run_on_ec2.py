"""Fit a DJA field on EC2 (dask-cloudprovider; ``pip install 'dja-sepp[aws]'``),
reading the public DJA bucket and writing the run to your own bucket.

Needs AWS credentials, a worker image (see ``examples/worker_image.md``) and
your public address: the scheduler and dashboard ports are opened to that
address only. Instances, the security group and the cluster are removed on
every exit path; a scheduler that does not answer within ``startup_timeout``
seconds is given up.
"""
import dja_sepp

CONFIG = {
    "cluster": {
        "kind": "ec2",
        "tile_timeout": 3600,
        "retries": 2,
        "ec2": {"region": "us-east-1", "docker_image": "ghcr.io/YOUR_ORG/dja-sepp:0.1.0",
                "worker_instance_type": "c7i.4xlarge", "worker_nthreads": 16,
                "minimum": 0, "maximum": 20, "allowed_cidr": "203.0.113.7/32",
                "startup_timeout": 900},
    },
}

if __name__ == "__main__":
    result = dja_sepp.run("s3://grizli-v2/JwstMosaics/v7/", out="s3://my-bucket/runs/gds", config=CONFIG,
                          field__name="gds", psfs={"F444W": "psf/f444w.fits"},
                          storage_options={"anon": False})
    print(result.summary())
