"""benchmarks/study_label_quality.py: the oracle pseudo labels are the ground truth degraded as asked."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from study_label_quality import degrade  # noqa: E402

from raytal.core.video import Video  # noqa: E402


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
