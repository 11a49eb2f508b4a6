"""Time <-> snippet-grid conversion, the only place it is done (docs/design.md §3 "Features and the time grid").

Snippet i covers frames [i*feat_stride, i*feat_stride + num_frames), so its centre is at frame
i*feat_stride + num_frames/2: step index i = (t*fps - num_frames/2) / feat_stride, and back.
"""

from __future__ import annotations

import numpy as np

from raytal.core.video import Video


def seconds_to_grid(t: np.ndarray | float, fps: float, feat_stride: int, num_frames: int) -> np.ndarray:
    """Seconds -> (fractional) snippet index."""
    return (np.asarray(t, dtype=np.float64) * fps - 0.5 * num_frames) / feat_stride


def grid_to_seconds(
    i: np.ndarray | float, fps: float, feat_stride: int, num_frames: int, duration: float
) -> np.ndarray:
    """(Fractional) snippet index -> seconds, clamped to [0, duration]."""
    t = (np.asarray(i, dtype=np.float64) * feat_stride + 0.5 * num_frames) / fps
    return np.clip(t, 0.0, duration)


def video_grid(video: Video, seconds: np.ndarray) -> np.ndarray:
    """Seconds of ``video`` -> its snippet grid."""
    return seconds_to_grid(seconds, video.fps, video.feat_stride, video.num_frames)


def video_seconds(video: Video, grid: np.ndarray) -> np.ndarray:
    """``video``'s snippet grid -> seconds, clamped to its duration."""
    return grid_to_seconds(grid, video.fps, video.feat_stride, video.num_frames, video.duration)
