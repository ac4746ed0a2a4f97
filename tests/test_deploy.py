"""Clusters up to the boundary: SLURM/PBS job scripts (dask-jobqueue), and the
EC2 security group, instance teardown, cloud-init and bounded start, against
moto's EC2 API served on 127.0.0.1. Nothing may connect outside 127.0.0.0/8."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest

from dja_sepp.deploy.ec2 import (TAG, ec2_options, ensure_security_group, start_within,
                                 terminate_tagged)
from dja_sepp.deploy.hpc import jobqueue_cluster


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail any connection to an address outside 127.0.0.0/8."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
            if not ip.is_loopback:
                raise AssertionError(f"test tried to connect to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="module")
def moto_ec2():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def ec2(moto_ec2, monkeypatch, loopback_only):
    import boto3
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_ec2)


@pytest.mark.parametrize("kind, lines", [
    ("slurm", ["#SBATCH -J dja-sepp", "#SBATCH -p normal", "#SBATCH -A jwst",
               "#SBATCH --cpus-per-task=8", "#SBATCH -t 01:30:00", "#SBATCH --constraint=cpu"]),
    ("pbs", ["#PBS -N dja-sepp", "#PBS -q normal", "#PBS -A jwst", "#PBS -l select=1:ncpus=8",
             "#PBS -l walltime=01:30:00"]),
])
def test_batch_job_script(kind, lines, loopback_only):
    settings = {"cores": 8, "memory": "32GB", "walltime": "01:30:00", "queue": "normal",
                "account": "jwst", "scheduler_host": "127.0.0.1", "maximum_jobs": 3,
                "job_extra_directives": ["--constraint=cpu"] if kind == "slurm" else []}
    with jobqueue_cluster(kind, settings) as cluster:
        script = cluster.job_script()
    for line in lines:
        assert line in script, line
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        assert f"export {var}=1" in script
    assert "--nworkers 8" in script and "--nthreads 1" in script


def test_batch_settings_are_checked():
    with pytest.raises(ValueError, match="cluster.slurm: unknown setting"):
        jobqueue_cluster("slurm", {"corez": 8})


def test_security_group_opens_the_scheduler_to_one_address_only(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = ensure_security_group(ec2, vpc, "203.0.113.7/32", "dja-sepp-test")
    rules = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    cidrs = {r["CidrIp"] for rule in rules for r in rule.get("IpRanges", [])}
    assert cidrs == {"203.0.113.7/32"}
    public = [rule for rule in rules if rule.get("IpRanges")]
    assert [(r["FromPort"], r["ToPort"]) for r in public] == [(8786, 8787)]
    internal = [rule for rule in rules if rule.get("UserIdGroupPairs")]
    assert internal and internal[0]["UserIdGroupPairs"][0]["GroupId"] == group


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", None])
def test_the_world_is_never_allowed_in(ec2, cidr):
    with pytest.raises(ValueError, match="allowed_cidr"):
        ensure_security_group(ec2, None, cidr, "dja-sepp-open")


def test_teardown_terminates_the_run_instances(ec2):
    image = ec2.describe_images()["Images"][0]["ImageId"]
    tag = {"ResourceType": "instance", "Tags": [{"Key": TAG, "Value": "run123"}]}
    ours = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, TagSpecifications=[tag])
    other = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ids = terminate_tagged(ec2, "run123")
    assert sorted(ids) == sorted(i["InstanceId"] for i in ours["Instances"])
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]}
    assert all(states[i] in ("shutting-down", "terminated") for i in ids)
    assert states[other] == "running"


def test_cluster_request_and_cloud_init(ec2):
    from dask_cloudprovider.aws import EC2Cluster
    settings = {"region": "us-east-1", "docker_image": "ghcr.io/example/dja-sepp:0.1",
                "worker_instance_type": "c7i.4xlarge", "worker_nthreads": 16, "minimum": 0,
                "maximum": 20, "allowed_cidr": "203.0.113.7/32"}
    opts = ec2_options(settings, "sg-0123", "run123")
    assert opts["security_groups"] == ["sg-0123"] and opts["security"] is False
    assert opts["worker_instance_type"] == "c7i.4xlarge" and opts["n_workers"] == 0
    assert opts["worker_options"]["nthreads"] == 16
    assert opts["instance_tags"] == {TAG: "run123"}
    assert opts["env_vars"]["OMP_NUM_THREADS"] == "1"

    async def render():  # dask-cloudprovider builds the (unstarted) cluster in a running loop
        return EC2Cluster.get_cloud_init(**opts)

    cloud_init = asyncio.run(render())
    assert "ghcr.io/example/dja-sepp:0.1" in cloud_init
    assert "NUMBA_NUM_THREADS" in cloud_init
    assert len(cloud_init.encode()) < 16 * 1024           # EC2's user-data limit


def test_a_scheduler_that_never_answers_is_given_up():
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="did not start within 1 s"):
        start_within(lambda: time.sleep(30), 1.0, "EC2 scheduler")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_batch_clusters_use_tls_by_default(kind, loopback_only, tmp_path):
    """SLURM/PBS schedulers used to run without TLS: task arguments (storage
    options included) crossed the cluster network in clear."""
    import os
    import stat
    settings = {"scheduler_host": "127.0.0.1", "tls_directory": str(tmp_path / "tls")}
    with jobqueue_cluster(kind, settings) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
        keys = [p for p in (tmp_path / "tls").rglob("*") if p.is_file()]
        assert keys and all(str(k) in script for k in keys)
        assert all(stat.S_IMODE(os.stat(k).st_mode) & 0o077 == 0 for k in keys)
    assert address.startswith("tls://127.0.0.1:")
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert flag in script
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    with jobqueue_cluster(kind, {**settings, "tls": False}) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")


def test_the_driver_connects_to_a_tls_batch_scheduler(loopback_only, tmp_path):
    from dja_sepp.deploy import cluster_client
    settings = {"scheduler_host": "127.0.0.1", "tls_directory": str(tmp_path / "tls")}
    with cluster_client({"kind": "slurm", "slurm": settings}) as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        assert client.scheduler_info()["address"].startswith("tls://")
