"""The clip geometry of feature extraction: decoded frames -> frames at the target rate -> snippet windows.

Output frame k of a video stands for time k / fps (seconds from its first frame) and is the decoded frame
nearest that time (the earlier one on a tie), so a video is resampled to any rate by dropping or
repeating frames, never by blending them. Window i holds output frames [i*feat_stride, i*feat_stride +
num_frames): the snippet whose centre ``raytal.core.grid`` puts at frame i*feat_stride + num_frames/2.
The frames after the last whole window are dropped (fewer than feat_stride of them), as the features the
field publishes do; a video shorter than one window gives one window padded with its last frame.

Both steps stream: they hold at most one decoded frame, and num_frames + feat_stride output frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Generic, TypeVar

F = TypeVar("F")


def num_windows(frames: int, num_frames: int, feat_stride: int) -> int:
    """Windows of ``frames`` output frames: whole windows only, but one (padded) for a short non-empty video."""
    if frames <= 0:
        return 0
    return max(1, (frames - num_frames) // feat_stride + 1)


class Resampler(Generic[F]):
    """Decoded frames in presentation order -> the output frames at ``fps`` (module docstring).

    ``push(t, frame)`` returns the output frames that became final with it (each is a decoded frame,
    possibly one repeated); ``finish(end)`` the rest, up to ``end``, the time the last frame stops showing.
    Times are exact fractions of a second counted from the first frame, so a 30 fps video read at 30 fps
    gives back each of its frames once."""

    def __init__(self, fps: Fraction) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.k = 0  # next output frame
        self.prev: tuple[Fraction, F] | None = None

    def _due(self) -> Fraction:
        return self.k / self.fps

    def push(self, t: Fraction, frame: F) -> list[F]:
        out: list[F] = []
        if self.prev is not None:
            tp, fp = self.prev
            # Output times in [tp, t) are final: no later frame can be nearer to them than these two.
            while self._due() < t:
                out.append(fp if self._due() - tp <= t - self._due() else frame)
                self.k += 1
        self.prev = (t, frame)
        return out

    def finish(self, end: Fraction) -> list[F]:
        out: list[F] = []
        if self.prev is not None:
            while self._due() < end:
                out.append(self.prev[1])
                self.k += 1
        return out


class Windows(Generic[F]):
    """Output frames in order -> windows of ``num_frames`` every ``feat_stride`` (module docstring).

    ``push(frame)`` yields the windows it completes as ``(i, frames)``; ``finish()`` yields the padded
    window of a video shorter than one window. ``frames`` counts what was pushed."""

    def __init__(self, num_frames: int, feat_stride: int) -> None:
        if num_frames < 1 or feat_stride < 1:
            raise ValueError(f"num_frames and feat_stride must be >= 1, got {num_frames}, {feat_stride}")
        self.num_frames, self.feat_stride = num_frames, feat_stride
        self.frames = 0
        self.next_window = 0
        self.buffer: list[F] = []  # output frames from the next window's first one on
        self.first = 0  # index of buffer[0]

    def push(self, frame: F) -> Iterator[tuple[int, list[F]]]:
        self.buffer.append(frame)
        self.frames += 1
        start = self.next_window * self.feat_stride
        # A stride longer than the window skips frames that belong to no window.
        if start > self.first:
            drop = min(start - self.first, len(self.buffer))
            del self.buffer[:drop]
            self.first += drop
        if self.frames >= start + self.num_frames:
            yield self.next_window, self.buffer[:self.num_frames]
            self.next_window += 1
            drop = min(self.feat_stride, len(self.buffer))
            del self.buffer[:drop]
            self.first += drop

    @property
    def padded(self) -> bool:
        """The video is shorter than one window (its one window repeats the last frame)."""
        return 0 < self.frames < self.num_frames

    def finish(self) -> Iterator[tuple[int, list[F]]]:
        if self.padded:
            yield 0, self.buffer + [self.buffer[-1]] * (self.num_frames - len(self.buffer))
            self.next_window = 1
