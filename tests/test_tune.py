"""Ray Tune sweeps (issue 10): search-space checks, teacher sharing rule (and, for NoCo's keys, the teacher
checkpoints that prove it), results table, the job's entry, and one real interrupted-then-resumed 2-trial
sweep on tiny data whose test shards are deleted (so any read fails)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from raytal.cli import run_job
from raytal.config import ConfigError, load_config
from raytal.data.dataset import load_dataset_info
from raytal.distributed.sweep import (
    INTERRUPT_ENV, SweepInterrupted, _best, evaluate_best_on_test, run_sweep, teacher_free, trial_config,
    validate_space, write_table,
)
from raytal.engine.checkpoint import load_checkpoint
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import Rounds

REPO = Path(__file__).resolve().parents[1]
TINY_SWEEP = REPO / "configs" / "tune_tiny_npl.yaml"


def _cfg(*overrides: str):
    return load_config(TINY_SWEEP, list(overrides))


def test_validate_space_accepts_the_four_kinds():
    cfg = _cfg(
        "tune.space={recipe.npl.n_pos: {grid: [5, 10]}, recipe.ntc.lam: {uniform: [0.5, 0.95]},"
        " infer.nms_sigma: {loguniform: [0.1, 1.0]}, infer.fusion_temperature: {choice: [0.01, 0.03]}}"
    )
    assert validate_space(cfg) == {
        "recipe.npl.n_pos": ("grid", [5, 10]),
        "recipe.ntc.lam": ("uniform", [0.5, 0.95]),
        "infer.nms_sigma": ("loguniform", [0.1, 1.0]),
        "infer.fusion_temperature": ("choice", [0.01, 0.03]),
    }


@pytest.mark.parametrize(
    "space, message",
    [
        ("{recipe.npl.n_poss: {grid: [5]}}", "n_pos"),  # typo: the closest valid key is named
        ("{recipe.npl.n_pos: {grid: [five]}}", "expected a number"),
        ("{recipe.npl.n_pos: {range: [1, 2]}}", "expected one of"),
        ("{recipe.ntc.lam: {uniform: [0.9, 0.5]}}", "low < high"),
        ("{recipe.ntc.lam: {loguniform: [0.0, 0.5]}}", "0 < low"),
        ("{}", "tune.space is empty"),
    ],
)
def test_validate_space_rejects_bad_spaces(space, message):
    with pytest.raises(ConfigError, match=message):
        validate_space(_cfg(f"tune.space={space}"))


def test_validate_space_requires_a_validation_split():
    with pytest.raises(ConfigError, match="data.val_ratio"):
        validate_space(_cfg("data.val_ratio=0.0"))


def test_teacher_sharing_rule():
    # Pseudo-label / unlabeled-loss / inference keys leave round 0's checkpoint unchanged ...
    for key in ("recipe.npl.n_pos", "recipe.ntc.lam", "recipe.apl.tau_icd", "recipe.apl.sigma_icd",
                "recipe.gaufuse.temperature_pseudo", "infer.fusion_temperature", "train.student_init"):
        assert teacher_free(key), key
    # ... while these are part of the teacher's own training (ACP is in APL's teacher loss; NoCo's EMA is the
    # trainer's EMA, which the teacher is evaluated and labels with).
    for key in ("train.lr", "model.embed_dim", "data.labeled_ratio", "recipe.apl.acp_temperature",
                "recipe.apl.lambda_locq", "run.seed", "train.epochs", "recipe.noco.enabled",
                "recipe.noco.ema_momentum"):
        assert not teacher_free(key), key


NOCO_TEACHER_FREE = ("recipe.noco.cala=false", "recipe.noco.aic=false", "recipe.noco.hpm=false",
                     "recipe.noco.theta_c=0.5", "recipe.noco.theta_s=0.5", "recipe.noco.gamma=0.5")


def _teacher(tiny_data: Path, run_dir: Path, *overrides: str) -> dict:
    """Round 0's checkpoint of the tiny sweep's config, trained in-process as a run trains it (4 steps)."""
    cfg = _cfg(f"data.root={tiny_data}", f"run.dir={run_dir}", "train.epochs=1", "train.warmup_epochs=0",
               "train.steps_per_epoch=4", "model.embed_dim=16", "model.head_dim=16", *overrides)
    run = Rounds(cfg, LocalBackend())
    return load_checkpoint(run.teacher(run.load_index(), None))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_noco_ema_keys_change_the_teacher_and_its_other_keys_do_not(tiny_data, tmp_path):
    # NoCo's teacher is the trainer's EMA, so enabling NoCo sets the EMA momentum of every training stage,
    # round 0 included: at momentum 0.1 (binding from the first step, below the EMA's warm-up ramp
    # (1 + n) / (10 + n)) the teacher's EMA weights, which evaluation and labeling load, differ from those
    # at train.ema_momentum; the trained weights themselves do not (round 0 has no pseudo-labeled video to
    # correct). The other NoCo keys act on pseudo labels only: the checkpoint is bit-identical.
    assert all(teacher_free(o.split("=")[0]) for o in NOCO_TEACHER_FREE)
    off = _teacher(tiny_data, tmp_path / "off", "recipe.noco.ema_momentum=0.1")  # NoCo off: its momentum unused
    on = _teacher(tiny_data, tmp_path / "on", "recipe.noco.enabled=true", "recipe.noco.ema_momentum=0.1")
    variant = _teacher(tiny_data, tmp_path / "variant", "recipe.noco.enabled=true", "recipe.noco.ema_momentum=0.1",
                       *NOCO_TEACHER_FREE)
    assert _same(off["model"], on["model"]) and not _same(off["ema"], on["ema"])
    assert _same(on["model"], variant["model"]) and _same(on["ema"], variant["ema"])


def test_trial_config_applies_overrides_on_val_in_own_dir(tmp_path):
    base = _cfg()
    cfg = trial_config(base, {"recipe.npl.n_pos": 4}, tmp_path / "trials" / "abc", "/t/final.pt")
    assert cfg.recipe.npl.n_pos == 4.0 and base.recipe.npl.n_pos == 3.0  # the base config is not mutated
    # selected on val alone, every round run (ASHA stops trials, not patience)
    assert not cfg.run.eval_test and cfg.run.patience == 0 and cfg.run.dir == str(tmp_path / "trials" / "abc")
    assert cfg.run.teacher == "/t/final.pt"


def test_table_and_best_pick_the_highest_finished_trial(tmp_path):
    m = "val_average_mAP"
    rows = [
        {"trial_id": "a", "recipe.npl.n_pos": 5, m: 0.20, "rounds_evaluated": 2, "state": "TERMINATED"},
        {"trial_id": "b", "recipe.npl.n_pos": 10, m: 0.30, "rounds_evaluated": 2, "state": "TERMINATED"},
        # highest value but stopped by ASHA after round 0: not eligible (it never ran the student round)
        {"trial_id": "c", "recipe.npl.n_pos": 15, m: 0.35, "rounds_evaluated": 1, "state": "STOPPED (ASHA)"},
        {"trial_id": "d", "recipe.npl.n_pos": 20, m: math.nan, "rounds_evaluated": 0, "state": "ERROR"},
    ]
    assert _best(rows, m, rounds=1)["trial_id"] == "b"
    md = write_table(rows, ["recipe.npl.n_pos"], m, tmp_path)
    # 0.30 -> "30.00" (%), one markdown row per trial after the header and the rule
    assert "| b | 10 | 30.00 | 2 | TERMINATED |" in md.splitlines()
    assert len(md.splitlines()) == 2 + 4
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["trial_id"] for r in table] == ["a", "b", "c", "d"] and table[2]["state"] == "STOPPED (ASHA)"


def test_tune_job_reports_a_bad_space_in_one_line(capsys):
    # the job reaches run_sweep (which checks the space before starting Ray) and exits 2 with one line
    spec = importlib.util.spec_from_file_location("tune_job", REPO / "jobs" / "tune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert run_job(job.main, ["--config", str(TINY_SWEEP), "--set", "tune.space={}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: tune.space is empty: give at least one key, e.g. recipe.npl.n_pos: {grid: [5, 10]}"]


def _events(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / "trial_log.jsonl").read_text().splitlines()]


@pytest.mark.ray
def test_sweep_interrupted_then_resumed_never_reads_test(ray_session, tiny_data, tmp_path, monkeypatch):
    # The test subset's shards are moved away: any attempt to index or read them (build_index) would raise DataError.
    data = tmp_path / "tiny"
    shutil.copytree(tiny_data, data)
    info = load_dataset_info(data)
    test_shards = data / info.shards_dir / info.test_subset
    shutil.move(test_shards, tmp_path / "test_shards_aside")
    sweep = tmp_path / "sweep"
    # 2 trials (the config's 3 less one, for CI's time): one finished before the interruption, one after
    cfg = _cfg(f"data.root={data}", f"run.dir={sweep}", "tune.space={recipe.npl.n_pos: {grid: [2, 3]}}")

    # First run: the driver stops the sweep (as Ctrl+C would) once the first trial has finished.
    monkeypatch.setenv(INTERRUPT_ENV, f"1:{tmp_path / 'interrupted'}")
    with pytest.raises(SweepInterrupted):
        run_sweep(cfg, evaluate_test=False)
    first = _events(sweep)
    finished_first = {e["trial"] for e in first if e["event"] == "finish"}
    assert len(finished_first) == 1

    # Same command again: Tuner.restore finishes the sweep.
    result = run_sweep(cfg, evaluate_test=False)
    assert len(result.rows) == 2
    assert sorted(r["recipe.npl.n_pos"] for r in result.rows) == [2, 3]
    for r in result.rows:
        assert r["state"] == "TERMINATED" and 0.0 <= r["val_average_mAP"] <= 1.0
        assert (Path(r["run_dir"]) / "stages.json").is_file()
    assert len(list((sweep / "trials").iterdir())) == 2
    events = _events(sweep)
    for trial in finished_first:  # trials that finished before the interruption did not run again
        assert sum(e["trial"] == trial and e["event"] == "start" for e in events) == 1
    assert {e["trial"] for e in events if e["event"] == "finish"} == {r["trial_id"] for r in result.rows}
    assert (sweep / "teacher" / "stages.json").is_file() and result.timings["shared_teacher"]
    assert (sweep / "results.md").is_file() and (sweep / "val_map.png").stat().st_size > 0

    # The ready-to-run best config evaluates on test; only now are the test shards put back and read.
    best_cfg = load_config(result.best_config)
    assert best_cfg.run.eval_test and best_cfg.recipe.npl.n_pos == result.best["recipe.npl.n_pos"]
    shutil.move(tmp_path / "test_shards_aside", test_shards)
    test = evaluate_best_on_test(best_cfg, result.best, sweep)
    assert 0.0 <= test["average_mAP"] <= 1.0 and (sweep / "best_test.json").is_file()
    assert test["checkpoint"] == str(Path(result.best["run_dir"]) / "final" / "model.pt")  # the trial's model
