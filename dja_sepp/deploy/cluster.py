"""Cluster choice: local processes (default), an existing scheduler address,
SLURM / PBS (:mod:`.hpc`) or EC2 (:mod:`.ec2`)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .env import THREAD_ENV  # noqa: F401  (here too: tests and benchmarks import it from here)

__all__ = ["cluster_client"]


@contextmanager
def cluster_client(config: Mapping[str, Any]) -> Iterator[Any]:
    """A Client on the configured cluster, torn down on every exit path."""
    from distributed import Client, LocalCluster
    kind = config.get("kind", "local")
    if kind == "address":
        with Client(config["address"]) as client:
            yield client
        return
    if kind in ("slurm", "pbs"):
        from .hpc import jobqueue_cluster
        with jobqueue_cluster(kind, config.get(kind) or {}) as cluster, Client(cluster) as client:
            yield client
        return
    if kind == "ec2":
        from .ec2 import ec2_cluster
        with ec2_cluster(config.get("ec2") or {}) as cluster, Client(cluster) as client:
            yield client
        return
    if kind != "local":
        raise ValueError(f"cluster.kind must be local, address, slurm, pbs or ec2, not {kind!r}")
    import os
    n = config.get("n_workers") or os.cpu_count() or 1
    env = {**THREAD_ENV, **{str(k): str(v) for k, v in (config.get("worker_env") or {}).items()}}
    # scheduler, workers and dashboard on the loopback interface only: a local
    # run is never reachable from the network (the printed link is 127.0.0.1)
    with LocalCluster(n_workers=n, threads_per_worker=int(config.get("threads_per_worker", 1)),
                      processes=True, memory_limit=config.get("memory_limit", "auto"),
                      host="127.0.0.1", env=env, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        yield client
