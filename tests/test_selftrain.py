"""The main job (raytal.selftrain.rounds.run_selftrain, jobs/selftrain.py): run directory, finished-run
detection and resume after a kill between pseudo-labeling and student training (Ray == in-process: the Ray
run on S3 in tests/test_pool_and_storage.py).

One tiny NPL round (8 epochs at lr 5e-3: the shortest schedule whose teacher already yields pseudo
labels, so the student really trains on them) is run once per module and reused as the uninterrupted
reference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raytal.config import Config, load_config
from raytal.data.index import RunIndex
from raytal.data.pseudo_io import read_pseudo_labels
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain
from raytal.selftrain.teacher import Predictor

REPO = Path(__file__).resolve().parents[1]
TINY_SCHEDULE = ["train.epochs=8", "train.lr=0.005", "run.rounds=1", "train.seed=0"]
TIOUS = ("0.3", "0.4", "0.5", "0.6", "0.7")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class SimulatedKill(RuntimeError):
    """Stands for the driver dying (SIGKILL, node loss) at a chosen point of the run."""


class RecordingBackend(LocalBackend):
    """The in-process back-end, recording which stages it was asked to compute.

    ``kill_before_student``: die when asked for a student (round ≥ 1) training stage, i.e. after the
    round's pseudo labels and their quality have been recorded but before the student exists.
    ``refuse_all``: any call is an error (a finished run must compute nothing).
    """

    def __init__(self, kill_before_student: bool = False, refuse_all: bool = False):
        self.calls: list[tuple[str, str]] = []
        self.kill_before_student = kill_before_student
        self.refuse_all = refuse_all

    def train(self, cfg, spec):
        self.calls.append(("train", spec.name.split("/")[0]))
        if self.refuse_all:
            raise AssertionError(f"a finished run asked to train {spec.name}")
        if self.kill_before_student and spec.pseudo:
            raise SimulatedKill(f"killed before {spec.name}")
        return super().train(cfg, spec)

    def pseudolabel(self, cfg, spec):
        self.calls.append(("pseudo", f"round_{spec.round}"))
        if self.refuse_all:
            raise AssertionError(f"a finished run asked for pseudo labels of round {spec.round}")
        return super().pseudolabel(cfg, spec)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_data")
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True)
    return out


def tiny_config(root: Path, run_dir: Path, *extra: str) -> Config:
    return load_config(REPO / "configs" / "tiny_npl.yaml",
                       [f"data.root={root}", f"run.dir={run_dir}", *TINY_SCHEDULE, *extra])


@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory) -> tuple[Path, dict, RecordingBackend]:
    """The uninterrupted reference run (in-process)."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny_npl"
    backend = RecordingBackend()
    metrics = run_selftrain(tiny_config(tiny_root, run_dir), backend)
    return run_dir, metrics, backend


def map_values(metrics: dict) -> list[float]:
    """Every mAP number of a run, round by round: per threshold, then the average."""
    out = []
    for r in metrics["rounds"]:
        out += [r["eval"]["mAP"][t] for t in TIOUS] + [r["eval"]["average_mAP"]]
    return out


def quality_values(metrics: dict) -> list[float]:
    keys = ("class_accuracy", "mean_tiou", "positive_accuracy", "num_pseudo", "num_gt")
    return [r["quality"][k] for r in metrics["rounds"][1:] for k in keys]


# ------------------------------------------------------------------------- (a) the run directory


def test_run_computes_each_stage_once(finished_run):
    _, _, backend = finished_run
    assert backend.calls == [("train", "round_0"), ("pseudo", "round_1"), ("train", "round_1")]


def test_run_directory_holds_config_stages_and_report(finished_run, tiny_root):
    run_dir, metrics, _ = finished_run
    saved = load_config(run_dir / "config.yaml")
    assert saved.run.dir == str(run_dir) and saved.train.epochs == 8 and saved.recipe.npl.enabled
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    expected = {"split", "round_0/train", "round_0/val", "round_0/eval", "round_1/pseudo", "round_1/quality",
                "round_1/train", "round_1/val", "round_1/eval", "finished_1_rounds"}
    assert set(stages) == expected
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    report = (run_dir / "report.md").read_text()
    for heading in ("# tiny: 1 self-training round, 10 % labels", "## The run's model", "## Test mAP (%) by round",
                    "## Validation mAP (%) by round", "## Pseudo-label quality", "## Time per stage"):
        assert heading in report
    # the report's round-1 average is the metrics' one, in percent with 2 decimals
    assert f"| {100 * metrics['rounds'][1]['eval']['average_mAP']:.2f} |" in report
    for png in ("map_and_quality_by_round.png", "count_ratio.png", "timelines.png"):
        path = run_dir / "plots" / png
        assert path.read_bytes()[:8] == PNG_MAGIC, png
    assert (run_dir / "round_0" / "train" / "final.pt").exists()
    assert (run_dir / "round_1" / "train" / "final.pt").exists()


def test_metrics_have_map_per_threshold_quality_and_timings(finished_run, tiny_root):
    run_dir, metrics, _ = finished_run
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:
        ev = r["eval"]
        assert sorted(ev["mAP"]) == list(TIOUS)
        assert all(0.0 <= ev["mAP"][t] <= 1.0 for t in TIOUS)
        # average mAP is the plain mean over the 5 thresholds
        assert ev["average_mAP"] == pytest.approx(sum(ev["mAP"][t] for t in TIOUS) / 5, abs=1e-12)
    assert set(rounds[0]["timings"]) == {"train", "val", "eval"}
    assert set(rounds[1]["timings"]) == {"pseudo", "quality", "train", "val", "eval"}
    assert all(s >= 0.0 for r in rounds for s in r["timings"].values())
    assert "quality" not in rounds[0]
    q, p = rounds[1]["quality"], rounds[1]["pseudo"]
    assert {"class_accuracy", "mean_tiou", "positive_accuracy", "count_ratio", "num_pseudo", "num_gt"} <= set(q)
    # the tiny dataset has 5 classes; the reference schedule must give the student pseudo labels to learn from
    assert len(q["count_ratio"]) == 5 and q["num_pseudo"] > 0
    unlabeled = RunIndex.load(str(run_dir / "index.json")).ids("unlabeled")
    assert p["videos_in"] == p["rows_out"] == len(unlabeled) and p["num_errors"] == 0
    pseudo_files = sorted((run_dir / "round_1" / "pseudo").rglob("*.parquet"))
    assert pseudo_files and all(f.parent.name.startswith("shard=") for f in pseudo_files)  # one dir per source
    records = read_pseudo_labels(run_dir / "round_1" / "pseudo")
    assert set(records) == set(unlabeled)


def test_second_invocation_says_finished_and_recomputes_nothing(finished_run, tiny_root, caplog):
    run_dir, metrics, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "config.yaml"}
    backend = RecordingBackend(refuse_all=True)
    with caplog.at_level(logging.INFO, logger="raytal.selftrain"):
        again = run_selftrain(tiny_config(tiny_root, run_dir), backend)
    assert backend.calls == []
    assert again == metrics
    assert any("already finished" in rec.getMessage() for rec in caplog.records)
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "config.yaml"}
    assert after == before


def test_cli_on_a_finished_run_prints_its_table(finished_run, tiny_root, capsys):
    run_dir, metrics, _ = finished_run
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import selftrain as selftrain_job
    finally:
        sys.path.remove(str(REPO / "jobs"))
    rc = selftrain_job.main(["--config", str(REPO / "configs" / "tiny_npl.yaml"), "--in-process",
                             "--set", f"data.root={tiny_root}", "--set", f"run.dir={run_dir}",
                             *[a for s in TINY_SCHEDULE for a in ("--set", s)]])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"run directory: {run_dir}" in out
    r1 = metrics["rounds"][1]["eval"]
    assert f"| 1 | {100 * r1['mAP']['0.3']:.2f} |" in out


# ------------------------------------------------------------------------------- (b) resume


def test_killed_between_pseudo_and_student_resumes_to_the_same_metrics(finished_run, tiny_root, tmp_path):
    _, reference, _ = finished_run
    run_dir = tmp_path / "tiny_npl"
    cfg = tiny_config(tiny_root, run_dir)
    first = RecordingBackend(kill_before_student=True)
    with pytest.raises(SimulatedKill):
        run_selftrain(cfg, first)
    assert first.calls == [("train", "round_0"), ("pseudo", "round_1"), ("train", "round_1")]
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    assert {"round_1/pseudo", "round_1/quality"} <= set(stages)
    assert "round_1/train" not in stages and not (run_dir / "metrics.json").exists()
    pseudo_mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "round_1" / "pseudo").rglob("*.parquet")}
    teacher_mtime = (run_dir / "round_0" / "train" / "final.pt").stat().st_mtime_ns

    second = RecordingBackend()
    resumed = run_selftrain(tiny_config(tiny_root, run_dir), second)
    # only the student is computed; the teacher and the pseudo labels are reused untouched
    assert second.calls == [("train", "round_1")]
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "round_1" / "pseudo").rglob("*.parquet")} == pseudo_mtimes
    assert (run_dir / "round_0" / "train" / "final.pt").stat().st_mtime_ns == teacher_mtime
    assert map_values(resumed) == pytest.approx(map_values(reference), abs=1e-9)
    assert quality_values(resumed) == pytest.approx(quality_values(reference), abs=1e-9)
    assert json.loads((run_dir / "metrics.json").read_text())["rounds"][1]["eval"] == resumed["rounds"][1]["eval"]


# ------------------------------------------------------------------------------- (c) the run's model


class DegradingBackend(LocalBackend):
    """The in-process back-end, training the rounds in ``degraded`` for 1 epoch at lr 1e-9: real checkpoints of a
    detector still at its initialisation, whose val mAP is far below a trained round's."""

    def __init__(self, degraded: set[str]):
        self.degraded = degraded

    def train(self, cfg, spec):
        if spec.name.split("/")[0] in self.degraded:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, warmup_epochs=0, lr=1e-9))
        return super().train(cfg, spec)


def test_a_worse_round_2_hands_out_round_1s_model_and_says_so(tiny_root, tmp_path, caplog):
    run_dir = tmp_path / "degrading"
    cfg = load_config(REPO / "configs" / "base" / "tiny.yaml",
                      [f"data.root={tiny_root}", f"run.dir={run_dir}", "train.epochs=8", "train.lr=0.005",
                       "run.rounds=3", "run.patience=1"])
    with caplog.at_level(logging.INFO, logger="raytal.selftrain"):
        metrics = run_selftrain(cfg, DegradingBackend({"round_0", "round_2"}))
    val = [r["val"]["average_mAP"] for r in metrics["rounds"]]
    assert val[1] > val[0] and val[2] < val[1]  # what the construction makes: round 1 trained, 0 and 2 not
    # round 2 did not beat round 1 (patience 1): no round 3, and round 1's model is the run's
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2] and not (run_dir / "round_3").exists()
    assert metrics["selection"]["round"] == 1
    assert metrics["selection"]["stopped"].startswith("after round 2 of 3: val average mAP did not improve")
    final = (run_dir / "final" / "model.pt").read_bytes()
    assert final == (run_dir / "round_1" / "train" / "final.pt").read_bytes()
    assert final != (run_dir / "round_2" / "train" / "final.pt").read_bytes()
    assert (run_dir / "final" / "predictions.json").read_bytes() == (run_dir / "round_1" / "predictions.json").read_bytes()
    # the report and the log say which round and why, with every round's val mAP
    why = f"round 1: the highest validation average mAP (val average mAP %: round 0 {100 * val[0]:.2f}"
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# tiny: 2 self-training rounds, 10 % labels") and why in report
    assert "## Validation mAP (%) by round" in report and "## Test mAP (%) by round" in report
    assert any(why in rec.getMessage() for rec in caplog.records)
    # test mAP is still reported for every round
    assert all(0.0 <= r["eval"]["average_mAP"] <= 1.0 for r in metrics["rounds"])


def test_nothing_to_pseudo_label_is_round_0_alone(tiny_root, tmp_path):
    run_dir = tmp_path / "all_labeled"
    cfg = load_config(REPO / "configs" / "base" / "tiny.yaml",
                      [f"data.root={tiny_root}", f"run.dir={run_dir}", "train.epochs=1", "data.labeled_ratio=1.0",
                       "run.rounds=2"])
    backend = RecordingBackend()
    metrics = run_selftrain(cfg, backend)
    assert backend.calls == [("train", "round_0")]  # no student retrained on 0 pseudo-labeled videos
    assert [r["round"] for r in metrics["rounds"]] == [0] and metrics["selection"]["round"] == 0
    assert "nothing to pseudo-label" in metrics["selection"]["stopped"]
    assert (run_dir / "final" / "model.pt").read_bytes() == (run_dir / "round_0" / "train" / "final.pt").read_bytes()


def test_val_count_threshold_keeps_as_many_val_detections_as_val_instances(tiny_root, tmp_path):
    run_dir = tmp_path / "val_count"
    cfg = load_config(REPO / "configs" / "base" / "tiny.yaml",
                      [f"data.root={tiny_root}", f"run.dir={run_dir}", "train.epochs=8", "train.lr=0.005",
                       "run.rounds=1", "recipe.min_score_rule=val_count"])
    metrics = run_selftrain(cfg, LocalBackend())
    threshold = metrics["rounds"][1]["min_score"]
    assert threshold == json.loads((run_dir / "stages.json").read_text())["stages"]["round_1/threshold"]["result"]
    # the teacher's detections on the val videos (the evaluation's) scoring >= it are as many as their instances
    index = RunIndex.load(str(run_dir / "index.json"))
    val = list(index.videos("val"))
    scores = np.concatenate([p["scores"] for p in Predictor(cfg, str(run_dir / "round_0" / "train" / "final.pt"))(val)])
    assert int((scores >= threshold).sum()) == sum(len(v.labels) for v in val)
    # and every pseudo label scores at least that much
    records = read_pseudo_labels(run_dir / "round_1" / "pseudo")
    assert metrics["rounds"][1]["quality"]["num_pseudo"] > 0
    assert all((r.scores >= np.float32(threshold)).all() for r in records.values())
