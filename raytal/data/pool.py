"""An unlabeled pool from a user's own files: a directory of unannotated ``<id>.npy`` features.

``unlabeled_videos`` yields one ``Video`` per file (``subset="unlabeled"``, ``labeled=False``, no
segments), loading and checking one file at a time, so ``write_shards`` streams a pool of any size
while holding one shard. Every file is checked like an annotated video's (2-D, D, floating point,
finite; errors name the file). An id that is also an annotated video of the dataset is refused: the
pool is for videos the annotations do not cover.

Per-video duration and fps come from an optional video-info file, else defaults: fps = the dataset's
default fps, duration = the frames the T snippets cover, ((T - 1) * feat_stride + num_frames) / fps
(``raytal.core.grid``: snippet i spans frames [i*feat_stride, i*feat_stride + num_frames)). The
video-info file is

* CSV with a header: an id column (``video_id``, ``video`` or ``id``), and ``duration`` (or
  ``seconds``) and/or ``fps``; other columns are ignored. ActivityNet's ``video_info`` CSVs
  (``video,numFrame,seconds,fps,rfps,subset,featureFrame``) are of this kind; or
* JSON: an object id -> {"duration": s, "fps": f} (either key optional), or an annotation-style
  object whose ``database`` maps ids to such records.

Rows for ids without a feature file are ignored (an info file usually lists every video of a
dataset); a feature file whose id has no row, when a file is given, is an error: a mismatch of
names would otherwise silently fall back to the defaults.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytal.core.errors import DataError, where
from raytal.core.jsonfile import read_json
from raytal.core.video import Video
from raytal.data.features import load_features

POOL_SUBSET = "unlabeled"
ID_COLUMNS = ("video_id", "video", "id")
DURATION_COLUMNS = ("duration", "seconds")


@dataclass(frozen=True)
class VideoInfo:
    """Duration (s) and fps of one video; None = not in the file (the default applies)."""

    duration: float | None
    fps: float | None


def _positive(value: Any, path: Path, vid: str | None, fld: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not (math.isfinite(x) and x > 0):
        raise DataError(f"{where(path, vid, fld)}: expected a positive number, got {value!r}")
    return x


def _first(names: list[str], options: tuple[str, ...]) -> str | None:
    return next((o for o in options if o in names), None)


def _read_csv(path: Path) -> dict[str, VideoInfo]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names = [n.strip() for n in reader.fieldnames or []]
        reader.fieldnames = names
        id_col = _first(names, ID_COLUMNS)
        dur_col, fps_col = _first(names, DURATION_COLUMNS), ("fps" if "fps" in names else None)
        if id_col is None or (dur_col is None and fps_col is None):
            raise DataError(
                f"{where(path, None, 'header')}: expected an id column ({' / '.join(ID_COLUMNS)}) and a "
                f"duration ({' / '.join(DURATION_COLUMNS)}) and/or fps column, got {names}"
            )
        out: dict[str, VideoInfo] = {}
        for line, row in enumerate(reader, start=2):
            vid = (row.get(id_col) or "").strip()
            if not vid:
                raise DataError(f"{where(path, None, f'line {line}: {id_col}')}: empty video id")
            if vid in out:
                raise DataError(f"{where(path, vid, f'line {line}: {id_col}')}: duplicate video id")
            out[vid] = VideoInfo(
                _positive(row.get(dur_col), path, vid, f"line {line}: {dur_col}") if dur_col else None,
                _positive(row.get(fps_col), path, vid, f"line {line}: {fps_col}") if fps_col else None,
            )
    return out


def _read_json(path: Path) -> dict[str, VideoInfo]:
    data = read_json(path, DataError)
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        data = data["database"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping video ids to {{duration, fps}}")
    out: dict[str, VideoInfo] = {}
    for vid, rec in data.items():
        if not isinstance(rec, dict):
            raise DataError(f"{where(path, vid)}: expected an object with duration and/or fps, got {rec!r}")
        out[vid] = VideoInfo(
            _positive(rec["duration"], path, vid, "duration") if "duration" in rec else None,
            _positive(rec["fps"], path, vid, "fps") if "fps" in rec else None,
        )
    return out


def read_video_info(path: str | Path) -> dict[str, VideoInfo]:
    """id -> ``VideoInfo`` from a CSV (``.csv``) or JSON video-info file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video-info file not found")
    return _read_csv(path) if path.suffix.lower() == ".csv" else _read_json(path)


def unlabeled_videos(
    features_dir: str | Path,
    *,
    feature_dim: int,
    feat_stride: int,
    num_frames: int,
    default_fps: float,
    info: Mapping[str, VideoInfo] | None = None,
    annotated: Mapping[str, str] | None = None,
    feature_prefix: str = "",
    force_fps: bool = False,
) -> Iterator[Video]:
    """Yield the pool's videos in file-name order, each loaded and checked when it is reached.

    ``annotated`` maps the dataset's annotated ids to their subsets (refused here). A file
    ``<feature_prefix><id>.npy`` gives video ``<id>`` (the prefix is stripped, so ids match the
    annotation ids); its info row is looked up by the file's stem first, then by the id.
    ``force_fps`` uses ``default_fps`` for every video, whatever the info file says.
    """
    fdir = Path(features_dir)
    if not fdir.is_dir():
        raise DataError(f"{fdir}: unlabeled feature directory not found")
    names = sorted(p.name for p in fdir.iterdir() if p.suffix == ".npy" and p.is_file())
    if not names:
        raise DataError(f"{fdir}: no .npy feature files (expected <video_id>.npy, float32 [T, D])")
    for name in names:
        stem = name[: -len(".npy")]
        vid = stem[len(feature_prefix):] if feature_prefix and stem.startswith(feature_prefix) else stem
        path = fdir / name
        if annotated is not None and vid in annotated:
            raise DataError(
                f"{where(path, vid, 'video_id')}: also an annotated video (subset '{annotated[vid]}'); "
                "expected only videos the annotations do not cover in the unlabeled pool"
            )
        row = None
        if info is not None:
            row = info.get(stem) or info.get(vid)
            if row is None:
                raise DataError(f"{where(path, vid)}: no row in the video-info file for '{stem}'")
        fps = default_fps if force_fps or row is None or row.fps is None else row.fps
        video = Video(vid, POOL_SUBSET, 0.0, fps, feat_stride, num_frames, labeled=False)
        prefix = stem[: len(stem) - len(vid)]
        video.features = load_features(fdir, video, feature_dim, prefix=prefix)
        T = video.features.shape[0]
        video.duration = row.duration if row is not None and row.duration is not None else (
            ((T - 1) * feat_stride + num_frames) / fps
        )
        yield video
