"""Ray Train acceptance (issue 8): the ingest, DDP, resume after a worker failure, resume of an extended run.

Every check drives the real ``train_ray(cfg, spec)`` (``TorchTrainer`` around the in-process loop, fed by
Ray Data) on the tiny dataset's labeled part, a stage built as the main job builds its teacher
(``Run.train_spec``). A ``TorchTrainer.fit`` costs ~15 s of start-up on 2 cores, so the runs are shared: an
in-process reference and one 1-worker and one 2-worker Ray run of 2 epochs (module fixture) serve all
four tests, which add one faulty 2-worker run and one extension of the 1-worker run.

What DDP must give, restated for the streaming ingest. Workers read disjoint splits of the stage's Ray
Data dataset (``streaming_split``, blocks handed out as workers ask for them), so a 2-worker run does not
train on a 1-worker run's global batches, and which rows a rank gets varies from run to run: neither
the old "2 workers match 1 worker's losses" nor "a resumed 2-worker run is bit-identical to an
uninterrupted one" holds any more, and a loss tolerance between differently drawn batches could only
be guessed. Nor can "the ranks' videos of a step are disjoint" be required: the dataset is seeded passes
over 10 videos mixed by a shuffle buffer, so one video recurs within a few steps even in-process (a
rank's own share of a step can hold it twice). What is exact, and checked instead:
  * 1 worker through Ray trains on the in-process stream: identical weights, EMA and metrics. This is
    the strong check of the ingest (read tasks, block order, shuffle, batch plan);
  * 2 workers: together the ranks read every row of the dataset exactly once, in halves; each takes its
    share of every step (2 of the 4 videos) from the stage's videos; the ranks do not train on the
    same sequence; after every epoch their weights are bit-identical, which, the ranks having trained
    on different videos, only DDP's gradient averaging gives; the learning-rate schedule is the 1-worker
    run's; the loss falls; a checkpoint is reported every epoch;
  * after an injected failure the group resumes from the last checkpoint (Ray's report count), every
    rank restoring it (their weights agree again), the schedule restored, and ends at the configured epoch;
  * an extended 1-worker run trains only the new epoch, and ends with the weights of the in-process
    back-end extending its own copy of the same stage (both replay the stream up to the checkpoint).
What each rank read and trained on, and its weights after each epoch, come from ``train_ray``'s test hook
``RAYTAL_TRACE_RANKS``. What Ray recorded is read from its own ledger,
``<stage>/ray_train/checkpoint_manager_snapshot.json``: ``current_report_index`` counts every
``ray.train.report`` of the run (across restarts), and ``checkpoint_results`` holds the reported metrics
of the kept checkpoints (``num_to_keep=2``: with 2 epochs, every epoch's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from raytal.config import Config, load_config
from raytal.data.index import RunIndex, build_index
from raytal.distributed.ray_train import FAIL_ONCE_ENV, TRACE_ENV, train_ray
from raytal.engine.checkpoint import load_checkpoint
from raytal.engine.trainer import TIMING_KEYS
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import Run
from raytal.selftrain.spec import TrainSpec
from raytal.selftrain.train_stage import train_local

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray

# 0.3 of the 32 tiny training videos are labeled -> 10 videos in one shard file; global batches of 4
# labeled videos, 8 steps per epoch (tiny's train.min_batches_per_epoch), shuffle buffer 64 (the default).
SMALL = ["train.warmup_epochs=1", "data.labeled_ratio=0.3", "train.torch_threads=1", "ray.cpus_per_worker=0.5"]
LABELED, BATCH, STEPS, EPOCHS, BUFFER = 10, 4, 8, 2, 64


def _config(root: Path, data_root: Path, *extra: str) -> Config:
    return load_config(REPO / "configs" / "tiny_npl.yaml",
                       [f"data.root={data_root}", f"run.dir={root}", f"train.epochs={EPOCHS}", *SMALL, *extra])


def _ledger(stage: Path) -> dict:
    return json.loads((stage / "ray_train" / "checkpoint_manager_snapshot.json").read_text())


def _reported(stage: Path) -> list[dict]:
    """Metrics of the kept checkpoints, in epoch order."""
    return sorted((r["metrics"] for r in _ledger(stage)["checkpoint_results"]), key=lambda m: m["epoch"])


def _untimed(metrics: dict) -> dict:
    """Epoch metrics without the seconds per step, which differ between any two runs."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def _digest(weights: dict[str, torch.Tensor]) -> str:
    """The trace's digest of a state dict (``ray_train._RankTrace.weights``)."""
    h = hashlib.sha256()
    for t in weights.values():
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _trace(directory: Path, rank: int) -> dict:
    """A rank's trace: the videos it read and trained on, in order, and its last weight digest per epoch."""
    records = [json.loads(line) for line in (directory / f"rank_{rank}.jsonl").read_text().splitlines()]
    return {
        "read": [r["video"] for r in records if r.get("read") == "labeled"],
        "trained": [r["video"] for r in records if r.get("trained") == "labeled"],
        "weights": {r["epoch"]: r["weights"] for r in records if "weights" in r},
    }


@contextmanager
def _env(name: str, value: str):
    """``name=value`` in the driver's environment while a run starts (train_ray ships it to the workers)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name)
        else:
            os.environ[name] = old


class Runs:
    """The shared reference runs and what is needed to start more like them."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root, self.data_root = root, data_root
        cfg = _config(root, data_root)
        self.index: RunIndex = build_index(cfg.data)
        self.spec: TrainSpec = Run(cfg, LocalBackend()).train_spec(self.index, "w1")
        self.final: dict[str, dict] = {}

    def stage(self, name: str) -> TrainSpec:
        return dataclasses.replace(self.spec, stage_dir=str(self.root / name), name=name)

    def config(self, *extra: str) -> Config:
        return _config(self.root, self.data_root, *extra)

    def train(self, name: str, *extra: str) -> dict:
        return load_checkpoint(train_ray(self.config(*extra), self.stage(name)))

    def train_traced(self, name: str, *extra: str) -> tuple[dict, Path]:
        trace = self.root / f"{name}_trace"
        trace.mkdir()
        with _env(TRACE_ENV, str(trace)):
            return self.train(name, *extra), trace


@pytest.fixture(scope="module")
def runs(ray_session, tiny_data, tmp_path_factory) -> Runs:
    r = Runs(tmp_path_factory.mktemp("ray_train"), tiny_data)
    assert r.spec.num_labeled == LABELED and len(r.spec.labeled) == 1  # what the counts below assume
    r.final["local"] = load_checkpoint(train_local(r.config(), r.stage("local")))
    r.final["w1"] = r.train("w1", "ray.num_workers=1")
    r.final["w2"], r.trace_w2 = r.train_traced("w2", "ray.num_workers=2")
    return r


def test_one_worker_trains_on_the_in_process_stream(runs):
    local, ray1 = runs.final["local"], runs.final["w1"]
    for part in ("model", "ema"):
        assert ray1[part].keys() == local[part].keys()
        for name in local[part]:
            assert torch.equal(ray1[part][name], local[part][name]), (part, name)
    assert _untimed(ray1["metrics"]) == _untimed(local["metrics"]) and ray1["epoch"] == local["epoch"] == EPOCHS
    assert set(TIMING_KEYS) <= ray1["metrics"].keys()
    assert [m["epoch"] for m in _reported(runs.root / "w1")] == [1, 2]
    assert _ledger(runs.root / "w1")["current_report_index"] == EPOCHS


def test_two_workers_split_the_data_and_average_their_gradients(runs):
    ranks = [_trace(runs.trace_w2, r) for r in (0, 1)]
    ids = set(runs.index.ids("labeled"))
    # The dataset holds enough seeded passes for the stage's global batches plus the shuffle buffer plus
    # one: ceil((2 epochs x 8 steps x 4 videos + 64) / 10) + 1 = 14 passes, every labeled video 14 times.
    # Each rank's buffer (64 + its 32 videos) asks for more than its half (70 rows), so it reads all of it.
    passes = math.ceil((EPOCHS * STEPS * BATCH + BUFFER) / LABELED) + 1
    assert passes == 14
    assert [len(r["read"]) for r in ranks] == [passes * LABELED // 2] * 2
    assert Counter(ranks[0]["read"]) + Counter(ranks[1]["read"]) == {v: passes for v in ids}
    # Each rank took its share of every step: 2 of the 4 videos, 2 epochs x 8 steps, all of the stage's.
    for r in ranks:
        assert len(r["trained"]) == EPOCHS * STEPS * BATCH // 2 and set(r["trained"]) <= ids
    # Not the same sequence: the ranks receive the same passes (one shard file, one order), and before
    # each rank's shuffle buffer was seeded by its rank they took the same videos at every step.
    assert ranks[0]["trained"] != ranks[1]["trained"]
    # Bit-identical weights after every epoch although the ranks trained on different videos: gradients
    # averaged over the ranks, every step. Rank 0's last ones are the checkpoint's.
    assert ranks[0]["weights"] == ranks[1]["weights"] and sorted(ranks[0]["weights"]) == [1, 2]
    assert ranks[0]["weights"][EPOCHS] == _digest(runs.final["w2"]["model"])

    one, two = _reported(runs.root / "w1"), _reported(runs.root / "w2")
    assert [m["epoch"] for m in two] == [1, 2] and _ledger(runs.root / "w2")["current_report_index"] == EPOCHS
    assert runs.final["w2"]["epoch"] == EPOCHS
    # The same number of global batches per epoch -> the same learning-rate schedule as one worker.
    assert [m["lr"] for m in two] == [m["lr"] for m in one]
    assert two[1]["loss"] < two[0]["loss"]  # it learns


def test_worker_failure_resumes_from_the_last_checkpoint(runs, tmp_path, monkeypatch):
    # Rank 0 raises once after training epoch index 1 (the 2nd of 2), before that epoch's checkpoint: the
    # epoch's work is lost as if the worker died mid-epoch, and the group restarts from the epoch-1
    # checkpoint. The variable is set on the driver only, after Ray started: train_ray ships it to the workers.
    marker = tmp_path / "failed_once"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"1:{marker}")
    state, trace = runs.train_traced("w2_fault", "ray.num_workers=2", "ray.max_failures=1")
    assert marker.read_text() == "failed once"  # the failure did happen
    assert state["epoch"] == EPOCHS  # the configured end, not 1 and not 2 + the redone epoch
    # Resumed, not restarted: epoch 1 reported before the failure, epoch 2 after = 2 reports (a restart
    # from scratch would report 1 + 2 = 3).
    stage = runs.root / "w2_fault"
    assert _ledger(stage)["current_report_index"] == EPOCHS
    reported = _reported(stage)
    assert [m["epoch"] for m in reported] == [1, 2]
    # The schedule's position came back with the checkpoint: the same learning rates as without a failure
    # (a fresh schedule at epoch 2 would end mid-way down the cosine, not at its end).
    assert [m["lr"] for m in reported] == [m["lr"] for m in _reported(runs.root / "w2")]
    # Both ranks restored the checkpoint: they end the redone epoch with the same weights, the final ones
    # (DDP synchronises weights only when it wraps the model, before the restore).
    last = [_trace(trace, r)["weights"][EPOCHS] for r in (0, 1)]
    assert last[0] == last[1] == _digest(state["model"])


def test_extended_run_continues_from_its_checkpoint(runs):
    # A finished 2-epoch run, started again in the same stage dir with train.epochs=3 (a copy, so the other
    # tests keep their reference); the in-process back-end extends its copy of the same stage alike.
    stage = runs.root / "w1_extended"
    shutil.copytree(runs.root / "w1", stage)
    shutil.copytree(runs.root / "local", runs.root / "local_extended")
    before = _reported(stage)
    state = runs.train("w1_extended", "train.epochs=3", "ray.num_workers=1")
    assert state["epoch"] == 3
    # Only epoch 3 was trained: one new report (2 + 1 = 3; retraining from scratch would make 2 + 3 = 5) ...
    assert _ledger(stage)["current_report_index"] == 3
    after = _reported(stage)
    assert [m["epoch"] for m in after] == [2, 3]
    # ... and the epoch-2 entry is the first run's, untouched (a retrained epoch 2 would be re-reported).
    assert after[0] == before[1]
    # Continued from the epoch-2 checkpoint on the stream replayed to it: the in-process extension's weights.
    local = load_checkpoint(train_local(runs.config("train.epochs=3"), runs.stage("local_extended")))
    assert local["epoch"] == 3
    for part in ("model", "ema"):
        for name in local[part]:
            assert torch.equal(state[part][name], local[part][name]), (part, name)
    assert after[1]["loss"] < before[1]["loss"]
