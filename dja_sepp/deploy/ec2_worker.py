"""``python -m dja_sepp.deploy.ec2_worker SCHEDULER --nworkers W --nthreads T
--memory-limit M --name NAME``: several Dask worker processes on one EC2
instance.

dask-cloudprovider starts one worker process per instance; its
``worker_module`` option runs a module instead, with the worker options as
command-line flags checked against that module's ``main``. This module's
``main`` accepts the flags of ``dask worker`` we need and hands over to it
(``--nworkers`` processes, each with ``--nthreads`` threads and
``--memory-limit``), so an instance runs ``workers_per_instance``
single-threaded fits side by side.
"""
from __future__ import annotations

import os
import sys

import click

__all__ = ["main", "worker_command"]


def worker_command(scheduler: str, nworkers: int, nthreads: int, memory_limit: str,
                   name: str | None = None) -> list[str]:
    """The ``dask worker`` command line this module runs."""
    cmd = [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nworkers",
           str(int(nworkers)), "--nthreads", str(int(nthreads)), "--memory-limit", str(memory_limit)]
    return cmd + (["--name", name] if name else [])


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("scheduler", type=str)
@click.option("--name", type=str, default=None, help="worker name prefix")
@click.option("--nworkers", type=int, default=1, help="worker processes on this instance")
@click.option("--nthreads", type=int, default=1, help="threads per worker process")
@click.option("--memory-limit", "memory_limit", type=str, default="auto",
              help="memory limit per worker process")
def main(scheduler, name, nworkers, nthreads, memory_limit):  # pragma: no cover - runs on EC2
    """Start ``nworkers`` Dask worker processes for ``scheduler``."""
    cmd = worker_command(scheduler, nworkers, nthreads, memory_limit, name)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
