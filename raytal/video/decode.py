"""Decoding one video file into snippet windows of RGB frames, streamed in chunks (PyAV).

A ``WindowReader`` opens the file (local, or ``s3://`` / ``gs://`` through ``raytal.core.storage``: ranged
reads, the file is never downloaded whole), decodes its first video stream, resamples it to the target
rate (``raytal.video.windows``), resizes (FFmpeg's bilinear scaler) and centre-crops each output frame to the
sizes of the backbone's transform, and yields ``(first window index, uint8 [k, num_frames, H, W, 3])`` chunks of at most
``chunk_windows`` windows, so a long video is never held whole. After the last chunk, ``summary`` holds the
video's frame count, rate and duration.

Anything wrong with the file (missing, unreadable, zero bytes, not a video, truncated, or a decoder error
part-way) raises ``VideoError`` naming the file and why, possibly after some chunks: the caller makes it the
video's error row. FFmpeg reads a file cut short in the middle (a truncated WebM or MKV) without an error, up to
where it ends; such a file is recognised by decoding less than its header declares (``TRUNCATED_SLACK``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from raytal.core import storage
from raytal.core.errors import InputError
from raytal.video.windows import Resampler, Windows, num_windows

log = logging.getLogger(__name__)

# Rates are given as decimals (29.97); as fractions they keep resampling exact.
_RATE_DENOMINATOR = 1001000
# A video is truncated when its frames end this much (seconds + share of the declared length) before the length
# its header declares: headers round, and a stream may start or end a frame or two off.
TRUNCATED_SLACK = (0.5, 0.05)


class VideoError(InputError):
    """A video file that cannot be read or decoded; the message names the file."""


@dataclass(frozen=True)
class ClipSpec:
    """How a video becomes the backbone's clips: rate, window length and step, and frame geometry.

    ``resize``: (height, width), or (short side,) keeping the aspect ratio (torchvision's video
    transforms use both forms); then a centre crop to ``crop`` (height, width)."""

    fps: float  # output frame rate; 0 = the video's own average rate
    num_frames: int  # frames per window (the snippet's clip)
    feat_stride: int  # frames between the starts of consecutive windows
    resize: tuple[int, ...]
    crop: tuple[int, int]
    chunk_windows: int = 8  # windows per chunk handed downstream (bounds a decode task's memory)


@dataclass(frozen=True)
class VideoSummary:
    """What decoding found: output frames and their rate, duration (s), windows, and a warning if any."""

    frames: int
    fps: float
    duration: float
    T: int
    warning: str | None


def resized_size(height: int, width: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) after ``resize`` (see ``ClipSpec``); the short side's partner rounds down, as torchvision's
    ``resize`` does."""
    if len(resize) == 2:
        return int(resize[0]), int(resize[1])
    short = int(resize[0])
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def centre_crop(image: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """The centre ``crop`` (height, width) of an [H, W, C] image (torchvision's rounding of the offsets)."""
    h, w = image.shape[:2]
    ch, cw = crop
    if ch > h or cw > w:
        raise ValueError(f"crop {crop} is larger than the resized frame {(h, w)}")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return image[top:top + ch, left:left + cw]


@contextlib.contextmanager
def _open(path: str):
    import av  # the optional extra `video`: imported where it is used

    if not storage.is_uri(path):
        with av.open(path, mode="r") as container:
            yield container
        return
    # PyAV reads a file object through its read/seek/tell: ranged GETs on an object store. It does not close it.
    with storage.open_input_file(path) as f, av.open(f, mode="r") as container:
        yield container


class WindowReader:
    """Iterate ``(first window index, clips)`` chunks of one video (module docstring)."""

    def __init__(self, path: str, spec: ClipSpec, size: int | None = None) -> None:
        self.path, self.spec, self.size = path, spec, size
        self.summary: VideoSummary | None = None

    def _fail(self, why: object) -> VideoError:
        return VideoError(f"{self.path}: {why}")

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        import av

        try:
            yield from self._chunks()
        except (av.FFmpegError, OSError, EOFError, ValueError) as e:
            if isinstance(e, VideoError):
                raise
            raise self._fail(f"cannot decode: {type(e).__name__}: {e}") from None

    def _check_length(self, container, stream, decoded: float) -> None:
        """``VideoError`` when the frames stop well before the declared length: the video stream's own, or the
        container's when the video is its only stream (another stream, say audio, may be longer)."""
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None and len(container.streams) == 1:
            declared = container.duration / 1_000_000  # AV_TIME_BASE
        seconds, share = TRUNCATED_SLACK
        if declared is not None and decoded < declared - seconds - share * declared:
            raise self._fail(f"truncated: its frames end at {decoded:.2f} s, its header declares {declared:.2f} s")

    def _chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        spec = self.spec
        if self.size == 0:  # FFmpeg would only say "invalid data"
            raise self._fail("empty file (0 bytes)")
        with _open(self.path) as container:
            if not container.streams.video:
                raise self._fail("no video stream")
            stream = container.streams.video[0]
            native = stream.average_rate or stream.guessed_rate
            if spec.fps > 0:
                rate = Fraction(spec.fps).limit_denominator(_RATE_DENOMINATOR)
            elif native:
                rate = Fraction(native)
            else:
                raise self._fail("the stream has no frame rate; give a target fps")
            step = 1 / Fraction(native) if native else 1 / rate  # how long the last frame shows
            resampler: Resampler = Resampler(rate)
            windows: Windows = Windows(spec.num_frames, spec.feat_stride)
            chunk: list[np.ndarray] = []
            first_index = 0
            t0: Fraction | None = None
            last_t = Fraction(0)
            cache: tuple[object, np.ndarray] | None = None

            def rgb(frame) -> np.ndarray:
                # A frame picked twice (a rate above the video's) is converted once.
                nonlocal cache
                if cache is None or cache[0] is not frame:
                    h, w = resized_size(frame.height, frame.width, spec.resize)
                    image = frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()
                    cache = (frame, np.ascontiguousarray(centre_crop(image, spec.crop)))
                return cache[1]

            def emit(picked: list) -> Iterator[tuple[int, np.ndarray]]:
                nonlocal first_index
                for frame in picked:
                    for i, frames in windows.push(rgb(frame)):
                        if not chunk:
                            first_index = i
                        chunk.append(np.stack(frames))
                        if len(chunk) == spec.chunk_windows:
                            yield first_index, np.stack(chunk)
                            chunk.clear()

            for frame in container.decode(stream):
                if frame.pts is None:
                    t = last_t + step
                else:
                    t = Fraction(frame.pts) * Fraction(frame.time_base)
                if t0 is None:
                    t0 = t
                last_t = t
                yield from emit(resampler.push(t - t0, frame))
            if t0 is None:
                raise self._fail("no frame could be decoded (truncated or not a video?)")
            self._check_length(container, stream, float(last_t - t0 + step))
            yield from emit(resampler.finish(last_t - t0 + step))
            for i, frames in windows.finish():
                chunk.append(np.stack(frames))
            if chunk:
                yield first_index, np.stack(chunk)
        frames = windows.frames
        warning = None
        if windows.padded:
            warning = (f"{self.path}: shorter than one window ({frames} frames at {float(rate):g} fps < num_frames "
                       f"{spec.num_frames}): one window, padded with its last frame")
            log.warning(warning)
        self.summary = VideoSummary(frames, float(rate), frames / float(rate),
                                    num_windows(frames, spec.num_frames, spec.feat_stride), warning)
