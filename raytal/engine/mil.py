"""Train the weakly-supervised base model on video-level labels and localize with it
(docs/design.md §4 "Weak base model").

Training: whole videos (no crop: the model is a few convolutions, and top-k pooling wants the whole
video), zero-padded per batch with a mask, from a stream of videos per epoch (the caller's seeded,
shuffled stream: memory does not grow with the number of videos); Adam; loss
raytal.losses.mil.mil_loss (BaS-Net base + suppression branches). Torch's RNG (init, dropout) is seeded
from ``seed`` inside ``torch.random.fork_rng`` so the caller's global RNG state is untouched.

Video-level labels are ``Video.video_labels``; a video whose list is empty falls back to the distinct
classes of its segments (raytal.data.splits.video_level_labels), so fully annotated videos also train.

Prediction per video: cas / video scores from the suppression branch (raytal.model.wtal), classes with
video score > class_threshold (the top class when none passes: every test video is assumed to contain an
action, as in BaS-Net), proposals at every threshold (raytal.postprocess.proposals), then Gaussian
weighted fusion (``fusion_fn``) or hard NMS per class, the best ``max_segments`` kept, grid -> seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from raytal.config import WeakConfig
from raytal.core.grid import grid_to_seconds
from raytal.data.splits import video_level_labels
from raytal.core.video import Video
from raytal.data.stream import chunks
from raytal.losses.mil import mil_loss
from raytal.model.wtal import WTALModel, snippet_and_video_scores
from raytal.postprocess.fusion import FusionFn
from raytal.postprocess.nms import nms as hard_nms
from raytal.postprocess.proposals import tcam_proposals



def _check_videos(videos: list[Video]) -> int:
    if not videos:
        raise ValueError("need at least one video")
    dims = set()
    for v in videos:
        if v.features is None or np.ndim(v.features) != 2 or len(v.features) < 1:
            raise ValueError(f"video {v.video_id}: features must be loaded as [T, D] with T >= 1")
        dims.add(int(v.features.shape[1]))
    if len(dims) != 1:
        raise ValueError(f"all videos need the same feature dim, got {sorted(dims)}")
    return dims.pop()


def _pad(videos: list[Video], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """feats [B, D, T_max] zero-padded, mask [B, T_max]."""
    lengths = [len(v.features) for v in videos]
    T, D = max(lengths), videos[0].features.shape[1]
    feats = np.zeros((len(videos), T, D), dtype=np.float32)
    for i, v in enumerate(videos):  # one copy per video, not per snippet
        feats[i, : lengths[i]] = v.features
    mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    return torch.from_numpy(feats).transpose(1, 2).to(device), torch.from_numpy(mask).to(device)


def _multi_hot(videos: list[Video], num_classes: int) -> np.ndarray:
    out = np.zeros((len(videos), num_classes), dtype=np.float32)
    for i, v in enumerate(videos):
        ids = np.asarray(v.video_labels, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            ids = video_level_labels(v)
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(
                f"video {v.video_id}: video_labels must be class ids in [0, {num_classes}), got {ids}"
            )
        out[i, ids] = 1.0
    return out


def train_weak(
    epoch_videos: Callable[[int], Iterable[Video]],
    num_classes: int,
    input_dim: int,
    weak: WeakConfig,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> WTALModel:
    """Train a WTALModel with MIL on the video-level labels of ``epoch_videos(e)``, the videos of epoch
    ``e`` (module docstring); returns it in eval mode."""
    if weak.batch_size < 1 or weak.epochs < 0:
        raise ValueError(
            f"weak.batch_size must be >= 1 and weak.epochs >= 0, got {weak.batch_size}, {weak.epochs}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WTALModel(input_dim, num_classes, hidden=weak.hidden, dropout=weak.dropout).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=weak.lr)
        model.train()
        seen = 0
        for epoch in tqdm(range(weak.epochs), desc="weak base model", disable=not progress):
            for chunk in chunks(epoch_videos(epoch), weak.batch_size):
                if _check_videos(chunk) != input_dim:
                    raise ValueError(f"video {chunk[0].video_id}: feature dim differs from the model's {input_dim}")
                feats, mask = _pad(chunk, device)
                out = model(feats, mask)
                losses = mil_loss(
                    out.tcam_logits,
                    mask,
                    torch.from_numpy(_multi_hot(chunk, num_classes)).to(device),
                    topk_ratio=weak.topk_ratio,
                    bg_weight=weak.bg_weight,
                    suppressed_logits=out.suppressed_logits,
                    attention=out.attention,
                )
                opt.zero_grad()
                losses["loss"].backward()
                opt.step()
                seen += len(chunk)
        if weak.epochs and not seen:
            raise ValueError("need at least one video to train the weak base model")
    return model.eval()




@torch.no_grad()
def predict_weak(
    model: WTALModel,
    videos: list[Video],
    weak: WeakConfig,
    num_classes: int,
    nms: str = "fusion",
    fusion_fn: FusionFn | None = None,
    iou_threshold: float = 0.5,
    max_segments: int = 200,
) -> list[dict]:
    """Per video {"segments" [K, 2] seconds, "scores" [K], "labels" [K] int64, "cas" [T, C],
    "video_scores" [C]}, best score first (module docstring)."""
    if nms not in ("fusion", "hard"):
        raise ValueError(f"nms must be 'fusion' or 'hard', got {nms!r}")
    if nms == "fusion" and fusion_fn is None:
        raise ValueError("nms='fusion' needs fusion_fn(segments, scores, labels) -> (segments, scores, labels)")
    if model.num_classes != num_classes:
        raise ValueError(f"model has {model.num_classes} classes, num_classes = {num_classes}")
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    if not videos:
        return []
    _check_videos(videos)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    for b in range(0, len(videos), weak.batch_size):
        chunk = videos[b : b + weak.batch_size]
        feats, mask = _pad(chunk, device)
        cas, video = snippet_and_video_scores(model(feats, mask), weak.topk_ratio)
        cas, video = cas.cpu().numpy().astype(np.float64), video.cpu().numpy().astype(np.float64)
        for i, v in enumerate(chunk):
            v_cas = cas[i, : len(v.features)]
            classes = np.flatnonzero(video[i] > weak.class_threshold)
            if classes.size == 0:
                classes = np.array([int(video[i].argmax())])
            seg, scores, labels = tcam_proposals(v_cas, classes, weak.thresholds, weak.oic_margin, video[i])
            if nms == "fusion":
                seg, scores, labels = fusion_fn(seg, scores, labels)
            else:
                keep = hard_nms(seg, scores, labels, iou_threshold)
                seg, scores, labels = seg[keep], scores[keep], labels[keep]
            top = np.argsort(-np.asarray(scores), kind="stable")[:max_segments]
            seg = np.asarray(seg, dtype=np.float64)[top]
            seconds = grid_to_seconds(seg, v.fps, v.feat_stride, v.num_frames, v.duration)
            results.append(
                {
                    "segments": seconds.reshape(-1, 2),
                    "scores": np.asarray(scores, dtype=np.float64)[top],
                    "labels": np.asarray(labels, dtype=np.int64)[top],
                    "cas": v_cas,
                    "video_scores": video[i],
                }
            )
    model.train(was_training)
    return results
