"""The in-memory record of one video: what every loader produces and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _empty_segments() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.float64)


def _empty_ints() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


@dataclass
class Video:
    """One video. Segments are in seconds; ``features`` is float32 [T, D] or None when not loaded.

    ``weights`` / ``origins`` are set for pseudo-labeled instances (HPM weights, and which stage
    produced each instance); ground-truth instances have weight 1.
    """

    video_id: str
    subset: str
    duration: float
    fps: float
    feat_stride: int
    num_frames: int
    features: np.ndarray | None = None
    segments: np.ndarray = field(default_factory=_empty_segments)  # [N, 2] seconds
    labels: np.ndarray = field(default_factory=_empty_ints)  # [N] class ids
    labeled: bool = True
    video_labels: np.ndarray = field(default_factory=_empty_ints)  # weak setting: classes present
    weights: np.ndarray | None = None  # [N] per-instance loss weights (pseudo labels)
    origins: np.ndarray | None = None  # [N] str: which stage made each pseudo instance
    targets: np.ndarray | None = None  # [T, C] dense snippet labels (GauFuse LinPro), pseudo videos
    teacher_scores: np.ndarray | None = None  # [T, C] teacher snippet class scores (NTC), pseudo videos

    @property
    def num_snippets(self) -> int:
        if self.features is None:
            raise ValueError(f"video {self.video_id}: features are not loaded")
        return int(self.features.shape[0])
