"""One extraction, back-end aside: inputs and settings checked, the backbone probed, finished videos skipped,
then a back-end (the plain loop of ``raytal.video.stages`` or the Ray Data pipeline) fills the output.

Everything a user can get wrong is refused before the first video is decoded: a missing input or an id
twice, a backbone that does not load or does not take the clip size (one clip is embedded here, which also
gives D), an output directory of other settings, and for a dataset's pool a grid or D other than the
dataset's, or a video id the dataset already holds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from raytal.core import storage
from raytal.core.errors import InputError
from raytal.data.dataset import DatasetInfo, load_dataset_info, resolve, save_dataset_info
from raytal.data.pool import POOL_SUBSET
from raytal.video.backbones import Backbone, BackboneSpec, fingerprint, load_backbone
from raytal.video.decode import ClipSpec
from raytal.video.outputs import FeatureOutput, OutputSummary, check_shard_ids
from raytal.video.sources import VideoFile, list_videos
from raytal.video.stages import Batches, Extracted

# A back-end: (videos to extract, their clip spec, sink(key, outcome)) -> None, every video to the sink once.
Backend = Callable[[list[VideoFile], ClipSpec, Callable[[int, Extracted], None]], None]


@dataclass
class Extraction:
    """What ``plan_extraction`` settled: the inputs, what is left to do, and where it goes."""

    videos: list[VideoFile]
    pending: list[VideoFile]
    clip: ClipSpec
    backbone: BackboneSpec  # with the preprocessing it resolved to (what every actor builds)
    net: Backbone  # the network, loaded once here (the in-process back-end uses it)
    feature_dim: int
    output: FeatureOutput
    dataset: tuple[str, DatasetInfo] | None  # (root, info) when writing into a dataset's pool


@dataclass
class ExtractionSummary:
    output: OutputSummary
    out_dir: str
    feature_dim: int
    elapsed: float

    def format(self) -> str:
        o = self.output
        lines = [f"features -> {self.out_dir}: {o.written} videos (D = {self.feature_dim}), {o.extracted} extracted "
                 f"now, {o.skipped} already there, {len(o.errors)} errors; {self.elapsed:.1f} s"]
        return "\n".join(lines + [f"  error: {why}" for _, why in o.errors[:5]])


def probe_dim(net: Backbone, clip: ClipSpec) -> int:
    """D of the backbone's embedding, from one clip of the spec's size; ``InputError`` if it takes no such clip."""
    try:
        out = net.embed(np.zeros((1, clip.num_frames, *clip.crop, 3), np.uint8))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - what a network raises for a clip it cannot take varies
        raise InputError(f"the backbone does not take clips of {clip.num_frames} frames of {clip.crop[0]}x{clip.crop[1]} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); change --num-frames or "
                         "--crop-size") from None
    return int(out.shape[1])


def _settings(clip: ClipSpec, backbone: BackboneSpec, dim: int, fmt: str) -> dict:
    """What every run into one output must repeat (chunk size is how, not what, so it may change)."""
    spec = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(backbone).items()
            if k != "seed" or backbone.random_init}  # the seed makes only random weights
    geometry = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(clip).items()
                if k != "chunk_windows"}
    return {"format": fmt, "backbone": spec, "weights_sha256": fingerprint(backbone), "clip": geometry, "D": dim}


def _dataset_pool(root: str, clip: ClipSpec, dim: int) -> tuple[str, DatasetInfo]:
    """The pool directory of the dataset at ``root`` (``shards/unlabeled`` if it has none yet), when the
    extraction's grid and D are the dataset's."""
    info = load_dataset_info(root)
    theirs = {"feat_stride": info.feat_stride, "num_frames": info.num_frames, "feature_dim": info.feature_dim}
    ours = {"feat_stride": clip.feat_stride, "num_frames": clip.num_frames, "feature_dim": dim}
    differ = [f"{k} {ours[k]} (dataset: {theirs[k]})" for k in theirs if theirs[k] != ours[k]]
    if differ:
        raise InputError(f"{storage.join(root, 'dataset.yaml')}: features for this dataset need its grid and width; "
                         f"this extraction gives {', '.join(differ)}")
    return resolve(root, info.unlabeled_shards or f"shards/{POOL_SUBSET}"), info


def plan_extraction(inputs: list[str], list_files: list[str], backbone: BackboneSpec, *, fps: float, num_frames: int,
                    feat_stride: int, chunk_windows: int = 8, out: str = "", fmt: str = "npy",
                    dataset: str = "") -> Extraction:
    """Check everything (module docstring) and find what is left to extract; writes only the output's
    settings record, and removes this job's own stale outputs of videos that changed. The clip geometry is
    the backbone's transform (resize, crop) at ``fps``, ``num_frames`` and ``feat_stride``."""
    if bool(out) == bool(dataset):
        raise InputError("give either an output directory or a dataset to add the videos to")
    videos = list_videos(inputs, list_files)
    net = load_backbone(backbone)
    backbone = dataclasses.replace(backbone, resize=net.resize, crop=net.crop, mean=net.mean, std=net.std)
    clip = ClipSpec(fps, num_frames, feat_stride, net.resize, net.crop, chunk_windows)
    dim = probe_dim(net, clip)
    where = None
    if dataset:
        out, info = _dataset_pool(storage.resolve(dataset), clip, dim)
        where, fmt = (storage.resolve(dataset), info), "shards"
    output = FeatureOutput(out, fmt, _settings(clip, backbone, dim, fmt), clip.feat_stride, clip.num_frames)
    if where is not None:
        root, info = where
        ids = {v.video_id for v in videos}
        shards = storage.resolve(resolve(root, info.shards_dir))
        inside = output.out.startswith(shards.rstrip("/") + "/")
        ours = output.recorded_files()
        for directory in [shards] if inside else [shards, output.out]:
            check_shard_ids(directory, ids, ours)
    pending = output.start(videos)
    return Extraction(videos, pending, clip, backbone, net, dim, output, where)


def run_extraction(plan: Extraction, backend: Backend, rows_per_shard: int) -> ExtractionSummary:
    """Extract ``plan.pending`` with ``backend``, writing ``rows_per_shard`` videos per batch (one shard file
    or that many .npy files and one record each), then the output's video-info and error lists."""
    start = time.perf_counter()
    if plan.pending:
        batches = Batches(len(plan.pending), rows_per_shard, plan.output.write)
        backend(plan.pending, plan.clip, batches.add)
        batches.finish()
    summary = plan.output.finish()
    if plan.dataset is not None:
        root, info = plan.dataset
        if not info.unlabeled_shards and summary.written:
            save_dataset_info(root, dataclasses.replace(info, unlabeled_shards=f"shards/{POOL_SUBSET}"))
    return ExtractionSummary(summary, plan.output.out, plan.feature_dim, time.perf_counter() - start)
