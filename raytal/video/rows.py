"""The rows decoding hands to the backbone: one per window (its uint8 clip), then one end row per video.

Kept apart from the backbone's code so that a decode task imports no torch (a Ray worker's memory and
start-up). A video is identified by its key, its position in the list of videos to extract; its end row's
``info`` (JSON) holds the decoder's summary or the error, and ``sent``, the count of window rows it sent, so a
consumer knows when every row of the video has arrived, whatever order they come in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from raytal.video.decode import ClipSpec, VideoError, WindowReader
from raytal.video.sources import VideoFile

END = -1  # ``window`` of a video's end row
CLIP_SCHEMA = pa.schema([("key", pa.int64()), ("window", pa.int32()), ("clip", pa.large_binary()),
                         ("info", pa.string())])
FEATURE_SCHEMA = pa.schema([("key", pa.int64()), ("window", pa.int32()), ("feature", pa.large_binary()),
                            ("info", pa.string())])


def decode_rows(key: int, video: VideoFile, spec: ClipSpec) -> Iterator[pa.Table]:
    """One video -> a table of window rows per decoded chunk, then its end row (never raises for a bad file)."""
    reader = WindowReader(video.path, spec, video.size)
    sent = 0
    try:
        for first, clips in reader:
            n = len(clips)
            yield pa.table({"key": pa.array([key] * n, pa.int64()),
                            "window": pa.array(np.arange(first, first + n), pa.int32()),
                            "clip": pa.array([c.tobytes() for c in clips], pa.large_binary()),
                            "info": pa.nulls(n, pa.string())}, schema=CLIP_SCHEMA)
            sent += n
        s = reader.summary
        info = {"frames": s.frames, "fps": s.fps, "duration": s.duration, "T": s.T, "warning": s.warning}
    except VideoError as e:
        info = {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - one bad video is an error row, never a dead job
        info = {"error": f"{video.path}: cannot decode: {type(e).__name__}: {e}"}
    info["sent"] = sent
    yield pa.table({"key": [key], "window": pa.array([END], pa.int32()), "clip": pa.array([b""], pa.large_binary()),
                    "info": [json.dumps(info)]}, schema=CLIP_SCHEMA)


def decode_units(batch: pa.Table, *, spec: ClipSpec) -> Iterator[pa.Table]:
    """A decode task of the Ray pipeline: each row of ``batch`` is a unit, ``videos``: [{key, video (VideoFile
    fields)}], decoded one video after the other."""
    for unit in batch.column("videos").to_pylist():
        for item in unit:
            yield from decode_rows(item["key"], VideoFile(**item["video"]), spec)
