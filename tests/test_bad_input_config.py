"""Bad configuration through the real command-line jobs (``python jobs/X.py`` as a subprocess).

Every case must end with exit status 2 and exactly one line on stderr that names the key, file or field,
no traceback and no log file. The config is checked before anything else: ``data.root`` points at a
directory that does not exist and ``run.dir`` must never be created, so a case that got past the config
would fail differently (and these runs need no dataset and never start Ray).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _selftrain(*sets: str, config: str = "tiny_npl.yaml") -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        keys = [f"data.root={tmp / 'nodata'}", f"run.dir={tmp / 'run'}", *sets]
        return ["selftrain", "--config", str(CONFIGS / config), "--in-process", *[a for s in keys for a in ("--set", s)]]
    return argv


def _bomb_config(tmp: Path) -> list[str]:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (tmp / "bomb.yaml").write_text(f"_base_: {CONFIGS / 'tiny_npl.yaml'}\ntune:\n  space:\n"
                                   + "".join(f"    {line}\n" for line in lines))
    return ["selftrain", "--config", str(tmp / "bomb.yaml"), "--in-process", "--set", f"run.dir={tmp / 'run'}"]


def _binary_base(tmp: Path) -> list[str]:
    torch.save({"w": torch.zeros(4)}, tmp / "weights.pt")
    (tmp / "cfg.yaml").write_text("_base_: weights.pt\nrun:\n  rounds: 1\n")
    return ["selftrain", "--config", str(tmp / "cfg.yaml"), "--in-process", "--set", f"run.dir={tmp / 'run'}"]


def _evaluate_binary_prediction(tmp: Path) -> list[str]:
    (tmp / "gt.json").write_text(json.dumps({"database": {"a": {
        "subset": "test", "duration": 20.0, "fps": 30.0, "annotations": [{"label": "Jump", "segment": [1.0, 4.0]}]}}}))
    torch.save({"w": torch.zeros(4)}, tmp / "pred.json")
    return ["evaluate", "--gt", str(tmp / "gt.json"), "--pred", str(tmp / "pred.json")]


def _compare_run_with_bad_config(tmp: Path) -> list[str]:
    run = tmp / "run_a"
    run.mkdir()
    (run / "config.yaml").write_text("run:\n  name: a\ntrain:\n  lr: .nan\n")
    (run / "metrics.json").write_text(json.dumps({"rounds": [{"round": 0, "eval": {
        "average_mAP": 0.1, "mAP": {"0.5": 0.1}}}]}))
    return ["compare", str(run), "--out", str(tmp / "p.png")]


def _duplicate_section(tmp: Path) -> list[str]:
    # The issue: the second data: section silently replaced the first (here data.root, so the run would have
    # read the default dataset).
    (tmp / "dup.yaml").write_text(f"_base_: {CONFIGS / 'tiny_npl.yaml'}\ndata:\n  root: {tmp / 'nodata'}\n"
                                  "train:\n  epochs: 1\ndata:\n  labeled_ratio: 0.5\n")
    return ["selftrain", "--config", str(tmp / "dup.yaml"), "--in-process", "--set", f"run.dir={tmp / 'run'}"]


def _tune(*sets: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["tune", "--config", str(CONFIGS / "tune_tiny_npl.yaml"),
                        *[a for s in (f"run.dir={tmp / 'run'}", *sets) for a in ("--set", s)]]


def _train(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["train", "--config", str(CONFIGS / "tiny_supervised.yaml"), "--set",
                        f"data.root={tmp / 'nodata'}", "--set", f"run.dir={tmp / 'run'}", *args]


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("lr NaN", _selftrain("train.lr=.nan"), "error: config key 'train.lr': expected a finite number > 0, got nan"),
    ("labeled ratio 0", _selftrain("data.labeled_ratio=0"),
     "error: config key 'data.labeled_ratio': expected a finite number in (0, 1], got 0.0"),
    ("labeled ratio 1.5", _selftrain("data.labeled_ratio=1.5"),
     "error: config key 'data.labeled_ratio': expected a finite number in (0, 1], got 1.5"),
    ("labeled ratio -1", _selftrain("data.labeled_ratio=-1"),
     "error: config key 'data.labeled_ratio': expected a finite number in (0, 1], got -1.0"),
    ("zero epochs", _selftrain("train.epochs=0"), "error: config key 'train.epochs': expected an integer >= 1, got 0"),
    ("zero batch", _selftrain("train.batch_size=0"),
     "error: config key 'train.batch_size': expected an integer >= 1, got 0"),
    ("zero pyramid levels", _selftrain("model.fpn_levels=0"),
     "error: config key 'model.fpn_levels': expected an integer >= 1, got 0"),
    ("heads do not divide the width", _selftrain("model.num_heads=3"),
     "error: config key 'model.num_heads': expected a divisor of model.embed_dim = 32, got 3"),
    ("unknown nms", _selftrain("infer.nms=greedy"),
     "error: config key 'infer.nms': expected one of 'soft', 'hard', 'none', 'fusion', got 'greedy'"),
    ("zero crop", _selftrain("data.max_seq_len=0"),
     "error: config key 'data.max_seq_len': expected an integer >= 1, got 0"),
    ("two selection methods", _selftrain("recipe.apl.enabled=true", "model.quality_heads=true"),
     "error: config keys 'recipe.npl.enabled' and 'recipe.apl.enabled': expected one pseudo-label selection "
     "method, got both true"),
    ("apl without quality heads", _selftrain("model.quality_heads=false", config="tiny_apl.yaml"),
     "error: config key 'model.quality_heads': expected true with recipe.apl.enabled (APL selects by the "
     "tIoU/tND quality heads), got false"),
    ("batch not divisible by workers", _selftrain("ray.num_workers=3"),
     "error: config key 'train.batch_size': expected a multiple of ray.num_workers = 3 (an equal share per "
     "worker), got 4"),
    ("gaufuse schedule past the epochs", _selftrain("train.epochs=3", "recipe.gaufuse.schedule=[1, 3]",
                                                    config="tiny_gaufuse.yaml"),
     "error: config key 'recipe.gaufuse.schedule': expected strictly increasing epochs in [1, train.epochs = 3), "
     "got [1, 3]"),
    ("alias bomb", _bomb_config, "bomb.yaml: refused: more than 100000 values with its aliases expanded"),
    ("binary _base_", _binary_base, "weights.pt: not a text YAML file (not UTF-8 at byte "),
    ("train: even window", _train("--set", "model.window=4"),
     "error: config key 'model.window': expected an odd integer >= 1 or 0 (global attention), got 4"),
    ("train: 3 workers for a batch of 4", _train("--workers", "3"),
     "error: config key 'train.batch_size': expected a multiple of ray.num_workers = 3"),
    ("tune: test metric", _tune("tune.metric=test_average_mAP"),
     "error: config key 'tune.metric': expected one of 'val_average_mAP', 'val_mAP_0.5', got 'test_average_mAP'"),
    ("tune: no samples", _tune("tune.num_samples=0"),
     "error: config key 'tune.num_samples': expected an integer >= 1, got 0"),
    ("evaluate: tIoU above 1", lambda tmp: ["evaluate", "--gt", "gt.json", "--pred", "p.json", "--tiou", "0.5,1.5"],
     "error: --tiou: expected start:step:stop or a comma list of thresholds in [0, 1], got '0.5,1.5'"),
    ("evaluate: binary prediction file", _evaluate_binary_prediction, "pred.json: not valid JSON"),
    ("compare: a run's config with NaN", _compare_run_with_bad_config,
     "run_a/config.yaml: config key 'train.lr': expected a finite number > 0, got nan"),
    # issue 31: config text and values that were taken silently, or failed only inside Ray
    ("YAML: a section given twice", _duplicate_section,
     "dup.yaml: key 'data' is given twice, on line 2 and line 6 (YAML would keep only the last silently)"),
    ("run.dir=s3:/x (one slash)", _selftrain("run.dir=s3:/x"),
     "error: config key 'run.dir': expected a local path or an s3://BUCKET/KEY or gs://BUCKET/KEY URI, got 's3:/x'"),
    ("data.root=s3:bucket/data", _selftrain("data.root=s3:bucket/data"),
     "config key 'data.root': expected a local path or an s3://BUCKET/KEY or gs://BUCKET/KEY URI, got "
     "'s3:bucket/data'"),
    ("data.root=gs:/", _selftrain("data.root=gs:/"), "config key 'data.root': expected a local path or an s3://"),
    ("run.teacher=http://host/t.pt", _selftrain("run.teacher=http://host/t.pt"),
     "config key 'run.teacher': expected a local path or an s3://BUCKET/KEY or gs://BUCKET/KEY URI, got 'http://"),
    ("pseudolabel: lr NaN", lambda tmp: ["pseudolabel", "--config", str(CONFIGS / "tiny_npl.yaml"), "--checkpoint",
                                         "t.pt", "--round", "1", "--stages", "raytal.selftrain.common:x",
                                         "--set", "train.lr=.nan"],
     "error: config key 'train.lr': expected a finite number > 0, got nan"),
]


@pytest.mark.parametrize("case, argv_of, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_through_the_real_job(tmp_path, case, argv_of, expected):
    job, *argv = argv_of(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAYTAL_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], f"{case}: {expected!r} not in {lines[0]!r}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "s3:").exists()  # refused before any work
    assert not (tmp_path / "logs").exists()  # an input error, not an internal one
