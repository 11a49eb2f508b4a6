"""Per-video snippet features: ``features_dir/<prefix><video_id>.npy``, float32 [T, D], and their checks.

The prefix is usually empty; some releases name files differently from the annotation ids (ActionFormer's
ActivityNet features are ``v_<id>.npy`` for annotation id ``<id>``).

``check_features`` is the one place the shape/finiteness/length rules live; the .npy loader, the
Parquet converter and the shard reader all call it, so every path reports the same error.

"Shorter than the annotations imply": snippet T-1 covers frames up to (T-1)*feat_stride + num_frames,
i.e. grid position T-1 + num_frames/(2*feat_stride) (raytal.core.grid convention). A video whose last
annotation ends beyond that position plus ``tolerance`` snippets (default 1: the last partial clip
that a feature extractor drops) has features that are too short.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from raytal.core import storage
from raytal.core.errors import DataError, check_video_id, where
from raytal.core.grid import seconds_to_grid
from raytal.core.video import Video

LENGTH_TOLERANCE_SNIPPETS = 1.0
# Network features (I3D, TSP, VideoMAE) are O(1)-O(100); a value beyond this is garbage (uninitialised
# memory, a units mix-up) that would overflow the detector's float32 activations into NaN.
MAX_ABS_FEATURE = 1e6


def required_snippets(video: Video) -> float:
    """Grid position (fractional snippets) of the latest annotated end; -inf when nothing is annotated."""
    if len(video.segments) == 0:
        return float("-inf")
    if video.feat_stride <= 0 or video.num_frames <= 0:
        raise DataError(f"{where(None, video.video_id)}: feat_stride/num_frames are not set")
    return float(seconds_to_grid(video.segments[:, 1].max(), video.fps, video.feat_stride, video.num_frames))


def check_features(
    feats: np.ndarray,
    video: Video,
    feature_dim: int | None = None,
    source: str | Path | None = None,
    tolerance: float = LENGTH_TOLERANCE_SNIPPETS,
    check_finite: bool = True,
) -> np.ndarray:
    """Validate one video's features and return them as float32 [T, D].

    Raises ``DataError`` naming ``source`` (the file), the video and the field for: not 2-D, T == 0,
    a D other than ``feature_dim`` (when given), NaN/Inf or values beyond ``MAX_ABS_FEATURE`` (when
    ``check_finite``), or fewer snippets than the annotations need (see the module docstring).
    """
    vid = video.video_id
    if not isinstance(feats, np.ndarray) or feats.ndim != 2:
        shape = getattr(feats, "shape", None)
        raise DataError(f"{where(source, vid, 'features')}: expected a 2-D array [T, D], got shape {shape}")
    if feats.shape[0] == 0 or feats.shape[1] == 0:
        raise DataError(f"{where(source, vid, 'features')}: empty array of shape {feats.shape}")
    if feature_dim is not None and feats.shape[1] != feature_dim:
        raise DataError(
            f"{where(source, vid, 'features')}: expected D = {feature_dim} columns, got shape {feats.shape}"
        )
    if not np.issubdtype(feats.dtype, np.floating):
        raise DataError(f"{where(source, vid, 'features')}: expected floating-point values, got dtype {feats.dtype}")
    feats = feats.astype(np.float32, copy=False)
    if check_finite:
        bad = ~np.isfinite(feats)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise DataError(
                f"{where(source, vid, 'features')}: {int(bad.sum())} NaN/Inf values "
                f"(first in snippet {int(rows[0])} of {feats.shape[0]})"
            )
        huge = np.abs(feats) > MAX_ABS_FEATURE
        if huge.any():
            rows = np.flatnonzero(huge.any(axis=1))
            raise DataError(
                f"{where(source, vid, 'features')}: {int(huge.sum())} values beyond +-{MAX_ABS_FEATURE:g} (first in "
                f"snippet {int(rows[0])} of {feats.shape[0]}: {float(feats[rows[0]][huge[rows[0]]][0]):g}); expected "
                "network features (uninitialised memory, or another unit?)"
            )
    need = required_snippets(video)
    T = feats.shape[0]
    covered = T - 1 + 0.5 * video.num_frames / max(video.feat_stride, 1)
    if need > covered + tolerance:
        last_end = float(video.segments[:, 1].max())
        raise DataError(
            f"{where(source, vid, 'features')}: T = {T} snippets is shorter than the annotations imply: "
            f"the last segment ends at {last_end:.3f} s = snippet {need:.2f} (fps {video.fps}, "
            f"feat_stride {video.feat_stride}, num_frames {video.num_frames}), features cover up to "
            f"{covered:.2f} (+{tolerance} tolerance)"
        )
    return feats


def feature_path(features_dir: str | Path, video_id: str, prefix: str = "") -> str:
    """``features_dir/<prefix><video_id>.npy``, local or a storage URI (the file name must be a plain name)."""
    return storage.join(features_dir, f"{check_video_id(prefix + video_id, features_dir)}.npy")


def read_npy(path: str | Path, video_id: str) -> np.ndarray:
    """The array of a .npy file, local or a storage URI (never a pickle); DataError naming file and video."""
    if not storage.is_file(path):
        raise DataError(f"{where(path, video_id, 'features')}: feature file missing")
    try:
        return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{where(path, video_id, 'features')}: not a readable .npy array ({e})") from e


def npy_length(path: str | Path, video_id: str) -> int:
    """T, the rows of a .npy file, from its header alone (a few hundred bytes, one ranged read on an object
    store); DataError naming file and video when it is not a 2-D array file."""
    try:
        with storage.open_input_file(path) as f:
            version = np.lib.format.read_magic(f)
            shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
    except FileNotFoundError:
        raise DataError(f"{where(path, video_id, 'features')}: feature file missing") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{where(path, video_id, 'features')}: not a readable .npy array ({e})") from None
    if len(shape) != 2:
        raise DataError(f"{where(path, video_id, 'features')}: expected a 2-D array [T, D], got shape {shape}")
    return int(shape[0])


def load_features(
    features_dir: str | Path,
    video: Video,
    feature_dim: int | None = None,
    tolerance: float = LENGTH_TOLERANCE_SNIPPETS,
    prefix: str = "",
) -> np.ndarray:
    """Load and check ``features_dir/<prefix><video_id>.npy`` -> float32 [T, D] (never loads pickles)."""
    path = feature_path(features_dir, video.video_id, prefix)
    return check_features(read_npy(path, video.video_id), video, feature_dim, path, tolerance)


def save_features(features_dir: str | Path, video_id: str, feats: np.ndarray) -> str:
    """Write float32 [T, D] to ``features_dir/<video_id>.npy``; returns the path."""
    path = feature_path(features_dir, video_id)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)
    storage.write_bytes(path, buf.getvalue())
    return path
