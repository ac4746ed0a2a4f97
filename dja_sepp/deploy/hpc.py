"""SLURM / PBS clusters through dask-jobqueue (the ``hpc`` extra).

Each batch job runs ``cores`` single-threaded worker processes (BLAS, OpenMP
and numba pinned to one thread: one tile fit per core); the cluster adapts
between ``minimum_jobs`` and ``maximum_jobs`` (a hard ceiling on what a run
may queue).

Scheduler and workers talk TLS by default (``tls: true``): a temporary
certificate authority is made for the run (``Security.temporary()``), the
scheduler listens on ``tls://`` and the workers' copies of the certificate
and key are written, readable by the user only, to ``tls_directory`` (a
folder the batch nodes see; default ``~/.cache/dja_sepp/tls``). Task
arguments, ``storage_options`` included, never cross the cluster network in
clear.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..settings import default_config
from .env import THREAD_ENV

__all__ = ["jobqueue_cluster", "jobqueue_options"]

#: Settings of ``cluster.slurm`` / ``cluster.pbs`` and their defaults
#: (``config/defaults.yaml``; the two sections hold the same keys).
DEFAULTS: dict[str, Any] = default_config()["cluster"]["slurm"]


def jobqueue_options(kind: str, settings: Mapping[str, Any]) -> dict:
    """Keyword arguments of ``SLURMCluster`` / ``PBSCluster`` for our settings."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"cluster.{kind}: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    cores = int(s["cores"])
    opts = {"cores": cores, "processes": cores, "memory": s["memory"], "walltime": s["walltime"],
            "queue": s["queue"], "account": s["account"],
            "job_extra_directives": list(s["job_extra_directives"]),
            "job_script_prologue": [f"export {k}={v}" for k, v in THREAD_ENV.items()],
            "interface": s["interface"], "local_directory": s["local_directory"],
            "log_directory": s["log_directory"], "job_name": "dja-sepp"}
    if s["python"]:
        opts["python"] = s["python"]
    if s["scheduler_host"]:
        opts["scheduler_options"] = {"host": s["scheduler_host"]}
    if s["tls"]:
        opts.update(_tls_options(s["tls_directory"]))
    return {k: v for k, v in opts.items() if v is not None}


def _tls_options(directory: str) -> dict:
    """TLS with a temporary certificate authority of this run; the workers'
    key files go to ``directory`` (made private to the user)."""
    import os
    from distributed.security import Security
    folder = os.path.expanduser(os.path.expandvars(directory))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)  # the workers' private keys are written here
    # dask-jobqueue writes them as temporary files (0600) deleted with the cluster
    return {"security": Security.temporary(), "protocol": "tls://", "shared_temp_directory": folder}


def jobqueue_cluster(kind: str, settings: Mapping[str, Any]):
    """A started (adaptive, not yet scaled) SLURM or PBS cluster."""
    try:
        from dask_jobqueue import PBSCluster, SLURMCluster
    except ImportError as exc:
        raise ImportError("cluster kind slurm/pbs needs dask-jobqueue: pip install 'dja-sepp[hpc]'") from exc
    cls = {"slurm": SLURMCluster, "pbs": PBSCluster}[kind]
    cluster = cls(**jobqueue_options(kind, settings))
    s = {**DEFAULTS, **settings}
    cluster.adapt(minimum_jobs=int(s["minimum_jobs"]), maximum_jobs=int(s["maximum_jobs"]))
    return cluster
