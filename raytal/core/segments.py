"""A flat table of segments over many videos: the one input type of every evaluation function.

Ground truth and predictions are both ``SegmentTable``s (ground truth has ``scores=None``). The row
order is meaningful: evaluation protocols break score ties by it (see ``raytal.eval.detection``), so
constructors keep the order of their input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raytal.core.video import Video


@dataclass
class SegmentTable:
    """Segments of many videos: ``video`` [N] str (object array), ``segments`` [N, 2] float64 seconds,
    ``labels`` [N] int64 class ids, ``scores`` [N] float64 or None (ground truth)."""

    video: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.video = np.asarray(self.video, dtype=object).reshape(-1)
        n = len(self.video)
        self.segments = np.asarray(self.segments, dtype=np.float64)
        if self.segments.size == 0:
            self.segments = self.segments.reshape(0, 2)
        if self.segments.shape != (n, 2):
            raise ValueError(f"SegmentTable: segments must be [{n}, 2] (one per video entry), got {self.segments.shape}")
        labels = np.asarray(self.labels)
        if labels.shape != (n,):
            raise ValueError(f"SegmentTable: labels must be [{n}], got {labels.shape}")
        if n and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"SegmentTable: labels must be integer class ids, got dtype {labels.dtype}")
        self.labels = labels.astype(np.int64)
        if n and self.labels.min() < 0:
            raise ValueError("SegmentTable: labels must be class ids >= 0")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if self.scores.shape != (n,):
                raise ValueError(f"SegmentTable: scores must be [{n}], got {self.scores.shape}")

    def __len__(self) -> int:
        return len(self.video)

    def select(self, mask: np.ndarray) -> "SegmentTable":
        """The rows where ``mask`` is True (or the given row indices), order kept."""
        return SegmentTable(
            self.video[mask],
            self.segments[mask],
            self.labels[mask],
            None if self.scores is None else self.scores[mask],
        )

    @staticmethod
    def empty(with_scores: bool = False) -> "SegmentTable":
        return SegmentTable(
            np.zeros(0, dtype=object),
            np.zeros((0, 2)),
            np.zeros(0, dtype=np.int64),
            np.zeros(0) if with_scores else None,
        )

    @staticmethod
    def from_videos(videos: Sequence[Video]) -> "SegmentTable":
        """Ground truth of ``Video`` records (their ``segments``/``labels``), in video then segment order."""
        if not videos:
            return SegmentTable.empty()
        counts = [len(v.labels) for v in videos]
        return SegmentTable(
            np.repeat(np.array([v.video_id for v in videos], dtype=object), counts),
            np.concatenate([np.asarray(v.segments, dtype=np.float64).reshape(-1, 2) for v in videos]),
            np.concatenate([np.asarray(v.labels, dtype=np.int64).reshape(-1) for v in videos]),
        )

    @staticmethod
    def from_arrow(video_ids: pa.Array, instances: pa.Array, with_scores: bool) -> "SegmentTable":
        """One list of instances per video (a list<struct{label_id, start, end[, score]}> column, seconds), as
        shards hold ground truth and prediction files hold detections."""
        flat = pa.concat_arrays(instances.chunks) if isinstance(instances, pa.ChunkedArray) else instances
        values = flat.flatten()
        num = values.field
        return SegmentTable(
            np.repeat(np.asarray(video_ids.to_pylist(), dtype=object), pc.list_value_length(flat).to_numpy(zero_copy_only=False)),
            np.stack([num("start").to_numpy(zero_copy_only=False), num("end").to_numpy(zero_copy_only=False)], axis=1),
            num("label_id").to_numpy(zero_copy_only=False).astype(np.int64),
            num("score").to_numpy(zero_copy_only=False) if with_scores else None,
        )

    @staticmethod
    def from_predictions(video_ids: Sequence[str], preds: Sequence[dict[str, Any]]) -> "SegmentTable":
        """Detections as ``detect()`` returns them: one dict per video with ``segments`` [K, 2] seconds,
        ``scores`` [K] and ``labels`` [K]."""
        if len(video_ids) != len(preds):
            raise ValueError(f"from_predictions: {len(video_ids)} video ids but {len(preds)} prediction dicts")
        if not preds:
            return SegmentTable.empty(with_scores=True)
        for vid, p in zip(video_ids, preds):
            missing = {"segments", "scores", "labels"} - set(p)
            if missing:
                raise ValueError(f"from_predictions: video '{vid}': missing {sorted(missing)}")
        segs = [np.asarray(p["segments"], dtype=np.float64).reshape(-1, 2) for p in preds]
        return SegmentTable(
            np.repeat(np.array(list(video_ids), dtype=object), [len(s) for s in segs]),
            np.concatenate(segs),
            np.concatenate([np.asarray(p["labels"]).reshape(-1).astype(np.int64) for p in preds]),
            np.concatenate([np.asarray(p["scores"], dtype=np.float64).reshape(-1) for p in preds]),
        )

    @staticmethod
    def concat(tables: Sequence["SegmentTable"]) -> "SegmentTable":
        """The rows of ``tables`` in order (all with scores, or all without)."""
        if not tables:
            return SegmentTable.empty()
        scored = {t.scores is not None for t in tables}
        if len(scored) != 1:
            raise ValueError("SegmentTable.concat: mixing tables with and without scores")
        return SegmentTable(
            np.concatenate([t.video for t in tables]),
            np.concatenate([t.segments for t in tables]),
            np.concatenate([t.labels for t in tables]),
            np.concatenate([t.scores for t in tables]) if scored.pop() else None,
        )
