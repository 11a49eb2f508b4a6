"""Feature extraction as row-level stages both back-ends run: decode -> embed -> assemble -> write.

    decode_rows (raytal.video.rows; per video: window rows of uint8 clips, chunk by chunk, then one end row)
    -> EmbedStage (the backbone on a batch of clips from any videos; end rows pass through)
    -> Assembler (a video's window features back in order -> [T, D], or its error)
    -> Batches (videos grouped in input order into output batches, each written when complete)

``extract_in_process`` chains them in a plain loop; ``raytal.distributed.extract_pipeline`` runs the
same functions as Ray Data tasks and an actor pool. A video is identified by its key, its position in the
list of videos to extract; its end row says how many window rows it sent, so it is complete (or failed)
exactly when those have arrived, whatever order they come in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from raytal.core.errors import DataError
from raytal.core.threads import set_torch_threads
from raytal.core.video import Video
from raytal.data.features import check_features
from raytal.video.backbones import Backbone, BackboneSpec, load_backbone
from raytal.video.decode import ClipSpec
from raytal.video.rows import CLIP_SCHEMA, END, FEATURE_SCHEMA, decode_rows
from raytal.video.sources import VideoFile


@dataclass
class Extracted:
    """One video's outcome: features float32 [T, D] and their grid, or the error that stopped it."""

    video: VideoFile
    features: np.ndarray | None
    fps: float = 0.0
    duration: float = 0.0
    frames: int = 0
    error: str | None = None
    warning: str | None = None


class EmbedStage:
    """The backbone on a table of clip rows -> feature rows (end rows pass through). Builds the network once
    (``load_backbone``: per actor in the Ray pipeline; a loaded one is used as it is) on ``device``, with
    ``torch_threads`` threads (0: torch's own choice)."""

    def __init__(self, backbone: BackboneSpec | Backbone, clip: tuple[int, int, int], torch_threads: int = 1,
                 device: str = "cpu") -> None:
        set_torch_threads(torch_threads)
        net = backbone if isinstance(backbone, Backbone) else load_backbone(backbone)
        self.backbone: Backbone = net.to(device)
        self.shape = (*clip, 3)  # [T, H, W, 3]

    def __call__(self, table: pa.Table) -> pa.Table:
        windows = table.column("window").to_numpy()
        is_clip = windows != END
        feature = [b""] * len(windows)
        if is_clip.any():
            clip_col = table.column("clip")
            clips = np.stack([np.frombuffer(clip_col[int(i)].as_buffer(), np.uint8).reshape(self.shape)
                              for i in np.flatnonzero(is_clip)])
            for i, f in zip(np.flatnonzero(is_clip), self.backbone.embed(clips)):
                feature[int(i)] = np.ascontiguousarray(f, np.float32).tobytes()
        return pa.table({"key": table.column("key"), "window": table.column("window"),
                         "feature": pa.array(feature, pa.large_binary()), "info": table.column("info")},
                        schema=FEATURE_SCHEMA)


class Assembler:
    """Feature rows of any videos, in any order -> each video's ``Extracted`` once all its rows are in.

    Holds only the videos in flight; their features are checked (2-D, finite) on completion, so a backbone
    that produced NaN for a video gives that video an error row."""

    def __init__(self, videos: list[VideoFile], spec: ClipSpec) -> None:
        self.videos, self.spec = videos, spec
        self.features: dict[int, dict[int, np.ndarray]] = {}
        self.ends: dict[int, dict] = {}

    def add(self, table: pa.Table) -> list[tuple[int, Extracted]]:
        keys = table.column("key").to_pylist()
        windows = table.column("window").to_pylist()
        features = table.column("feature")
        infos = table.column("info").to_pylist()
        touched = set()
        for j, (key, window) in enumerate(zip(keys, windows)):
            if window == END:
                self.ends[key] = json.loads(infos[j])
            else:
                # a copy: a view would keep the whole batch's buffer alive until the video is complete
                self.features.setdefault(key, {})[window] = np.frombuffer(features[j].as_buffer(), np.float32).copy()
            touched.add(key)
        return [(key, self._finish(key)) for key in sorted(touched)
                if key in self.ends and len(self.features.get(key, ())) == self.ends[key]["sent"]]

    def _finish(self, key: int) -> Extracted:
        info = self.ends.pop(key)
        parts = self.features.pop(key, {})
        video = self.videos[key]
        if info.get("error"):
            return Extracted(video, None, error=info["error"])
        feats = np.stack([parts[i] for i in range(len(parts))]) if parts else np.zeros((0, 0), np.float32)
        grid = Video(video.video_id, "unlabeled", info["duration"], info["fps"], self.spec.feat_stride,
                     self.spec.num_frames, labeled=False)
        try:
            feats = check_features(feats, grid, source=video.path)
            if feats.shape[0] != info["T"]:
                raise DataError(f"{video.path}: {feats.shape[0]} windows embedded, the decoder made {info['T']}")
        except DataError as e:
            return Extracted(video, None, error=f"backbone output: {e}")
        return Extracted(video, feats, info["fps"], info["duration"], info["frames"], warning=info.get("warning"))


class Batches:
    """Finished videos -> ``write(batch)`` of ``size`` consecutive videos of the input order, each called once
    its videos are all finished, so what a batch holds never depends on the order videos finish in."""

    def __init__(self, count: int, size: int, write: Callable[[list[Extracted]], None]) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.count, self.size, self.write = count, size, write
        self.open: dict[int, dict[int, Extracted]] = {}

    def add(self, key: int, done: Extracted) -> None:
        b = key // self.size
        held = self.open.setdefault(b, {})
        held[key] = done
        if len(held) == min(self.size, self.count - b * self.size):
            self.write([held[k] for k in sorted(held)])
            del self.open[b]

    def finish(self) -> None:
        if self.open:
            missing = sorted(b * self.size + i for b, held in self.open.items() for i in range(self.size)
                             if b * self.size + i < self.count and b * self.size + i not in held)
            raise RuntimeError(f"extraction ended with {len(missing)} videos unfinished (first: key {missing[0]})")


def extract_in_process(videos: list[VideoFile], spec: ClipSpec, sink: Callable[[int, Extracted], None], *,
                       stage: EmbedStage, clips_per_batch: int) -> None:
    """The plain loop: each video decoded, its windows embedded ``clips_per_batch`` at a time, then ``sink``."""
    assembler = Assembler(videos, spec)
    for key, video in enumerate(tqdm(videos, desc="extract", unit="video", disable=not sys.stderr.isatty())):
        rows = pa.table({n: [] for n in CLIP_SCHEMA.names}, schema=CLIP_SCHEMA)
        for table in decode_rows(key, video, spec):
            rows = pa.concat_tables([rows, table])
            last = table.column("window")[0].as_py() == END
            while rows.num_rows >= clips_per_batch or (last and rows.num_rows):
                for done in assembler.add(stage(rows.slice(0, clips_per_batch))):
                    sink(*done)
                rows = rows.slice(clips_per_batch)
