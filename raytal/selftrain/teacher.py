"""A round's teacher: the checkpoint that labels the unlabeled videos and whose detections are evaluated.

Two kinds (``raytal.selftrain.models``): a detector (round-0 teacher, every student) or the weak setting's
MIL base model (its round 0). ``labeling_callables`` gives the pseudo-label stage what it needs for
either kind — ``make_infer()`` (loads the model once per actor) and ``label_video(video, prediction)``
(the recipes' labeling) — as picklable callables Ray ships to its workers; ``predict`` gives test-time
detections of either kind.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from raytal.config import Config
from raytal.core.precision import set_tf32
from raytal.core.threads import set_torch_threads
from raytal.core.video import Video
from raytal.engine.checkpoint import checkpoint_kind, load_checkpoint
from raytal.engine.mil import predict_weak
from raytal.model.inference import predict_videos
from raytal.model.wtal import WTALModel
from raytal.postprocess.fusion import FusionFn, gaussian_fusion
from raytal.recipes.labeling import label_video, labeling_infer, needs_dense
from raytal.recipes.registry import LabelingContext
from raytal.selftrain.models import DETECTOR, WEAK_BASE, load_detector, load_weak_base
from raytal.selftrain.spec import LabelSpec


def keep_video_classes(video: Video, pred: dict) -> dict:
    """``pred`` (segments, scores, labels, and any per-video keys) without the instances of classes the video is
    known not to contain: the video-level labels are the weak setting's supervision, for the base model's
    proposals and for a detector teacher's alike. A video without labels keeps the model's own choice."""
    known = np.asarray(video.video_labels, dtype=np.int64).reshape(-1)
    if not known.size:
        return pred
    keep = np.isin(pred["labels"], known)
    per_instance = ("segments", "scores", "labels", "quality")  # "quality": APL's tIoU/tND per instance
    return {**pred, **{k: np.asarray(pred[k])[keep] for k in per_instance if k in pred}}


def eval_fusion(cfg: Config) -> FusionFn:
    """Gaussian weighted fusion at test time, ``infer.fusion_iou`` / ``infer.fusion_temperature``: a detector's
    with ``infer.nms: fusion``, the weak base model's always."""
    iou, temp = cfg.infer.fusion_iou, cfg.infer.fusion_temperature
    return lambda seg, score, lab: gaussian_fusion(seg, score, lab, iou, temp)


def _raw(seg: np.ndarray, score: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No de-duplication: pseudo labels fuse (GauFuse) or aggregate (CALA) the raw proposals themselves."""
    return seg, score, lab


def on_device(model: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """``model`` on this process's GPU when the run uses GPUs and one is visible (Ray sets
    CUDA_VISIBLE_DEVICES for a GPU actor), with ``train.tf32``; else as it is, on the CPU."""
    if cfg.ray.use_gpu and torch.cuda.is_available():
        set_tf32(cfg.train.tf32)
        return model.cuda()
    return model


class DetectorTeacher:
    """A detector's inference for lists of videos, built once per actor (the checkpoint is read once)."""

    def __init__(self, cfg: Config, checkpoint: str, num_classes: int | None = None):
        self.cfg = cfg
        self.model = on_device(load_detector(cfg, checkpoint, num_classes), cfg)

    def __call__(self, videos: list[Video]) -> list[dict]:
        preds = predict_videos(self.model, videos, labeling_infer(self.cfg), batch_size=self.cfg.ray.infer_batch_size,
                               dense=needs_dense(self.cfg), precision=self.cfg.train.precision)
        if self.cfg.data.setting == "weak":  # a detector teacher of the weak setting (round >= 2, regenerations)
            preds = [keep_video_classes(v, p) for v, p in zip(videos, preds)]
        return preds


class WeakBaseTeacher:
    """The base model's raw TCAM proposals per training video, restricted to the video's known classes.

    Scores are clipped to [0, 1]: an outer-inner contrast plus the γ-weighted video score can exceed 1,
    and the pseudo-label stages read a score as a confidence (LinPro's target value, CALA/HPM weights).
    Proposals scoring below ``weak.pseudo_min_score`` are dropped.
    """

    def __init__(self, cfg: Config, checkpoint: str, num_classes: int | None = None):
        self.cfg = cfg
        self.model: WTALModel = load_weak_base(checkpoint, num_classes)

    def __call__(self, videos: list[Video]) -> list[dict]:
        preds = predict_weak(self.model, videos, self.cfg.weak, self.model.num_classes, nms="fusion", fusion_fn=_raw,
                             max_segments=self.cfg.infer.pre_nms_topk)
        out = []
        for v, p in zip(videos, preds):
            p = keep_video_classes(v, {k: p[k] for k in ("segments", "scores", "labels")})
            keep = p["scores"] >= self.cfg.weak.pseudo_min_score
            out.append({"segments": p["segments"][keep], "scores": np.clip(p["scores"][keep], 0.0, 1.0),
                        "labels": p["labels"][keep]})
        return out


_TEACHERS = {DETECTOR: DetectorTeacher, WEAK_BASE: WeakBaseTeacher}


def _make_teacher(cfg: Config, checkpoint: str, kind: str, num_classes: int):
    set_torch_threads(cfg.train.torch_threads)
    return _TEACHERS[kind](cfg, checkpoint, num_classes)


def teacher_kind(checkpoint: str | Path) -> str:
    return checkpoint_kind(load_checkpoint(checkpoint))


def labeling_callables(cfg: Config, checkpoint: str, num_classes: int, context: LabelingContext):
    """(make_infer, label_video) of a teacher checkpoint, picklable for Ray (see the module docstring)."""
    kind = context.teacher_kind
    make_infer = functools.partial(_make_teacher, cfg, checkpoint, kind, num_classes)
    return make_infer, functools.partial(label_video, cfg, num_classes, context=context)


def pass_callables(cfg: Config, spec: LabelSpec):
    """(make_infer, label_video) of a labeling pass: its own stages when it names them, else the teacher's
    with the config's recipes."""
    return (spec.stages or labeling_callables)(cfg, spec.teacher, spec.num_classes, spec.context)


class Predictor:
    """Test-time detections (seconds) of a checkpoint of either kind, one dict per video; the model is
    loaded once, then called on chunks of videos."""

    def __init__(self, cfg: Config, checkpoint: str, num_classes: int | None = None, input_dim: int | None = None):
        set_torch_threads(cfg.train.torch_threads)
        self.cfg, self.kind = cfg, teacher_kind(checkpoint)
        if self.kind == WEAK_BASE:
            self.model = load_weak_base(checkpoint, num_classes, input_dim)
        else:
            self.model = on_device(load_detector(cfg, checkpoint, num_classes, input_dim), cfg)
            self.fusion = eval_fusion(cfg) if cfg.infer.nms == "fusion" else None

    def __call__(self, videos: list[Video]) -> list[dict]:
        cfg = self.cfg
        if self.kind == WEAK_BASE:
            return predict_weak(self.model, videos, cfg.weak, self.model.num_classes, nms="fusion",
                                fusion_fn=eval_fusion(cfg), max_segments=cfg.infer.max_segments)
        return predict_videos(self.model, videos, cfg.infer, fusion_fn=self.fusion, batch_size=cfg.ray.infer_batch_size,
                              precision=cfg.train.precision)
