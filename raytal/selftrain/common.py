"""What both back-ends (in-process and Ray) share: building the model, the teacher's inference, the
training data of a round, and evaluation. Kept Ray-free so a Ray worker and a unit test run the same code.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch

from raytal.config import Config
from raytal.data.pseudo_io import apply_pseudo_labels, read_pseudo_labels
from raytal.data.shards import read_shards
from raytal.core.video import Video
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.core.segments import SegmentTable
from raytal.model.detector import Detector
from raytal.model.inference import predict_videos
from raytal.postprocess.fusion import gaussian_fusion
from raytal.pseudo.delta import delta_labels
from raytal.selftrain.labeling import ICDContext, label_video, labeling_infer, needs_dense
from raytal.selftrain.weak import is_weak_checkpoint, keep_video_classes, weak_pseudolabel_callables
from raytal.train.checkpoint import load_checkpoint

THUMOS_TIOUS = (0.3, 0.4, 0.5, 0.6, 0.7)


def build_detector(cfg: Config, num_classes: int, input_dim: int) -> Detector:
    torch.manual_seed(cfg.train.seed)
    return Detector(cfg.model, num_classes, input_dim)


def load_detector(cfg: Config, path: str | Path) -> Detector:
    """A detector from a round's final checkpoint (EMA weights when the checkpoint has them)."""
    state = load_checkpoint(path)
    model = build_detector(cfg, int(state["num_classes"]), int(state["input_dim"]))
    model.load_state_dict(state.get("ema") or state["model"])
    return model.eval()


def eval_fusion_fn(cfg: Config):
    """GauFuse replaces Soft-NMS at test time with T = temperature_test; None otherwise."""
    gf = cfg.recipe.gaufuse
    if not gf.enabled:
        return None
    return lambda seg, score, lab: gaussian_fusion(seg, score, lab, gf.iou_group, gf.temperature_test)


def evaluate_model(cfg: Config, model: Detector, videos: list[Video], tious=THUMOS_TIOUS) -> DetectionResult:
    infer = cfg.infer
    if cfg.recipe.gaufuse.enabled:
        infer = dataclasses.replace(infer, nms="fusion")
    preds = predict_videos(model, videos, infer, fusion_fn=eval_fusion_fn(cfg))
    gt = SegmentTable.from_videos(videos)
    pred = SegmentTable.from_predictions([v.video_id for v in videos], preds)
    return evaluate_detection(gt, pred, tious)


class TeacherPredictor:
    """The teacher's inference for lists of videos: built once per Ray actor (the checkpoint is read
    once) or once per in-process round; the recipe's labeling then runs per video (``label_video``)."""

    def __init__(self, cfg: Config, checkpoint: str | Path):
        threads = cfg.train.torch_threads
        if threads > 0:
            torch.set_num_threads(threads)
        self.cfg = cfg
        self.model = load_detector(cfg, checkpoint)
        if cfg.ray.use_gpu and torch.cuda.is_available():  # a GPU actor (Ray set CUDA_VISIBLE_DEVICES)
            self.model = self.model.cuda()

    def predict(self, videos: list[Video]) -> list[dict]:
        preds = predict_videos(
            self.model, videos, labeling_infer(self.cfg), batch_size=self.cfg.ray.infer_batch_size,
            dense=needs_dense(self.cfg),
        )
        if self.cfg.data.setting == "weak":  # a detector teacher of the weak setting (round ≥ 2, regenerations)
            preds = [keep_video_classes(v, p) for v, p in zip(videos, preds)]
        return preds


def round_training_videos(
    split_dir: Path, pseudo_dir: Path | None, prev_pseudo_dir: Path | None = None,
) -> tuple[list[Video], list[Video]]:
    """(labeled, pseudo-labeled) training videos of a round, read from the run's shards.

    Every training worker reads them itself (they are small next to the features it trains on), so a
    2-worker run sees exactly the global batches of a 1-worker run. With ``prev_pseudo_dir`` (the previous
    generation of the student in a GauFuse regeneration schedule) each video's dense targets become the Δ labels
    Y^(g) − Y^(g−1); a video without previous targets (an error row then) keeps Y^(g), as a first generation.
    """
    labeled = list(read_shards(split_dir / "labeled"))
    if pseudo_dir is None:
        return labeled, []
    unlabeled = list(read_shards(split_dir / "unlabeled"))
    pseudo = apply_pseudo_labels(unlabeled, read_pseudo_labels(pseudo_dir))
    if prev_pseudo_dir is not None:
        prev = read_pseudo_labels(prev_pseudo_dir)
        pseudo = [
            v if v.targets is None else dataclasses.replace(v, targets=delta_labels(
                prev[v.video_id].targets if v.video_id in prev else None, v.targets))
            for v in pseudo
        ]
    return labeled, [v for v in pseudo if len(v.labels) or v.targets is not None or v.teacher_scores is not None]


def _teacher_infer(cfg: Config, checkpoint: str):
    return TeacherPredictor(cfg, checkpoint).predict


def pseudolabel_callables(cfg: Config, checkpoint: str, num_classes: int, icd: ICDContext | None):
    """(make_infer, label_video) for the pseudo-label stages: picklable, so Ray ships them to workers.

    ``make_infer()`` loads the teacher once (per actor); ``label_video(video, prediction)`` applies the
    recipe to one video.
    """
    if is_weak_checkpoint(checkpoint):  # weak setting, round 1: the base WTAL model labels the videos
        return weak_pseudolabel_callables(cfg, checkpoint, num_classes)
    make_infer = functools.partial(_teacher_infer, cfg, checkpoint)
    return make_infer, functools.partial(label_video, cfg, num_classes, icd=icd)
