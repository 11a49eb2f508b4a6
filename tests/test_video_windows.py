"""Resampling and windowing of decoded frames (raytal.video.windows), on hand-worked cases: which decoded
frame each output frame is, which output frames each window holds, and how many windows a video has."""

from __future__ import annotations

from fractions import Fraction

import pytest

from raytal.core.grid import grid_to_seconds
from raytal.video.decode import centre_crop, resized_size
from raytal.video.windows import Resampler, Windows, num_windows


def resample(times: list[Fraction], fps: Fraction, end: Fraction) -> list[int]:
    """Indices of the decoded frames (shown at ``times``, the last until ``end``) picked at ``fps``."""
    r = Resampler(fps)
    out = []
    for j, t in enumerate(times):
        out += r.push(t, j)
    return out + r.finish(end)


def test_same_rate_gives_every_frame_once():
    times = [Fraction(j, 30) for j in range(7)]
    assert resample(times, Fraction(30), Fraction(7, 30)) == [0, 1, 2, 3, 4, 5, 6]


def test_half_rate_takes_every_other_frame():
    # 20 fps -> 10 fps: output k at k/10 s is decoded frame 2k exactly; 9 frames last until 0.45 s
    times = [Fraction(j, 20) for j in range(9)]
    assert resample(times, Fraction(10), Fraction(9, 20)) == [0, 2, 4, 6, 8]


def test_nearest_frame_and_ties_to_the_earlier():
    # 30 fps -> 20 fps: output k at k/20 = 1.5k/30 s. k=0 -> frame 0; k=1 (1.5 frames) ties between 1 and 2 ->
    # 1; k=2 -> 3; k=3 (4.5) -> 4; k=4 -> 6; 8 frames shown until 8/30 s: k=5 (7.5/30) -> 7; k=6 at 9/30 > 8/30: none
    times = [Fraction(j, 30) for j in range(8)]
    assert resample(times, Fraction(20), Fraction(8, 30)) == [0, 1, 3, 4, 6, 7]


def test_double_rate_repeats_frames():
    # 10 fps -> 20 fps: outputs at 0, .05, .1, ...: .05 ties between frames 0 and 1 -> 0
    times = [Fraction(j, 10) for j in range(3)]
    assert resample(times, Fraction(20), Fraction(3, 10)) == [0, 0, 1, 1, 2, 2]


def test_irregular_timestamps_pick_the_nearest():
    # frames at 0, 0.09, 0.31 s; 10 fps: 0 -> 0; 0.1 -> 0.09 (frame 1); 0.2 -> nearer 0.31 (0.11) than 0.09
    # (0.11)? equal: the earlier, frame 1; 0.3 -> frame 2; shown until 0.35: no 0.4
    times = [Fraction(0), Fraction(9, 100), Fraction(31, 100)]
    assert resample(times, Fraction(10), Fraction(35, 100)) == [0, 1, 1, 2]


def windows_of(frames: int, num_frames: int, feat_stride: int) -> list[tuple[int, list[int]]]:
    w = Windows(num_frames, feat_stride)
    out = [(i, list(fs)) for f in range(frames) for i, fs in w.push(f)]
    return out + [(i, list(fs)) for i, fs in w.finish()]


def test_overlapping_windows_and_the_dropped_tail():
    # 11 frames, windows of 4 every 2: starts 0, 2, 4, 6 (6+4 = 10 <= 11), frame 10 belongs to no whole window
    assert windows_of(11, 4, 2) == [(0, [0, 1, 2, 3]), (1, [2, 3, 4, 5]), (2, [4, 5, 6, 7]), (3, [6, 7, 8, 9])]
    assert num_windows(11, 4, 2) == 4


def test_a_stride_longer_than_the_window_skips_frames():
    # windows of 2 every 3 over 8 frames: [0, 1], [3, 4], [6, 7]
    assert windows_of(8, 2, 3) == [(0, [0, 1]), (1, [3, 4]), (2, [6, 7])]
    assert num_windows(8, 2, 3) == 3


def test_a_video_shorter_than_one_window_is_one_padded_window():
    w = Windows(4, 2)
    assert [list(fs) for f in range(3) for _, fs in w.push(f)] == []
    assert w.padded
    assert [(i, list(fs)) for i, fs in w.finish()] == [(0, [0, 1, 2, 2])]
    assert num_windows(3, 4, 2) == 1 and num_windows(0, 4, 2) == 0


def test_window_centres_are_the_time_grids_snippet_centres():
    # window i holds output frames i*s .. i*s+n-1 shown from k/fps to (k+1)/fps: its middle is (i*s + n/2)/fps
    fps, n, s = 10.0, 4, 2
    for i, frames in windows_of(12, n, s):
        middle = (frames[0] + frames[-1] + 1) / 2 / fps
        assert middle == pytest.approx(float(grid_to_seconds(i, fps, s, n, duration=100.0)))


def test_resize_keeps_the_aspect_for_a_short_side_and_crops_the_centre():
    assert resized_size(240, 320, (128, 171)) == (128, 171)  # (h, w): exact
    assert resized_size(240, 320, (256,)) == (256, 341)  # short side 256, 320*256/240 = 341.3
    assert resized_size(320, 240, (256,)) == (341, 256)
    import numpy as np

    image = np.arange(6 * 8).reshape(6, 8, 1)
    # 6x8 -> 2x4 centre: rows 2..3, columns 2..5
    assert centre_crop(image, (2, 4))[..., 0].tolist() == [[18, 19, 20, 21], [26, 27, 28, 29]]
