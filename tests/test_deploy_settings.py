"""Cluster settings: defaults in the YAML, checked at load, safe by default."""
import pytest

from dja_sepp.deploy.ec2 import ec2_options
from dja_sepp.deploy.hpc import jobqueue_options
from dja_sepp.settings import ConfigError, default_config, load_config

BASE = {"region": "us-east-1", "docker_image": "ghcr.io/example/dja-sepp:0.1",
        "allowed_cidr": "10.0.3.7/32"}


def test_ec2_traffic_stays_in_the_vpc_by_default():
    assert default_config()["cluster"]["ec2"]["use_private_ip"] is True
    opts = ec2_options(BASE, "sg-0123", "run1")
    assert opts["use_private_ip"] is True


def test_ec2_public_addresses_need_tls():
    with pytest.raises(ValueError, match="use_private_ip.*tls"):
        ec2_options({**BASE, "use_private_ip": False}, "sg-0123", "run1")
    opts = ec2_options({**BASE, "use_private_ip": False, "tls": True}, "sg-0123", "run1")
    assert opts["use_private_ip"] is False and opts["security"] is True


@pytest.mark.parametrize("kind", ["ec2", "slurm", "pbs"])
def test_a_misspelt_cluster_setting_is_refused_at_load(kind, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cluster:\n  {kind}:\n    maximun: 3\n")
    with pytest.raises(ConfigError, match=rf"c.yaml:3: unknown configuration key 'cluster.{kind}.maximun'"):
        load_config(cfg)


@pytest.mark.parametrize("key,value", [("ec2.maximum", "lots"), ("slurm.cores", 0),
                                       ("pbs.job_extra_directives", 5)])
def test_a_mistyped_cluster_setting_names_its_key(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"cluster\.{section}\.{name}"):
        load_config({"cluster": {section: {name: value}}})


def test_batch_defaults_come_from_the_yaml():
    yaml_slurm = default_config()["cluster"]["slurm"]
    assert yaml_slurm == default_config()["cluster"]["pbs"]   # one set of keys for both
    opts = jobqueue_options("slurm", {"cores": 4, "tls": False})
    assert opts["cores"] == 4 and opts["memory"] == yaml_slurm["memory"]
    assert opts["walltime"] == yaml_slurm["walltime"]
