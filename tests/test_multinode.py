"""Multi-node simulation (issue 12): a head and 2 worker nodes on this machine (``ray.cluster_utils.Cluster``),
each worker node declaring one GPU that does not exist (the resource Ray places inference actors by, as
on the real cluster; the teacher itself runs on the CPU), running the main job (jobs/selftrain.py, one
round from a given teacher) on the real Ray back-end with its run directory on the session's S3 endpoint
(moto server on 127.0.0.1): the pseudo-label pipeline spreads over both worker nodes and DDP training
runs one worker per node.

Robustness choice: the Cluster lives in a child process (``tests/cluster_scenarios.py multinode``), not
in the pytest process. A driver process holds one Ray connection for its life, and the session fixture
(``tests/conftest.py``) already holds the shared local Ray; shutting that down for this test and
restarting it afterwards would depend on test order, would invalidate anything other tests cached from
it, and a failing cluster test could leave the session without Ray. In a child process the Cluster and
every process it starts go away when the child exits, whatever happens, and the session Ray is never
touched. The child prints its findings as one JSON line; the assertions are here.
"""

from __future__ import annotations

import uuid

import pytest

from cluster_scenarios import make_tiny, run_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, s3_endpoint) -> dict:
    work = tmp_path_factory.mktemp("multinode")
    run_dir = f"{s3_endpoint}/multinode-{uuid.uuid4().hex[:8]}"
    # The child's Ray nodes inherit the S3 endpoint's variables from this process (child_env).
    result = run_scenario("multinode", work / "run", make_tiny(work / "tiny"), SCENARIO_RUN_DIR=run_dir)
    return {**result, "run_dir": run_dir}


def test_simulated_cluster_has_a_head_and_two_worker_nodes(cluster_run):
    nodes = cluster_run["worker_nodes"]
    assert len(set(nodes)) == 2 and cluster_run["head_node"] not in nodes


def test_main_job_runs_with_its_run_directory_on_s3(cluster_run):
    # jobs/selftrain.py finished round 1 from the given teacher (round 0) and evaluated both rounds; its
    # run directory is on the S3 endpoint: locally there is only the teacher checkpoint the test gave it.
    assert cluster_run["rounds"] == [0, 1]
    assert 0.0 <= cluster_run["round_1_map"] <= 1.0
    assert cluster_run["local_files"] == ["teacher.pt"]
    assert cluster_run["run_dir"].startswith("s3://")


def test_pseudo_labeling_spreads_over_both_worker_nodes(cluster_run):
    p = cluster_run["pseudo"]
    workers = set(cluster_run["worker_nodes"])
    # Teacher inference ran on both worker nodes (per-video marks name the node that inferred the video),
    # in actors placed on both of them (one declared GPU each); the labeling map tasks used both too. The
    # head (0 CPUs) ran none of it.
    assert set(p["infer_nodes"]) == workers
    assert set(p["actors"]["MapWorker(MapBatches(PackedBatches))"]) == workers
    assert set(p["label_tasks"]) == workers
    # Nothing lost or doubled on the way: one row per unlabeled video, in the directory of its source
    # (shard=<k>, on S3), whichever node labeled it.
    assert p["videos_in"] == p["rows_out"] == len(p["ids"]) == len(set(p["ids"])) == p["unlabeled"]
    assert p["num_errors"] == 0
    assert len(p["source_ids"]) > 1
    assert {k: sorted(v) for k, v in p["by_source"].items()} == {k: sorted(v) for k, v in p["source_ids"].items()}


def test_ddp_training_runs_one_worker_per_node(cluster_run):
    t = cluster_run["train"]
    # 2 Train workers that each need 1.5 of a node's 2 CPUs: they can only be on the two worker nodes.
    assert set(t["workers"]["RayTrainWorker"]) == set(cluster_run["worker_nodes"])
    assert t["final_epoch"] == 2  # train.epochs=2 in the scenario: the student's DDP run finished every epoch
