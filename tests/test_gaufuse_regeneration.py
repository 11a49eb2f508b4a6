"""GauFuse's regeneration schedule (issue 11): the student relabels the unlabeled videos at the configured
epochs and trains on the Δ labels between consecutive generations, one training segment per generation
(``round_1/train_to_<e>``), all in the stage directory ``round_1/train``."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raytal.config import ConfigError, load_config
from raytal.core.video import Video
from raytal.data.index import Source
from raytal.data.pseudo_io import PSEUDO_SCHEMA, pseudo_row, read_pseudo_labels
from raytal.data.shards import write_shards
from raytal.engine.checkpoint import load_checkpoint
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import run_selftrain
from raytal.selftrain.spec import PseudoSource, TrainSpec
from raytal.data.stream import read_file_rows
from raytal.selftrain.training_data import stage_streams, training_videos

ROOT = Path(__file__).resolve().parents[1]


def _video(vid: str, labeled: bool) -> Video:
    return Video(vid, "validation", duration=4.0, fps=1.0, feat_stride=1, num_frames=4,
                 features=np.zeros((4, 3), dtype=np.float32), segments=np.array([[0.0, 2.0]]),
                 labels=np.array([0]), labeled=labeled)


def _write_generation(directory: Path, targets: dict[str, np.ndarray | None]) -> None:
    rows = []
    for vid, y in targets.items():
        if y is None:
            rows.append(pseudo_row(vid, 1, "t.pt", None, None, None, None, None, error="boom"))
        else:
            rows.append(pseudo_row(vid, 1, "t.pt", np.array([[0.0, 2.0]]), np.array([1]), np.array([0.8]),
                                   np.array([1.0]), ["fusion"], targets=y))
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA), directory / "part-0.parquet")


def pseudo_videos(ps: PseudoSource, setting: str, delta_targets: bool = False) -> list[Video]:
    """The training videos of one pseudo source, as a student stage's pseudo-labeled stream reads them."""
    spec = TrainSpec("s", "/nonexistent", 2, 3, setting, pseudo=(ps,), num_pseudo=ps.source.count,
                     delta_targets=delta_targets)
    stream = stage_streams(load_config(None), spec)["pseudo"]
    return list(training_videos(stream.rows(read_file_rows(f)) for f in stream.files))


def test_training_videos_carry_delta_labels_after_a_regeneration(tmp_path):
    (shard,) = write_shards([_video("a", False), _video("b", False)], tmp_path / "shards")
    source = Source(shard, ("a", "b"), 2)
    y0a = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    y1a = np.array([[0.25, 0.0], [0.75, 0.5], [0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y1b = np.array([[0.0, 0.5], [0.0, 0.5], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    _write_generation(tmp_path / "g0", {"a": y0a, "b": None})  # b failed in generation 0
    _write_generation(tmp_path / "g1", {"a": y1a, "b": y1b})

    first = pseudo_videos(PseudoSource("unlabeled", source, str(tmp_path / "g1")), "semi")
    np.testing.assert_array_equal({v.video_id: v.targets for v in first}["a"], y1a)  # no predecessor: Y itself
    # An error row has nothing to train on: of generation 0, only a trains.
    assert [v.video_id for v in pseudo_videos(PseudoSource("unlabeled", source, str(tmp_path / "g0")), "semi")] == ["a"]

    pseudo = pseudo_videos(PseudoSource("unlabeled", source, str(tmp_path / "g1"), str(tmp_path / "g0")), "semi",
                           delta_targets=True)
    by_id = {v.video_id: v for v in pseudo}
    assert sorted(by_id) == ["a", "b"] and not any(v.labeled for v in by_id.values())
    # Δ = Y1 − Y0 worked out by hand: the label of class 0 moved from snippet 0 to snippet 1, class 1 grew
    expected_a = np.array([[-0.25, 0.0], [0.25, 0.5], [0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(by_id["a"].targets, expected_a)
    np.testing.assert_allclose(by_id["b"].targets, y1b)  # an error row before: a first generation
    np.testing.assert_array_equal(by_id["a"].labels, [1])  # instances come from the new generation


def _cfg(tiny_data: Path, run_dir: Path, *extra: str):
    return load_config(ROOT / "configs" / "tiny_gaufuse.yaml", [
        f"data.root={tiny_data}", f"run.dir={run_dir}", "run.rounds=1", "train.epochs=4", "train.warmup_epochs=1",
        "recipe.gaufuse.schedule=[1, 2]", *extra,
    ])


class _KilledInLastSegment(LocalBackend):
    """Dies where a driver kill during epoch 4 would: after the last regeneration, with the last segment
    (epochs 2-4, on Δ labels) trained to the end of epoch 3 — its epoch checkpoint ``last.pt`` holds what
    the uninterrupted segment held then, as a segment's stream and schedule do not depend on where it stops."""

    def train(self, cfg, spec):
        if spec.delta_targets and spec.stop_epoch is None:
            super().train(cfg, dataclasses.replace(spec, stop_epoch=3))
            raise KeyboardInterrupt("killed")
        return super().train(cfg, spec)


def test_schedule_regenerates_and_trains_on_delta_labels(tiny_data: Path, tmp_path: Path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    metrics = run_selftrain(_cfg(tiny_data, run), LocalBackend())

    stages = json.loads((run / "stages.json").read_text())["stages"]
    for name in ("round_1/pseudo", "round_1/train_to_1", "round_1/pseudo_at_1", "round_1/quality_at_1",
                 "round_1/train_to_2", "round_1/pseudo_at_2", "round_1/quality_at_2", "round_1/train"):
        assert name in stages, f"stage {name} missing from the ledger"
    first, second = (load_checkpoint(run / "round_1" / "train" / f"epoch_{e}.pt") for e in (1, 2))
    final = load_checkpoint(run / "round_1" / "train" / "final.pt")
    assert (first["epoch"], second["epoch"], final["epoch"]) == (1, 2, 4)
    # The teacher's labels (to epoch 1) and the student's first generation (to epoch 2) train as they are
    # (BCE on Y); from the student's second generation on, the Δ-label loss.
    for segment in (first, second):
        assert "snippet" in segment["metrics"] and "delta" not in segment["metrics"]
    assert "delta" in final["metrics"] and math.isfinite(final["metrics"]["delta"])

    gen0, gen2 = read_pseudo_labels(run / "round_1" / "pseudo"), read_pseudo_labels(run / "round_1" / "pseudo_at_2")
    assert sorted(gen0) == sorted(gen2)  # every unlabeled video relabeled
    assert all(r.teacher.endswith("epoch_2.pt") for r in gen2.values())  # by the student, not the teacher
    regen = metrics["rounds"][1]["regenerations"]
    assert [g["epoch"] for g in regen] == [1, 2] and regen[1]["pseudo"]["rows_out"] == len(gen2)
    assert "(epoch 2)" in (run / "report.md").read_text()

    # Killed in the last segment: the same command resumes from its epoch-3 checkpoint, replays the segment's
    # stream (seeded by its first epoch, 2) up to it, and ends with the uninterrupted run's weights.
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_selftrain(_cfg(tiny_data, resumed), _KilledInLastSegment())
    assert load_checkpoint(resumed / "round_1" / "train" / "last.pt")["epoch"] == 3
    run_selftrain(_cfg(tiny_data, resumed), LocalBackend())
    again = load_checkpoint(resumed / "round_1" / "train" / "final.pt")
    assert again["epoch"] == 4
    for part in ("model", "ema"):
        for k, v in final[part].items():
            assert torch.equal(again[part][k], v), (part, k)


def test_schedule_outside_the_epochs_is_a_config_error(tiny_data: Path, tmp_path: Path):
    # Refused when the config is loaded, before any data is read (train.epochs = 4 in _cfg).
    with pytest.raises(ConfigError, match=r"recipe\.gaufuse\.schedule': expected strictly increasing epochs in "
                                          r"\[1, train\.epochs = 4\), got \[4\]"):
        _cfg(tiny_data, tmp_path / "bad", "recipe.gaufuse.schedule=[4]")


@pytest.mark.ray
@pytest.mark.slow
def test_schedule_through_ray(tiny_data: Path, tmp_path: Path, ray_session):
    """The same segments on the Ray back-end: Ray Train restarts its run where the last segment stopped and
    the regenerations go through the Ray Data pipeline."""
    from raytal.distributed.backend import RayBackend

    run = tmp_path / "ray"
    cfg = _cfg(tiny_data, run)
    run_selftrain(cfg, RayBackend(cfg))
    epochs = [load_checkpoint(run / "round_1" / "train" / f)["epoch"] for f in ("epoch_1.pt", "epoch_2.pt", "final.pt")]
    assert epochs == [1, 2, 4]
    assert "delta" in load_checkpoint(run / "round_1" / "train" / "final.pt")["metrics"]
    unlabeled = read_pseudo_labels(run / "round_1" / "pseudo")
    for e in (1, 2):
        assert sorted(read_pseudo_labels(run / "round_1" / f"pseudo_at_{e}")) == sorted(unlabeled)
