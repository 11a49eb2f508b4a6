"""benchmarks/study_label_quality.py: the oracle pseudo labels are the ground truth degraded as asked, written
per pseudo source of the run's split and trained on by the round's own student stage."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from study_label_quality import degrade, main  # noqa: E402

from raytal.config import load_config  # noqa: E402
from raytal.core.video import Video  # noqa: E402
from raytal.data.index import build_index  # noqa: E402
from raytal.data.pseudo_io import read_pseudo_labels  # noqa: E402


def _video() -> Video:
    return Video("v", "train", duration=20.0, fps=25.0, feat_stride=4, num_frames=16,
                 segments=np.array([[1.0, 3.0], [5.0, 9.0], [12.0, 18.0]]), labels=np.array([0, 2, 1]),
                 labeled=False)


def _instances(row: dict) -> tuple[np.ndarray, np.ndarray]:
    inst = row["instances"]
    return np.array([[i["start"], i["end"]] for i in inst]).reshape(-1, 2), np.array([i["label_id"] for i in inst])


def test_no_degradation_gives_the_ground_truth():
    segs, labels = _instances(degrade(_video(), 1.0, 1.0, 0.0, 3, np.random.default_rng(0)))
    np.testing.assert_array_equal(segs, [[1.0, 3.0], [5.0, 9.0], [12.0, 18.0]])
    np.testing.assert_array_equal(labels, [0, 2, 1])


def test_class_accuracy_zero_changes_every_class_and_keeps_the_segments():
    for seed in range(5):
        segs, labels = _instances(degrade(_video(), 1.0, 0.0, 0.0, 3, np.random.default_rng(seed)))
        np.testing.assert_array_equal(segs, [[1.0, 3.0], [5.0, 9.0], [12.0, 18.0]])
        assert (labels != [0, 2, 1]).all() and ((labels >= 0) & (labels < 3)).all()


def test_recall_zero_keeps_nothing_and_jitter_stays_inside_the_video():
    assert degrade(_video(), 0.0, 1.0, 0.0, 3, np.random.default_rng(0))["instances"] == []
    segs, labels = _instances(degrade(_video(), 1.0, 1.0, 5.0, 3, np.random.default_rng(1)))
    assert (segs >= 0.0).all() and (segs <= 20.0).all() and (segs[:, 1] > segs[:, 0]).all()
    assert len(labels) <= 3


def test_exact_oracle_labels_are_the_unlabeled_ground_truth(tiny_data, tmp_path):
    # End to end on tiny (1 epoch): exact oracle labels, one pseudo-label directory per unlabeled source of the
    # split, every unlabeled video's row is its hidden ground truth, so the measured quality has tIoU 1 and
    # as many pseudo instances as ground-truth ones.
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny_supervised.yaml"
    sets = [f"data.root={tiny_data}", "train.epochs=1", "train.warmup_epochs=0"]
    out = tmp_path / "oracle"
    assert main(["--config", str(config), "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    index = build_index(load_config(config, ["data.labeled_ratio=0.1", *sets]).data)
    unlabeled = [p for p in index.pseudo_sources() if p[0] == "unlabeled"]
    assert sorted(d.name for d in (out / "pseudo").iterdir()) == [f"shard={k}" for k in range(len(unlabeled))]
    rows = read_pseudo_labels(out / "pseudo")
    videos = list(index.videos("unlabeled"))
    assert sorted(rows) == sorted(v.video_id for v in videos)
    for v in videos:
        np.testing.assert_array_equal(rows[v.video_id].segments, v.segments)
        np.testing.assert_array_equal(rows[v.video_id].labels, v.labels)
    result = json.loads((out / "result.json").read_text())
    assert result["num_pseudo"] == result["num_gt"] == sum(len(v.labels) for v in videos)
    assert result["mean_tiou"] == 1.0 and 0.0 <= result["average_mAP"] <= 1.0
    assert (out / "train" / "final.pt").is_file()
