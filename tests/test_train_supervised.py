"""jobs/train.py, the supervised job, is round 0 of ``run_selftrain`` (``run.rounds = 0``): its run directory,
metrics.json's ``rounds[0]``, resuming a stage killed mid-way to the very model of an uninterrupted run, a
bad key's one-line error, and ``--workers N`` through Ray Train."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import struct
from pathlib import Path

import pytest
import torch

from raytal.cli import run_job
from raytal.config import load_config
from raytal.data.index import RunIndex
from raytal.engine.checkpoint import load_checkpoint
from raytal.selftrain.ledger import StageLog
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain
from raytal.selftrain.train_stage import EpochScalars

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny_supervised.yaml"
SMALL = [
    "model.embed_dim=16", "model.head_dim=16", "model.head_layers=1", "train.epochs=2",
    "train.warmup_epochs=1", "train.torch_threads=1",
]
TIOUS = ["0.3", "0.4", "0.5", "0.6", "0.7"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _job_main():
    spec = importlib.util.spec_from_file_location("train_job", REPO / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def job_argv(root: Path, run: Path, *extra: str) -> list[str]:
    sets = [f"data.root={root}", f"run.dir={run}", *SMALL, *extra]
    return ["--config", str(CONFIG), *[a for s in sets for a in ("--set", s)]]


def logged_epochs(tb_dir: Path) -> list[list[int]]:
    """The epochs of the ``train/loss`` scalars in each TensorBoard events file, file by file (one file per
    training call). TFRecord framing: u64 length, u32 crc, payload, u32 crc."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data, pos, epochs = path.read_bytes(), 0, []
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if any(v.tag == "train/loss" for v in event.summary.value):
                epochs.append(int(event.step))
        out.append(epochs)
    return out


@pytest.fixture(scope="module")
def finished(tiny_data: Path, tmp_path_factory) -> tuple[Path, dict, str]:
    """One uninterrupted job, in-process: (run directory, metrics, what it printed)."""
    run = tmp_path_factory.mktemp("job") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _job_main()(job_argv(tiny_data, run)) == 0
    return run, json.loads((run / "metrics.json").read_text()), out.getvalue()


def test_run_directory_is_round_0_of_the_main_job(finished, tiny_data):
    run, metrics, _ = finished
    for name in ("config.yaml", "index.json", "stages.json", "metrics.json", "report.md"):
        assert (run / name).is_file(), name
    saved = load_config(run / "config.yaml")
    assert saved.run.rounds == 0 and saved.train.epochs == 2 and saved.run.dir == str(run)
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert set(stages) == {"split", "round_0/train", "round_0/val", "round_0/eval", "finished_0_rounds"}
    # the split is an index over the dataset's shards: every training video labeled (tiny_supervised: 100 %) but
    # the validation part, round(0.2 x 32) = 6 of them
    index = RunIndex.load(str(run / "index.json"))
    assert index.root == str(tiny_data) and index.count("labeled") == 26 and index.count("val") == 6
    assert index.count("unlabeled") == 0 and index.count("test") > 0
    assert not (run / "data").exists()  # no copy of the features
    stage = run / "round_0" / "train"
    final, last = load_checkpoint(stage / "final.pt"), load_checkpoint(stage / "last.pt")
    assert final["kind"] == "detector" and final["epoch"] == last["epoch"] == 2
    # the ledger records it relative to the run (so a moved run resumes) and resolves it where it is read
    assert stages["round_0/train"]["result"] == "$RUN/round_0/train/final.pt"
    assert StageLog(str(run / "stages.json")).result("round_0/train") == str(stage / "final.pt")
    assert logged_epochs(stage / "tb") == [[0, 1]]
    for png in ("map_and_quality_by_round.png", "count_ratio.png"):
        assert (run / "plots" / png).read_bytes()[:8] == PNG_MAGIC, png


def test_metrics_hold_round_0s_test_evaluation(finished):
    run, metrics, printed = finished
    assert [r["round"] for r in metrics["rounds"]] == [0]
    r0 = metrics["rounds"][0]
    assert sorted(r0["eval"]["mAP"]) == TIOUS and "quality" not in r0 and "pseudo" not in r0
    # the average is the plain mean over the five thresholds
    assert r0["eval"]["average_mAP"] == pytest.approx(sum(r0["eval"]["mAP"][t] for t in TIOUS) / 5, abs=1e-12)
    assert 0.0 <= r0["eval"]["average_mAP"] <= 1.0
    assert set(r0["timings"]) == {"train", "val", "eval"}
    assert r0["eval"] == json.loads((run / "stages.json").read_text())["stages"]["round_0/eval"]["result"]
    # the job prints the table of report.md: round 0's mAP per threshold and average, in percent
    row = "| 0 | " + " | ".join(f"{100 * r0['eval']['mAP'][t]:.2f}" for t in TIOUS) \
        + f" | {100 * r0['eval']['average_mAP']:.2f} |"
    assert row in printed.splitlines() and row in (run / "report.md").read_text()
    assert f"run directory: {run}" in printed


class SimulatedKill(RuntimeError):
    """Stands for the job dying (SIGKILL, node loss) after the stage's first epoch checkpoint."""


def test_segments_of_a_stage_within_one_second_keep_their_own_scalars(tmp_path):
    # Two segments of one stage back to back (a kill and an immediate resume): tensorboardX names files by
    # the second, so without a finer suffix the second file replaced the first and epoch 0 was lost.
    for epoch in (0, 1):
        scalars = EpochScalars(str(tmp_path))
        scalars(epoch, {"loss": 1.0})
        scalars.close()
    assert logged_epochs(tmp_path / "tb") == [[0], [1]]


class KilledAfterFirstEpoch(LocalBackend):
    def train(self, cfg, spec):
        super().train(cfg, dataclasses.replace(spec, stop_epoch=1))
        raise SimulatedKill(spec.name)


def test_killed_stage_resumes_to_the_uninterrupted_model(finished, tiny_data, tmp_path, capsys):
    reference, ref_metrics, _ = finished
    run = tmp_path / "run"
    argv = job_argv(tiny_data, run)
    cfg = load_config(CONFIG, [f"data.root={tiny_data}", f"run.dir={run}", *SMALL, "run.rounds=0"])
    with pytest.raises(SimulatedKill):
        run_selftrain(cfg, KilledAfterFirstEpoch())
    stage = run / "round_0" / "train"
    assert load_checkpoint(stage / "last.pt")["epoch"] == 1
    assert "round_0/train" not in json.loads((run / "stages.json").read_text())["stages"]

    # The same command again: the stage restarts from its epoch-1 checkpoint and trains only epoch 1 ...
    assert _job_main()(argv) == 0
    assert logged_epochs(stage / "tb") == [[0], [1]]
    # ... on the stream an uninterrupted stage reads from there: the same weights, the same mAP.
    got, want = load_checkpoint(stage / "final.pt"), load_checkpoint(reference / "round_0" / "train" / "final.pt")
    for key in ("model", "ema"):
        assert got[key].keys() == want[key].keys()
        assert all(torch.equal(got[key][k], want[key][k]) for k in want[key]), key
    assert json.loads((run / "metrics.json").read_text())["rounds"][0]["eval"] == ref_metrics["rounds"][0]["eval"]

    # A finished run computes nothing more: a third invocation only prints its table.
    before = (run / "stages.json").read_text()
    assert _job_main()(argv) == 0
    assert (run / "stages.json").read_text() == before
    assert "| 0 | " in capsys.readouterr().out


def test_bad_key_is_one_line_with_exit_status_2(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_job(_job_main(), job_argv(tiny_data, run, "train.lrr=1")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "did you mean 'lr'" in err
    assert not run.exists()
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        _job_main()([*job_argv(tiny_data, run), "--workers", "-1"])
    assert e.value.code == 2 and "--workers must be >= 0" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.ray
def test_workers_train_through_ray(finished, tiny_data, tmp_path, ray_session, capsys):
    run = tmp_path / "ray"
    assert _job_main()([*job_argv(tiny_data, run), "--workers", "2"]) == 0
    assert load_config(run / "config.yaml").ray.num_workers == 2
    stage = run / "round_0" / "train"
    assert (stage / "ray_train").is_dir()  # Ray Train's own run (its checkpoints) lives in the stage
    assert load_checkpoint(stage / "final.pt")["epoch"] == 2
    assert logged_epochs(stage / "tb") == [[0, 1]]  # rank 0's scalars, one per epoch
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [0] and sorted(metrics["rounds"][0]["eval"]["mAP"]) == TIOUS
    assert "| 0 | " in capsys.readouterr().out
