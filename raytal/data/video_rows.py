"""Training videos as Arrow rows, losslessly: how Ray Data carries them from read tasks to Train workers.

A training video is a shard row plus what pseudo-labeling adds (per-instance weights, dense LinPro
targets, the teacher's snippet scores). ``videos_to_rows`` / ``rows_to_training_videos`` round-trip every
field the trainer reads bit for bit (float32 features and dense arrays, float64 seconds, float32 weights),
so a Train worker fed through Ray Data trains on exactly what the in-process back-end reads.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from raytal.core.video import Video

INSTANCE = pa.struct([("label_id", pa.int32()), ("start", pa.float64()), ("end", pa.float64()),
                      ("weight", pa.float32())])
TRAIN_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("subset", pa.string()), ("duration", pa.float64()), ("fps", pa.float64()),
    ("feat_stride", pa.int32()), ("num_frames", pa.int32()), ("T", pa.int32()), ("D", pa.int32()),
    ("features", pa.large_binary()), ("labeled", pa.bool_()), ("instances", pa.list_(INSTANCE)),
    ("video_labels", pa.list_(pa.int32())), ("C", pa.int32()),
    ("targets", pa.large_binary()), ("teacher_scores", pa.large_binary()),
])


def _dense_bytes(a: np.ndarray | None) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype=np.float32).tobytes()


def _width(v: Video) -> int:
    for a in (v.targets, v.teacher_scores):
        if a is not None:
            return int(np.asarray(a).shape[1])
    return 0


def videos_to_rows(videos: Iterable[Video]) -> pa.Table:
    """Videos (features loaded) -> a ``TRAIN_SCHEMA`` table, one row each."""
    rows = []
    for v in videos:
        feats = np.ascontiguousarray(v.features, dtype=np.float32)
        segs = np.asarray(v.segments, dtype=np.float64).reshape(-1, 2)
        w = np.ones(len(segs), np.float32) if v.weights is None else np.asarray(v.weights, np.float32).reshape(-1)
        rows.append({
            "video_id": v.video_id, "subset": v.subset, "duration": float(v.duration), "fps": float(v.fps),
            "feat_stride": int(v.feat_stride), "num_frames": int(v.num_frames), "T": feats.shape[0],
            "D": feats.shape[1], "features": feats.tobytes(), "labeled": bool(v.labeled),
            "instances": [{"label_id": int(c), "start": float(s), "end": float(e), "weight": float(q)}
                          for (s, e), c, q in zip(segs, np.asarray(v.labels).reshape(-1), w)],
            "video_labels": [int(c) for c in np.asarray(v.video_labels).reshape(-1)], "C": _width(v),
            "targets": _dense_bytes(v.targets), "teacher_scores": _dense_bytes(v.teacher_scores),
        })
    return pa.Table.from_pylist(rows, schema=TRAIN_SCHEMA)


def _dense(raw: bytes | None, T: int, C: int) -> np.ndarray | None:
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).reshape(T, C).copy()


def rows_to_training_videos(table: pa.Table) -> list[Video]:
    """Inverse of ``videos_to_rows`` (arrays copied out of the Arrow buffers)."""
    cols = {n: table.column(n).to_pylist() for n in TRAIN_SCHEMA.names if n not in ("features", "instances")}
    feats = table.column("features")
    out = []
    for i, vid in enumerate(cols["video_id"]):
        T, D, C = cols["T"][i], cols["D"][i], cols["C"][i]
        inst = table.column("instances")[i].as_py() or []
        out.append(Video(
            video_id=vid, subset=cols["subset"][i], duration=cols["duration"][i], fps=cols["fps"][i],
            feat_stride=cols["feat_stride"][i], num_frames=cols["num_frames"][i],
            features=np.frombuffer(feats[i].as_buffer(), dtype=np.float32).reshape(T, D).copy(),
            segments=np.array([[x["start"], x["end"]] for x in inst], dtype=np.float64).reshape(-1, 2),
            labels=np.array([x["label_id"] for x in inst], dtype=np.int64),
            labeled=bool(cols["labeled"][i]),
            video_labels=np.asarray(cols["video_labels"][i] or [], dtype=np.int64),
            weights=np.array([x["weight"] for x in inst], dtype=np.float32),
            targets=_dense(cols["targets"][i], T, C), teacher_scores=_dense(cols["teacher_scores"][i], T, C),
        ))
    return out
