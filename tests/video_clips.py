"""Small real video files for the extraction tests, encoded here with PyAV: a white square on black that moves
STEP pixels right per frame, so the frame a decoded image came from can be read back off the image.

Codecs are ones PyAV's wheels ship: libx264 (mp4, mkv), libvpx (webm), mpeg4 (avi).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

CODECS = {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx", ".avi": "mpeg4"}
HEIGHT, WIDTH = 32, 96
SQUARE = 8  # side of the square, pixels
STEP = 1  # pixels the square moves per frame
X0 = 4  # left edge of the square in frame 0


def frame_image(j: int) -> np.ndarray:
    """Frame j: the square's left edge at X0 + STEP * j, rows 12..19."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x = X0 + STEP * j
    img[12:12 + SQUARE, x:x + SQUARE] = 255
    return img


def source_frame(image: np.ndarray) -> float:
    """Which frame an RGB image of the full frame shows, from the square's centroid (sub-pixel: lossy codecs blur
    the edges a little, symmetrically)."""
    weights = image.astype(np.float64).mean(axis=2).sum(axis=0)
    x = (weights * np.arange(image.shape[1])).sum() / weights.sum()
    return (x - (SQUARE - 1) / 2 - X0) / STEP


def write_clip(path: Path, frames: int, fps: int = 20) -> Path:
    """``frames`` frames at ``fps``, encoded with the codec of the file's suffix."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    if X0 + STEP * (frames - 1) + SQUARE > WIDTH:
        raise ValueError(f"{frames} frames do not fit the square's path in {WIDTH} pixels")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(CODECS[path.suffix], rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for j in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(j), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
