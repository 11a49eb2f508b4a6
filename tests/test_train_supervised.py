"""train_supervised / jobs/train.py end to end on the tiny preset: run directory, resume, config guard."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from raytal.cli import run_job
from raytal.config import load_config
from raytal.data.dataset import load_dataset
from raytal.engine.checkpoint import load_checkpoint
from raytal.train.supervised import config_changes, train_supervised

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "model.embed_dim=16", "model.head_dim=16", "model.head_layers=1", "train.epochs=2",
    "train.warmup_epochs=1", "train.torch_threads=1",
]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(out)],
                   check=True, capture_output=True)
    return out


def _cfg(root: Path, *extra: str):
    return load_config(REPO / "configs" / "tiny_supervised.yaml", [f"data.root={root}", *SMALL, *extra])


def test_run_directory_and_resume(tiny_root: Path, tmp_path: Path):
    cfg = _cfg(tiny_root)
    ds = load_dataset(cfg.data)
    run = tmp_path / "run"
    metrics = train_supervised(cfg, ds, run)
    assert [r["epoch"] for r in metrics["epochs"]] == [0, 1]
    assert metrics["run"]["resumed_from_epoch"] == 0 and metrics["run"]["labeled_videos"] == len(ds.labeled)
    assert set(metrics["final"]["mAP"]) == {"0.3", "0.4", "0.5", "0.6", "0.7"}
    assert 0.0 <= metrics["final"]["average_mAP"] <= 1.0
    for name in ("config.yaml", "metrics.json", "loss_curves.png", "map_curves.png", "results.md"):
        assert (run / name).is_file(), name
    assert "supervised (100 % labels)" in (run / "results.md").read_text()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    assert any((run / "tb").iterdir())

    # Extending a finished run: it resumes at epoch 2 and trains only epochs 2 and 3.
    longer = _cfg(tiny_root, "train.epochs=4")
    metrics = train_supervised(longer, ds, run)
    assert metrics["run"]["resumed_from_epoch"] == 2
    assert [r["epoch"] for r in metrics["epochs"]] == [0, 1, 2, 3]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 4

    # A different setting must not silently resume from this run's checkpoint.
    other = _cfg(tiny_root, "train.epochs=4", "train.lr=0.01")
    with pytest.raises(ValueError, match=r"cannot resume.*train\.lr"):
        train_supervised(other, ds, run)


def test_config_changes_ignore_resumable_keys(tiny_root: Path):
    a = _cfg(tiny_root)
    b = _cfg(tiny_root, "train.epochs=9", "run.name=x", "data.labeled_ratio=0.5")
    assert config_changes(a, b) == ["data.labeled_ratio"]


def _job_main():
    spec = importlib.util.spec_from_file_location("train_job", REPO / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_job_prints_the_table(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "jobrun"
    argv = ["--config", str(REPO / "configs" / "tiny_supervised.yaml"), "--set", f"data.root={tiny_root}",
            "--set", f"run.dir={run}", "--set", "train.epochs=1", *[a for s in SMALL[:3] for a in ("--set", s)]]
    main = _job_main()
    assert main(argv) == 0
    assert "| supervised (100 % labels) |" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["run"]["epochs"] == 1
    assert run_job(main, argv + ["--set", "train.lrr=1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
