"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own schema and preparation, offline:
no cloud call) and keeps the properties docs/cluster.md promises."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation(raw):
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["available_node_types"]["head"]["max_workers"] == 0  # filled in by prepare_config


def test_validation_catches_a_typo(raw):
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wrokers"):
        validate_config(prepare_config(bad))


def test_cpu_head_and_spot_gpu_workers_from_zero(raw):
    assert raw["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert "InstanceMarketOptions" not in head["node_config"]  # the head is never a spot node
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] >= 1
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_install_mounts_and_security(raw):
    assert "/home/ray/raytal" in raw["file_mounts"] and raw["file_mounts"]["/home/ray/raytal"] == "."
    assert any("pip install" in c and "/home/ray/raytal" in c for c in raw["setup_commands"])
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for cmds in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token ray start" in " ".join(cmds)
