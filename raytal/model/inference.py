"""From detector outputs to per-video detections in seconds, and the dense pre-NMS view
(docs/design.md §4 "Inference")."""

from __future__ import annotations

import numpy as np
import torch

from raytal.config import NMS_METHODS, InferConfig
from raytal.core.precision import autocast
from raytal.core.video import Video
from raytal.model.batch import Batch, collate
from raytal.model.detector import Detector, DetectorOutput
from raytal.postprocess.fusion import FusionFn
from raytal.postprocess.nms import nms as hard_nms
from raytal.postprocess.nms import soft_nms_index, vote


def _candidates(probs: torch.Tensor, offsets: torch.Tensor, quality: torch.Tensor | None, points: torch.Tensor,
                levels: torch.Tensor, valid: torch.Tensor, thresh: float, topk: int, min_length: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per level: (point, class) pairs above ``thresh``, the ``topk`` best, decoded to [t − d_s, t + d_e]
    (not clipped) and kept when longer than ``min_length`` snippets: ActionFormer's candidates."""
    c = probs.shape[1]
    segs, scores, labels, quals = [], [], [], []
    for level in range(int(levels.max()) + 1):
        pts = torch.nonzero((levels == level) & valid).flatten()
        flat = probs[pts].flatten()
        cand = torch.nonzero(flat > thresh).flatten()
        cand = cand[flat[cand].argsort(descending=True, stable=True)[:topk]]
        point = pts[cand // c]
        t = points[point, 0]
        seg = torch.stack([t - offsets[point, 0], t + offsets[point, 1]], 1)
        long_enough = seg[:, 1] - seg[:, 0] > min_length
        segs.append(seg[long_enough])
        scores.append(flat[cand][long_enough])
        labels.append((cand % c)[long_enough])
        if quality is not None:
            quals.append(quality[point][long_enough])
    return torch.cat(segs), torch.cat(scores), torch.cat(labels), (torch.cat(quals) if quality is not None else None)


def candidates(out: DetectorOutput, batch: Batch, index: int, pre_nms_thresh: float, pre_nms_topk: int,
               duration_thresh: float) -> dict[str, np.ndarray]:
    """Video ``index``'s candidates before NMS: "segments" [N, 2] in seconds (not clipped to the video),
    "scores" [N], "labels" [N], and "quality" [N, 2] when the model has quality heads; levels in order, each
    best first (what ActionFormer's ``inference_single_video`` hands to its NMS)."""
    meta = batch.meta[index]
    probs = torch.sigmoid(out.cls_logits[index].float()).cpu()
    quality = torch.sigmoid(out.quality_logits[index].float()).cpu() if out.quality_logits is not None else None
    seg, score, label, qual = _candidates(
        probs, out.offsets[index].float().cpu(), quality, out.points.cpu(), out.levels.cpu(), out.mask[index].cpu(),
        pre_nms_thresh, pre_nms_topk, duration_thresh,
    )
    grid = seg.numpy().astype(np.float64) + meta["offset"]
    res = {"segments": (grid * meta["feat_stride"] + 0.5 * meta["num_frames"]) / meta["fps"],
           "scores": score.numpy().astype(np.float64), "labels": label.numpy().astype(np.int64)}
    if qual is not None:
        res["quality"] = qual.numpy().astype(np.float64)
    return res


@torch.no_grad()
def detect(
    out: DetectorOutput,
    batch: Batch,
    *,
    pre_nms_thresh: float,
    pre_nms_topk: int,
    nms: str = "soft",
    iou_threshold: float = 0.1,
    sigma: float = 0.5,
    min_score: float = 0.001,
    max_segments: int = 200,
    duration_thresh: float = 0.0,
    multiclass: bool = True,
    voting_thresh: float = 0.0,
    fusion_fn: FusionFn | None = None,
) -> list[dict]:
    """Per video {"segments" [K, 2] seconds, "scores" [K], "labels" [K] int64, "quality" [K, 2] if any}.

    ActionFormer's post-processing: the ``candidates`` (per level the ``pre_nms_topk`` best (point,
    class) scores above ``pre_nms_thresh``, longer than ``duration_thresh`` snippets), de-duplicated by
    ``nms``: "soft" (Gaussian Soft-NMS), "hard" (IoU > ``iou_threshold``), "fusion" (``fusion_fn`` on
    the candidates) or "none"; per class when ``multiclass``, else over all classes at once followed by
    boundary voting at ``voting_thresh`` (0 = none); at most ``max_segments`` per video, best first, and
    only then clipped to the video.
    """
    if nms not in NMS_METHODS:
        raise ValueError(f"detect: nms must be one of {NMS_METHODS}, got '{nms}'")
    if nms == "fusion" and fusion_fn is None:
        raise ValueError("detect: nms='fusion' needs a fusion_fn(segments, scores, labels)")
    results = []
    for b, meta in enumerate(batch.meta):
        cand = candidates(out, batch, b, pre_nms_thresh, pre_nms_topk, duration_thresh)
        seg, score, label, q = cand["segments"], cand["scores"], cand["labels"], cand.get("quality")
        if nms == "fusion":  # fused segments are new ones: no per-candidate quality to carry over
            seg, score, label = (np.asarray(x) for x in fusion_fn(seg, score, label))
            seg, score, label = seg.astype(np.float64).reshape(-1, 2), score.astype(np.float64), label.astype(np.int64)
            q = None
        groups = label if multiclass else np.zeros_like(label)
        if nms == "soft":
            keep, kept_scores = soft_nms_index(seg, score, groups, sigma, min_score, max_segments)
        else:
            if nms == "hard":
                keep = hard_nms(seg, score, groups, iou_threshold, max_keep=max_segments)
            else:
                keep = np.argsort(-score, kind="stable")[:max_segments]
            kept_scores = score[keep]
        kept = seg[keep]
        if not multiclass and voting_thresh > 0 and nms in ("soft", "hard"):
            kept = vote(kept, seg, score, voting_thresh)
        res = {"segments": np.clip(kept, 0.0, meta["duration"]), "scores": kept_scores, "labels": label[keep]}
        if q is not None:
            res["quality"] = q[keep]
        results.append(res)
    return results


@torch.no_grad()
def dense_predictions(out: DetectorOutput, batch: Batch, index: int) -> dict[str, np.ndarray]:
    """One video's dense, pre-NMS predictions on its real points (grid units of the batch's crop).

    Keys: "t", "level", "stride", "scores" [P, C] (sigmoid), "start", "end" (t − d_s, t + d_e, not
    clipped) and "quality" [P, 2] (sigmoid) when the model has quality heads.
    """
    if not 0 <= index < out.cls_logits.shape[0]:
        raise ValueError(f"dense_predictions: index {index} outside the batch of {out.cls_logits.shape[0]}")
    valid = out.mask[index]
    pts = out.points[valid]
    off = out.offsets[index][valid].float()
    res = {
        "t": pts[:, 0].cpu().numpy(),
        "level": out.levels[valid].cpu().numpy(),
        "stride": pts[:, 3].cpu().numpy(),
        "scores": torch.sigmoid(out.cls_logits[index][valid].float()).cpu().numpy(),
        "start": (pts[:, 0] - off[:, 0]).cpu().numpy(),
        "end": (pts[:, 0] + off[:, 1]).cpu().numpy(),
    }
    if out.quality_logits is not None:
        res["quality"] = torch.sigmoid(out.quality_logits[index][valid].float()).cpu().numpy()
    return res


@torch.no_grad()
def predict_videos(model: Detector, videos: list[Video], infer: InferConfig, batch_size: int = 8,
                   fusion_fn: FusionFn | None = None, dense: bool = False, precision: str = "fp32") -> list[dict]:
    """``detect`` on whole videos (no crop), in the order given; adds "dense" when ``dense``. The forward
    pass runs in ``precision`` (``train.precision``: the one the model was trained in).

    Videos are batched by length so little compute goes to padding (a video's outputs do not depend on
    the batch it is in: ``raytal.model.backbone``).
    """
    if batch_size < 1:
        raise ValueError(f"predict_videos: expected batch_size >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([v.num_snippets for v in videos], kind="stable")
    results: list[dict | None] = [None] * len(videos)
    try:
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            batch = collate([videos[i] for i in chunk], pad_multiple=model.pad_multiple)
            batch = batch.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else batch.to(device)
            with autocast(device, precision):
                out = model(batch.feats, batch.mask)
            dets = detect(
                out, batch, pre_nms_thresh=infer.pre_nms_thresh, pre_nms_topk=infer.pre_nms_topk, nms=infer.nms,
                iou_threshold=infer.iou_threshold, sigma=infer.nms_sigma, min_score=infer.min_score,
                max_segments=infer.max_segments, duration_thresh=infer.duration_thresh,
                multiclass=infer.multiclass_nms, voting_thresh=infer.voting_thresh, fusion_fn=fusion_fn,
            )
            for j, (i, det) in enumerate(zip(chunk, dets)):
                if dense:
                    det["dense"] = dense_predictions(out, batch, j)
                results[int(i)] = det
    finally:
        model.train(was_training)
    return results
