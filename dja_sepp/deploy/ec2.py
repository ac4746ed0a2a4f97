"""EC2 clusters through dask-cloudprovider (the ``aws`` extra).

What we add to ``dask_cloudprovider.aws.EC2Cluster``:

- a security group of our own that opens the scheduler and dashboard ports
  (8786-8787) only to ``allowed_cidr`` (the caller's address; never
  ``0.0.0.0/0``) and lets the cluster's instances talk to each other;
  dask-cloudprovider's default group would open them to the world;
- BLAS / OpenMP / numba pinned to one thread on the workers;
- a bounded start: dask-cloudprovider waits forever for a scheduler that
  never answers; we give up after ``startup_timeout`` seconds;
- teardown on every exit path: the cluster, any instance tagged with this
  run's id, and the security group we made.

Traffic: by default (``use_private_ip: true``) the driver runs inside the
VPC and talks to the scheduler on its private address, so nothing crosses
the internet. dask-cloudprovider's ``security=True`` (``tls: true``) writes
temporary certificates into the instances' user-data, which with our
bootstrap can exceed EC2's 16 KB user-data limit; public addresses without
TLS are refused.
"""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from ..settings import default_config
from .env import THREAD_ENV

__all__ = ["ec2_options", "ensure_security_group", "ec2_cluster", "start_within",
           "terminate_tagged", "DEFAULTS"]

#: Settings of ``cluster.ec2`` and their defaults (``config/defaults.yaml``).
DEFAULTS: dict[str, Any] = default_config()["cluster"]["ec2"]
PORTS = (8786, 8787)   # scheduler, dashboard
TAG = "dja-sepp-run"


def _settings(settings: Mapping[str, Any]) -> dict:
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"cluster.ec2: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    if not (s["ami"] or s["docker_image"]):
        raise ValueError("cluster.ec2: give an ami with dja_sepp installed or a docker_image")
    if not s["security_group"]:
        _check_cidr(s["allowed_cidr"])
    if not s["use_private_ip"] and not s["tls"]:
        raise ValueError("cluster.ec2: use_private_ip: false with tls: false would send task arguments "
                         "(storage_options included) over the internet in clear; run the driver inside "
                         "the VPC (use_private_ip: true) or set tls: true")
    if int(s["maximum"]) < int(s["minimum"]) or int(s["maximum"]) < 1:
        raise ValueError("cluster.ec2: maximum must be >= minimum and >= 1 (a hard ceiling)")
    return s


def _check_cidr(cidr: str | None) -> None:
    import ipaddress
    if not cidr:
        raise ValueError("cluster.ec2: allowed_cidr (your address, e.g. 203.0.113.7/32) is required")
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == 0:
        raise ValueError(f"cluster.ec2: allowed_cidr {cidr} would open the scheduler to everyone")


def ec2_options(settings: Mapping[str, Any], security_group: str, run_id: str) -> dict:
    """Keyword arguments of ``EC2Cluster`` for our settings.

    ``workers_per_instance`` > 1 starts that many worker processes of
    ``worker_nthreads`` threads and ``worker_memory`` each on every instance
    (through :mod:`dja_sepp.deploy.ec2_worker`); 1 (the default) starts one.
    """
    s = _settings({**settings, "security_group": security_group})
    opts = {
        "region": s["region"], "ami": s["ami"], "docker_image": s["docker_image"],
        "vpc": s["vpc"], "subnet_id": s["subnet_id"], "security_groups": [security_group],
        "worker_instance_type": s["worker_instance_type"],
        "scheduler_instance_type": s["scheduler_instance_type"],
        "filesystem_size": int(s["filesystem_size"]), "key_name": s["key_name"],
        "iam_instance_profile": s["iam_instance_profile"], "use_private_ip": bool(s["use_private_ip"]),
        "security": bool(s["tls"]), "bootstrap": bool(s["bootstrap"]), "n_workers": int(s["minimum"]),
        "worker_options": {"nthreads": int(s["worker_nthreads"]), "memory_limit": s["worker_memory"]},
        "env_vars": dict(THREAD_ENV), "instance_tags": {TAG: run_id}, "volume_tags": {TAG: run_id},
        "auto_shutdown": True, "debug": False,
    }
    if int(s["workers_per_instance"]) > 1:  # several worker processes per instance
        opts["worker_module"] = "dja_sepp.deploy.ec2_worker"
        opts["worker_options"] = {"nworkers": int(s["workers_per_instance"]), **opts["worker_options"]}
    return {k: v for k, v in opts.items() if v is not None}


def _client(s: Mapping[str, Any]):
    import boto3
    return boto3.client("ec2", region_name=s["region"], endpoint_url=s["endpoint_url"])


def ensure_security_group(ec2, vpc: str | None, allowed_cidr: str, name: str) -> str:
    """Create our security group; returns its id."""
    _check_cidr(allowed_cidr)
    kwargs = {"GroupName": name, "Description": "dja-sepp Dask cluster: scheduler/dashboard for one address"}
    if vpc:
        kwargs["VpcId"] = vpc
    group = ec2.create_security_group(**kwargs)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": PORTS[0], "ToPort": PORTS[1],
         "IpRanges": [{"CidrIp": allowed_cidr, "Description": "dja-sepp driver"}]},
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
         "UserIdGroupPairs": [{"GroupId": group, "Description": "scheduler <-> workers"}]},
    ])
    return group


def terminate_tagged(ec2, run_id: str) -> list[str]:
    """Terminate every instance tagged with this run's id (what a start that
    timed out may have left running)."""
    found = ec2.describe_instances(Filters=[
        {"Name": f"tag:{TAG}", "Values": [run_id]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    return ids


def start_within(factory: Callable[[], Any], timeout: float, what: str) -> Any:
    """``factory()`` run in a thread; TimeoutError if it has not returned
    after ``timeout`` seconds (the thread is abandoned, the caller tears down)."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = factory()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"start {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not start within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextmanager
def ec2_cluster(settings: Mapping[str, Any]) -> Iterator[Any]:
    """An adaptive EC2 cluster (``minimum``..``maximum`` workers), torn down
    with everything it created on every exit path."""
    try:
        from dask_cloudprovider.aws import EC2Cluster
    except ImportError as exc:
        raise ImportError("cluster kind ec2 needs dask-cloudprovider: pip install 'dja-sepp[aws]'") from exc
    s = _settings(settings)
    ec2 = _client(s)
    run_id = uuid.uuid4().hex[:12]
    group = s["security_group"] or ensure_security_group(ec2, s["vpc"], s["allowed_cidr"], f"dja-sepp-{run_id}")
    cluster = None
    try:
        cluster = start_within(lambda: EC2Cluster(**ec2_options(s, group, run_id)),
                               float(s["startup_timeout"]), "EC2 scheduler")
        cluster.adapt(minimum=int(s["minimum"]), maximum=int(s["maximum"]))
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        terminate_tagged(ec2, run_id)
        if not s["security_group"]:
            _delete_group_when_free(ec2, group)


def _delete_group_when_free(ec2, group: str, attempts: int = 30) -> None:
    """A group cannot be deleted while terminating instances still use it."""
    import time
    for _ in range(attempts):
        try:
            ec2.delete_security_group(GroupId=group)
            return
        except Exception as exc:  # DependencyViolation while instances shut down
            if "DependencyViolation" not in str(exc):
                raise
            time.sleep(10)
