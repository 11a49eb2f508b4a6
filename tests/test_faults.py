"""Fault injection (issue 12): what clusters do to a job, and proof that nothing is lost.

* an inference actor of the Ray Data pipeline SIGKILLed mid-round -> every video still has exactly one
  row, the same rows as an undisturbed run;
* a Ray Train worker failing mid-training (``RAYTAL_FAIL_ONCE_AT_EPOCH``) -> the group restarts from the
  last epoch checkpoint and ends at the configured epoch;
* a worker node removed while a round runs -> the round finishes on the remaining node, every video's
  row present;
* the driver (``jobs/selftrain.py``) killed between rounds -> re-running resumes, and no finished stage
  is recomputed (stage ledger timestamps and output files unchanged).

All are slow (each starts Ray or a whole simulated cluster): ``@pytest.mark.slow``; all but the Train
worker's also ``@pytest.mark.fault``, which ``make test`` (and CI) runs. The Train worker's failure is
covered there by ``tests/test_ray_train.py`` (1 and 2 workers, on the runs that test shares). The scenarios that
need a Ray of their own (a Cluster, or an environment variable that must exist before Ray starts) run in
a child process through ``tests/cluster_scenarios.py``; see its docstring for why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster_scenarios import SCENARIO_TIMEOUT_S, child_env, make_tiny, rows_by_source, run_scenario
from raytal.data.index import RunIndex
from raytal.data.pseudo_io import read_pseudo_labels

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("data") / "tiny")


def _assert_partitioned(run: dict) -> None:
    """Every pseudo source's directory holds exactly that source's videos, once each, and nothing lies
    outside them (training joins source k's shard rows with shard=k only)."""
    assert len(run["source_ids"]) > 1  # several sources, or the check proves little
    assert {k: sorted(v) for k, v in run["by_source"].items()} == {k: sorted(v) for k, v in run["source_ids"].items()}


# ------------------------------------------------------------------------------ Ray Data actor


@pytest.mark.fault
def test_inference_actor_killed_mid_pipeline_loses_no_video(tiny, tmp_path):
    r = run_scenario("actor_killed", tmp_path, tiny)
    n = r["unlabeled"]
    assert r["killed_pid"] is not None  # the fault really happened ...
    assert r["reinferred"] > 0  # ... and Ray retried the dead actor's batch on a restarted actor
    # Every unlabeled video has exactly one row after the kill: counts equal, ids distinct, no error rows.
    for run in (r["clean"], r["faulty"]):
        assert run["videos_in"] == run["rows_out"] == len(run["ids"]) == n
        assert len(set(run["ids"])) == n and run["num_errors"] == 0
        _assert_partitioned(run)  # the retried batch's rows went to their own source's directory
    assert sorted(r["faulty"]["ids"]) == sorted(r["clean"]["ids"])
    assert r["same_labels"]  # the retried batch gives the same pseudo labels as the undisturbed run


# ------------------------------------------------------------------------------- Ray Train worker


def test_train_worker_failure_resumes_from_the_last_checkpoint(tiny, tmp_path):
    marker = tmp_path / "failed_once"
    r = run_scenario("train_worker_fails", tmp_path / "work", tiny, RAYTAL_FAIL_ONCE_AT_EPOCH=f"1:{marker}")
    assert marker.read_text() == "failed once"  # rank 0 did raise at epoch 1
    # 3 epochs configured: the run ends at epoch 3, not 3 + the redone ones, and not short of it.
    assert r["final_epoch"] == 3
    # Checkpoints are reported once per finished epoch; the 2 kept (num_to_keep=2) are the last two.
    assert r["checkpoint_epochs"] == [2, 3]
    # Resumed, not restarted: epoch 1 reported before the failure, then epochs 2 and 3 = 3 reports in all
    # (a restart from scratch would report 1 + 3 = 4).
    assert r["reports"] == 3


# ------------------------------------------------------------------------------------- node loss


@pytest.mark.fault
def test_node_removed_during_a_round_finishes_on_the_rest(tiny, tmp_path):
    r = run_scenario("node_removed", tmp_path, tiny)
    n = r["unlabeled"]
    removed = r["removed"]["node"]
    survivor = next(w for w in r["worker_nodes"] if w != removed)
    assert removed not in r["alive_nodes"] and survivor in r["alive_nodes"]
    assert 0 < r["removed"]["seen"] < n  # removed mid-round, with work done and work left
    p = r["pipeline"]
    # The removed node was running the teacher; the other node took over and finished the round.
    assert set(p["infer_nodes"]) == {removed, survivor}
    assert p["videos_in"] == p["rows_out"] == len(p["ids"]) == len(set(p["ids"])) == n
    assert p["num_errors"] == 0
    _assert_partitioned(p)


# ------------------------------------------------------------------------------------ driver kill


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Ray's GCS, raylet, workers...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (no clean-up code of its own gets to run)."""
    tree = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def _stages(run: Path) -> dict:
    try:
        return json.loads((run / "stages.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return {}


def _mtimes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


@pytest.mark.fault
def test_driver_killed_between_rounds_resumes_without_recomputing(tiny, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "jobs" / "selftrain.py"), "--config", str(REPO / "configs" / "tiny_npl.yaml"),
           "--set", f"data.root={tiny}", "--set", f"run.dir={run}", "--set", "train.epochs=2",
           "--set", "train.warmup_epochs=1", "--set", "train.steps_per_epoch=2", "--set", "train.shuffle_buffer=4"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO,
                            start_new_session=True)  # its own process group: the kill takes Ray with it
    try:
        deadline = time.monotonic() + SCENARIO_TIMEOUT_S
        while "round_1/pseudo" not in _stages(run):
            assert proc.poll() is None, f"the first run ended early:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "round_1/pseudo never finished"
            time.sleep(0.2)
    finally:
        _kill_tree(proc)
        log.close()
    before = _stages(run)
    assert "finished_1_rounds" not in before and "round_1/train" not in before  # killed between the rounds' stages
    files_before = {d: _mtimes(run / d) for d in ("round_0", "round_1/pseudo")}
    pseudo_ids = sorted(read_pseudo_labels(run / "round_1" / "pseudo"))

    second = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=REPO,
                            timeout=SCENARIO_TIMEOUT_S)
    assert second.returncode == 0, second.stderr[-4000:]
    after = _stages(run)
    # Every stage finished before the kill is reused as it was: same result, same finish time.
    for name, entry in before.items():
        assert after[name] == entry, f"stage {name} was recomputed"
    # ... and its files were not rewritten (teacher checkpoints, pseudo-label Parquet).
    for d, mtimes in files_before.items():
        now = _mtimes(run / d)
        assert {k: now.get(k) for k in mtimes} == mtimes, f"{d} was rewritten"
    # The rest ran once: the round completed and the run is marked finished.
    assert {"round_1/quality", "round_1/train", "round_1/eval", "finished_1_rounds"} <= set(after)
    assert all(after[name]["finished"] > max(e["finished"] for e in before.values())
               for name in set(after) - set(before))
    # Nothing lost: one pseudo-label row per unlabeled video, in its source's directory, and the metrics
    # of both rounds. The split is an index over the dataset's shards, not a copy of them.
    pseudo = after["round_1/pseudo"]["result"]
    index = RunIndex.load(str(run / "index.json"))
    assert pseudo["videos_in"] == pseudo["rows_out"] == len(pseudo_ids) == index.count("unlabeled") > 0
    assert after["split"]["result"]["videos"]["unlabeled"] == index.count("unlabeled")
    sources = index.pseudo_sources()
    assert len(sources) > 1 and {k: sorted(v) for k, v in rows_by_source(run / "round_1" / "pseudo").items()} == {
        f"shard={k}": sorted(src.ids) for k, (_, src) in enumerate(sources)}
    assert not (run / "data").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    assert f"run directory: {run}" in second.stdout
