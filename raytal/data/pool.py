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

A duration shorter than the video's features (``checked_durations``: the last snippet's centre lies more
than a snippet past the given end) would clip every detection after it. As the annotation loader does
with a segment past a video's end, it is fixed with one warning each (the duration becomes the time the
features span, the default without an info file), and refused with ``strict``; the check reads the
feature files' headers only, before any work.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytal.core import storage
from raytal.core.errors import DataError, where
from raytal.core.jsonfile import note_duplicates, read_json
from raytal.core.video import Video
from raytal.data.features import LENGTH_TOLERANCE_SNIPPETS, load_features, npy_length

POOL_SUBSET = "unlabeled"
ID_COLUMNS = ("video_id", "video", "id")
DURATION_COLUMNS = ("duration", "seconds")


@dataclass(frozen=True)
class VideoInfo:
    """Duration (s) and fps of one video; None = not in the file (the default applies)."""

    duration: float | None
    fps: float | None


def _positive(value: Any, path: str | Path, vid: str | None, fld: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not (math.isfinite(x) and x > 0):
        raise DataError(f"{where(path, vid, fld)}: expected a positive number, got {value!r}")
    return x


def _first(names: list[str], options: tuple[str, ...]) -> str | None:
    return next((o for o in options if o in names), None)


MAX_VIDEO_INFO_BYTES = 512 << 20  # ActivityNet's video_info CSV is ~1 MB


def _read_csv(path: str) -> dict[str, VideoInfo]:
    text = storage.read_user_text(path, MAX_VIDEO_INFO_BYTES, DataError, "CSV", f"{MAX_VIDEO_INFO_BYTES >> 20} MiB",
                                  encoding="utf-8-sig")
    with io.StringIO(text, newline="") as f:
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


def _read_json(path: str) -> dict[str, VideoInfo]:
    data = read_json(path, DataError, object_pairs_hook=note_duplicates)
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        data = data["database"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping video ids to {{duration, fps}}")
    if data.duplicates:  # json keeps the last silently
        vid, first, later = data.duplicates[0]
        raise DataError(f"{where(path, vid)}: duplicate video id (entries {first} and {later})")
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
    """id -> ``VideoInfo`` from a CSV (``.csv``) or JSON video-info file (see the module docstring), local or
    a storage URI."""
    path = storage.resolve(path)
    if not storage.is_file(path):
        raise DataError(f"{path}: video-info file not found")
    return _read_csv(path) if path.lower().endswith(".csv") else _read_json(path)


def features_span(T: int, feat_stride: int, num_frames: int, fps: float) -> float:
    """Seconds covered by T snippets: snippet i spans frames [i*feat_stride, i*feat_stride + num_frames)."""
    return ((T - 1) * feat_stride + num_frames) / fps


def checked_durations(
    files: Iterable[tuple[str, str]],
    info: Mapping[str, VideoInfo],
    *,
    feat_stride: int,
    num_frames: int,
    default_fps: float,
    source: str | Path,
    strict: bool = False,
    force_fps: bool = False,
) -> tuple[dict[str, VideoInfo], list[str]]:
    """``info`` with each duration shorter than its video's features replaced by the features' span, and
    one warning per fix; ``strict``: DataError listing them instead. ``files`` are (info key, feature file)
    pairs; T is read from each file's header."""
    fixed = dict(info)
    problems: list[str] = []
    for key, path in files:
        row = info.get(key)
        if row is None or row.duration is None:
            continue
        fps = default_fps if force_fps or row.fps is None else row.fps
        T = npy_length(path, key)
        centre = (T - 1) * feat_stride + num_frames / 2  # the last snippet's centre frame
        if row.duration * fps >= centre - feat_stride * LENGTH_TOLERANCE_SNIPPETS:
            continue
        span = features_span(T, feat_stride, num_frames, fps)
        problems.append(f"{where(source, key, 'duration')}: {row.duration:g} s is shorter than the video's "
                        f"features ({path}: {T} snippets span {span:.2f} s at {fps:g} fps), so detections after it "
                        "would be clipped away")
        fixed[key] = VideoInfo(span, row.fps)
    if strict and problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; strict mode: fix the video-info file")
    return fixed, [f"{p}: using the span instead" for p in problems]


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
    info_source: str | Path = "video-info",
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Video]:
    """Yield the pool's videos in file-name order, each loaded and checked when it is reached.

    ``annotated`` maps the dataset's annotated ids to their subsets (refused here). A file
    ``<feature_prefix><id>.npy`` gives video ``<id>`` (the prefix is stripped, so ids match the
    annotation ids); its info row is looked up by the file's stem first, then by the id.
    ``force_fps`` uses ``default_fps`` for every video, whatever the info file says. Before the first video,
    the info file's durations are checked against the files' lengths (``checked_durations``, with ``strict``;
    each fix is passed to ``warn``).
    """
    fdir = Path(features_dir)
    if not fdir.is_dir():
        raise DataError(f"{fdir}: unlabeled feature directory not found")
    names = sorted(p.name for p in fdir.iterdir() if p.suffix == ".npy" and p.is_file())
    if not names:
        raise DataError(f"{fdir}: no .npy feature files (expected <video_id>.npy, float32 [T, D])")

    def split(name: str) -> tuple[str, str]:
        stem = name[: -len(".npy")]
        return stem, stem[len(feature_prefix):] if feature_prefix and stem.startswith(feature_prefix) else stem

    if info is not None:
        keys = [(stem if stem in info else vid, str(fdir / name)) for name in names for stem, vid in [split(name)]]
        info, fixes = checked_durations([k for k in keys if k[0] in info], info, feat_stride=feat_stride,
                                        num_frames=num_frames, default_fps=default_fps, source=info_source,
                                        strict=strict, force_fps=force_fps)
        for w in fixes:
            if warn is not None:
                warn(w)
    for name in names:
        stem, vid = split(name)
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
            features_span(T, feat_stride, num_frames, fps)
        )
        yield video
