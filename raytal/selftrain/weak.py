"""The weakly-supervised round 0 (SPEC §4, issue 11): the base WTAL model as the first teacher.

In the weak setting (``data.setting: weak``) every training video carries only its video-level labels
(raytal.data.splits.apply_split puts them all in ``unlabeled``), so round 0 cannot train a detector.
It trains the MIL snippet classifier (raytal.train.weak.train_weak) instead, saves it as a plain tensor
dict (``kind: weak_base``, loadable with ``weights_only=True``) and evaluates it with Gaussian weighted
fusion at test time. Round 1 labels the training videos with it (GauFuse: fusion at T = 0.1 + LinPro;
NoCo: CALA) through the same pipeline stages as a detector teacher; later rounds use the detector
students as usual. Both back-ends call these functions, so the checkpoint kind is the only dispatch.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from raytal.config import Config
from raytal.data.shards import read_shards
from raytal.core.video import Video
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.core.segments import SegmentTable
from raytal.model.wtal import WTALModel
from raytal.postprocess.fusion import gaussian_fusion
from raytal.selftrain.labeling import label_video
from raytal.train.checkpoint import load_checkpoint, save_checkpoint
from raytal.train.weak import FusionFn, predict_weak, train_weak

WEAK_KIND = "weak_base"
# The weak papers (GauFuse, NoCo) report THUMOS14 mAP at 0.1:0.1:0.7; 0.3:0.1:0.7 is derived from it.
WEAK_TIOUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def _set_threads(cfg: Config) -> None:
    if cfg.train.torch_threads > 0:
        torch.set_num_threads(cfg.train.torch_threads)


def train_weak_stage(cfg: Config, stage_dir: Path, split_dir: Path, num_classes: int) -> str:
    """Round 0 of the weak setting: MIL training on the split's training videos -> ``stage_dir/final.pt``."""
    if cfg.data.setting != "weak":
        raise ValueError(f"the weak round 0 needs data.setting='weak', got {cfg.data.setting!r}")
    _set_threads(cfg)
    videos = list(read_shards(Path(split_dir) / "unlabeled"))
    if not videos:
        raise ValueError(f"{split_dir}/unlabeled: no training videos for the weak base model")
    model = train_weak(videos, num_classes, cfg.weak, cfg.train.seed, progress=False)
    state = {
        "kind": WEAK_KIND,
        "model": model.state_dict(),
        "num_classes": num_classes,
        "input_dim": int(videos[0].features.shape[1]),
        "hidden": cfg.weak.hidden,
        "dropout": cfg.weak.dropout,
    }
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    return str(save_checkpoint(stage_dir / "final.pt", state))


def is_weak_checkpoint(path: str | Path) -> bool:
    return load_checkpoint(path).get("kind") == WEAK_KIND


def load_weak(path: str | Path) -> WTALModel:
    """The base model of a weak round-0 checkpoint, in eval mode."""
    state = load_checkpoint(path)
    if state.get("kind") != WEAK_KIND:
        raise ValueError(f"{path}: expected a weak base-model checkpoint (kind '{WEAK_KIND}'), got {state.get('kind')!r}")
    model = WTALModel(int(state["input_dim"]), int(state["num_classes"]), int(state["hidden"]), float(state["dropout"]))
    model.load_state_dict(state["model"])
    return model.eval()


def fusion_at_test(cfg: Config) -> FusionFn:
    """Gaussian weighted fusion at test time (T = 0.03): GauFuse's settings when enabled, else infer's."""
    gf = cfg.recipe.gaufuse
    iou, temp = (gf.iou_group, gf.temperature_test) if gf.enabled else (cfg.infer.fusion_iou, cfg.infer.fusion_temperature)
    return lambda seg, score, lab: gaussian_fusion(seg, score, lab, iou, temp)


def _raw(seg: np.ndarray, score: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No de-duplication: pseudo labels fuse (GauFuse) or aggregate (CALA) the raw proposals themselves."""
    return seg, score, lab


def evaluate_weak(
    cfg: Config, model: WTALModel, videos: list[Video], tious=WEAK_TIOUS, nms: str = "fusion",
) -> DetectionResult:
    """The base model on ``videos``: Gaussian weighted fusion at test time, or ``nms="hard"`` (NMS 0.5)."""
    _set_threads(cfg)
    fusion_fn = fusion_at_test(cfg) if nms == "fusion" else None
    preds = predict_weak(model, videos, cfg.weak, model.num_classes, nms=nms, fusion_fn=fusion_fn,
                         max_segments=cfg.infer.max_segments)
    gt = SegmentTable.from_videos(videos)
    return evaluate_detection(gt, SegmentTable.from_predictions([v.video_id for v in videos], preds), tious)


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


def weak_pseudo_predictions(cfg: Config, model: WTALModel, videos: list[Video]) -> list[dict]:
    """Raw TCAM proposals per training video, restricted to the video's known classes.

    Scores are clipped to [0, 1]: an outer-inner contrast plus the γ-weighted video score can exceed 1,
    and the pseudo-label stages read a score as a confidence (LinPro's target value, CALA/HPM weights).
    Proposals scoring below ``weak.pseudo_min_score`` are dropped.
    """
    preds = predict_weak(model, videos, cfg.weak, model.num_classes, nms="fusion", fusion_fn=_raw,
                         max_segments=cfg.infer.pre_nms_topk)
    out = []
    for v, p in zip(videos, preds):
        p = keep_video_classes(v, {k: p[k] for k in ("segments", "scores", "labels")})
        keep = p["scores"] >= cfg.weak.pseudo_min_score
        out.append({"segments": p["segments"][keep], "scores": np.clip(p["scores"][keep], 0.0, 1.0),
                    "labels": p["labels"][keep]})
    return out


def weak_label_video(cfg: Config, num_classes: int, video: Video, pred: dict) -> dict[str, object]:
    """The recipe's labeling (raytal.selftrain.labeling.label_video) of one video's base-model proposals.

    NoCo's HPM starts each instance's weight from its CALA confidence (the paper's initial online
    weights), so uncertain pseudo instances pull the student less from the first iteration.
    """
    out = label_video(cfg, num_classes, video, pred)
    nc = cfg.recipe.noco
    if nc.enabled and nc.hpm:
        out["weights"] = np.clip(np.asarray(out["scores"], dtype=np.float32), 0.0, 1.0)
    return out


def _weak_infer(cfg: Config, checkpoint: str):
    _set_threads(cfg)
    model = load_weak(checkpoint)
    return functools.partial(weak_pseudo_predictions, cfg, model)


def weak_pseudolabel_callables(cfg: Config, checkpoint: str, num_classes: int):
    """(make_infer, label_video) of a weak teacher, for the Ray Data pipeline and the in-process round."""
    return functools.partial(_weak_infer, cfg, checkpoint), functools.partial(weak_label_video, cfg, num_classes)


def predict_checkpoint(cfg: Config, checkpoint: str | Path, videos: list[Video]) -> list[dict]:
    """Test-time detections of a round's checkpoint, base model or detector (timelines in the report)."""
    if is_weak_checkpoint(checkpoint):
        model = load_weak(checkpoint)
        return predict_weak(model, videos, cfg.weak, model.num_classes, nms="fusion", fusion_fn=fusion_at_test(cfg),
                            max_segments=cfg.infer.max_segments)
    from raytal.model.inference import predict_videos
    from raytal.selftrain.common import load_detector  # common imports this module

    return predict_videos(load_detector(cfg, checkpoint), videos, cfg.infer)


def eval_json(result: DetectionResult) -> dict:
    """``result.to_json()`` plus the average over 0.3:0.1:0.7 when the thresholds start lower (weak runs)."""
    out = result.to_json()
    sel = (result.tious >= 0.3 - 1e-9) & (result.tious <= 0.7 + 1e-9)
    if not sel.all() and sel.any():
        out["average_mAP_0.3_0.7"] = float(np.mean(result.mAP[sel]))
    return out

