"""Turn one unlabeled video's teacher outputs into pseudo labels, by recipe.

This is the per-video stage both back-ends share: the in-process round calls it in a loop and the Ray Data
pipeline calls it in its map tasks. It only composes the pure functions of ``raytal.pseudo`` and
``raytal.postprocess`` in the order the papers use them:

- selection: NPL (boundary-variance ranking + class-adaptive filter on dense predictions), APL (joint
  quality score, dynamic thresholds, ICD refinement), or a plain score threshold;
- GauFuse: Gaussian weighted fusion of the selected instances, then LinPro dense snippet targets;
- NTC: the teacher's level-0 snippet class scores ride along for the student's non-target loss.

The teacher's predictions are in seconds (``detect``) and grid units (``dense``); the output is seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from raytal.config import Config, InferConfig
from raytal.core.grid import grid_to_seconds, seconds_to_grid
from raytal.core.video import Video
from raytal.postprocess.fusion import gaussian_fusion
from raytal.postprocess.nms import nms
from raytal.pseudo.apl import joint_score, split_by_quality
from raytal.pseudo.icd import ICDiscriminator, icd_scores, instance_features, refine_with_icd, train_icd
from raytal.pseudo.linpro import dense_labels
from raytal.pseudo.noco import cala
from raytal.pseudo.npl import boundary_variance_scores, class_adaptive_filter


@dataclass
class ICDContext:
    """A trained ICD discriminator and the labeled reference instances it compares against.

    Trained once per round on the driver (``fit_icd``) and shipped to every labeling task: its state is a
    plain tensor dict, so it pickles without code and loads with ``weights_only`` semantics.
    """

    state: dict[str, torch.Tensor]
    dim: int
    hidden: int
    ref_feats: np.ndarray  # [N, D] max-pooled labeled instance features
    ref_labels: np.ndarray  # [N]

    def model(self) -> ICDiscriminator:
        m = ICDiscriminator(self.dim, self.hidden)
        m.load_state_dict(self.state)
        return m.eval()


def video_grid(video: Video, seconds: np.ndarray) -> np.ndarray:
    return seconds_to_grid(seconds, video.fps, video.feat_stride, video.num_frames)


def video_seconds(video: Video, grid: np.ndarray) -> np.ndarray:
    return grid_to_seconds(grid, video.fps, video.feat_stride, video.num_frames, video.duration)


def labeled_instance_features(videos: list[Video]) -> tuple[np.ndarray, np.ndarray]:
    """Max-pooled input features of every ground-truth instance of ``videos`` -> ([N, D], [N])."""
    feats, labels = [], []
    for v in videos:
        if len(v.labels):
            feats.append(instance_features(v.features, video_grid(v, v.segments)))
            labels.append(np.asarray(v.labels, dtype=np.int64))
    if not feats:
        raise ValueError("ICD needs labeled instances, and the labeled videos have none")
    return np.concatenate(feats), np.concatenate(labels)


def fit_icd(cfg: Config, labeled: list[Video]) -> ICDContext:
    """Train the ICD discriminator on labeled same/different-class instance pairs (APL §3.3)."""
    apl = cfg.recipe.apl
    feats, labels = labeled_instance_features(labeled)
    model = ICDiscriminator(feats.shape[1], apl.icd_hidden)
    train_icd(model, feats, labels, steps=apl.icd_steps, lr=apl.icd_lr, seed=cfg.run.seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ICDContext(state, feats.shape[1], apl.icd_hidden, feats, labels)


def _npl_select(cfg: Config, video: Video, dense: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """NPL: dense (point, class) candidates -> ranking score -> NMS on it -> class-adaptive top-K."""
    npl = cfg.recipe.npl
    scores = dense["scores"]  # [P, C]
    point, cls = np.nonzero(scores >= npl.candidate_thresh)
    cand_scores = scores[point, cls]
    if len(cand_scores) > npl.candidate_topk:
        top = np.argsort(-cand_scores, kind="stable")[: npl.candidate_topk]
        point, cls, cand_scores = point[top], cls[top], cand_scores[top]
    rank = boundary_variance_scores(
        dense["t"], dense["level"], dense["start"], dense["end"], point, cand_scores, npl.n_adjacent, npl.eps
    )
    seg = np.stack([dense["start"][point], dense["end"][point]], axis=1)
    keep = nms(seg, rank, cls, npl.nms_iou)
    seg, cls, cand_scores, rank = seg[keep], cls[keep], cand_scores[keep], rank[keep]
    keep = class_adaptive_filter(cls, rank, npl.n_pos)
    origins = np.full(int(keep.sum()), "npl", dtype=object)
    return video_seconds(video, seg[keep]), cand_scores[keep], cls[keep], origins


def _apl_select(
    cfg: Config, video: Video, pred: dict[str, np.ndarray], icd: ICDContext | None
) -> tuple[np.ndarray, ...]:
    """APL: joint score P, τ_neg / dynamic τ_pos split, then ICD's EAP and MPP."""
    apl = cfg.recipe.apl
    if "quality" not in pred:
        raise ValueError("recipe apl needs the tIoU/tND quality heads: set model.quality_heads=true")
    q = pred["quality"]
    score = joint_score(pred["scores"], q[:, 0], q[:, 1], apl.eps)
    positive, candidate = split_by_quality(score, apl.tau_neg)
    keep = positive
    origins = np.full(len(score), "apl", dtype=object)
    if apl.icd and icd is not None and len(score):
        feats = instance_features(video.features, video_grid(video, pred["segments"]))
        s = icd_scores(icd.model(), feats, pred["labels"], icd.ref_feats, icd.ref_labels)
        keep = refine_with_icd(positive, candidate, s, apl.tau_icd, apl.sigma_icd)
        origins[keep & candidate] = "apl_mpp"
    return pred["segments"][keep], score[keep], pred["labels"][keep], origins[keep]


def _threshold_select(cfg: Config, pred: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    keep = pred["scores"] >= cfg.recipe.min_score
    origins = np.full(int(keep.sum()), "teacher", dtype=object)
    return pred["segments"][keep], pred["scores"][keep], pred["labels"][keep], origins


def label_video(
    cfg: Config, num_classes: int, video: Video, pred: dict, icd: ICDContext | None = None
) -> dict[str, object]:
    """Pseudo labels of one video from its teacher outputs (``predict_videos(..., dense=needs_dense)``).

    Returns seconds-based ``segments`` [K, 2], ``labels``, ``scores``, ``weights`` (= scores for GauFuse,
    whose fused confidence is the label's strength; 1 otherwise), ``origins``, optional ``targets``
    [T, C] and ``teacher_scores`` [T, C], and ``relaxed`` (LinPro problems solved in elastic form).
    """
    recipe = cfg.recipe
    if recipe.npl.enabled:
        seg, score, lab, origin = _npl_select(cfg, video, pred["dense"])
    elif recipe.apl.enabled:
        seg, score, lab, origin = _apl_select(cfg, video, pred, icd)
    else:
        seg, score, lab, origin = _threshold_select(cfg, pred)
    if recipe.noco.enabled and recipe.noco.cala:
        nc = recipe.noco
        seg, score, lab = cala(seg, score, lab, nc.theta_c, nc.cala_nms, nc.theta_a)
        origin = np.full(len(score), "cala", dtype=object)
    weights = np.ones(len(score), dtype=np.float32)
    out: dict[str, object] = {"targets": None, "teacher_scores": None, "relaxed": 0}
    if recipe.gaufuse.enabled:
        gf = recipe.gaufuse
        seg, score, lab = gaussian_fusion(seg, score, lab, gf.iou_group, gf.temperature_pseudo)
        origin = np.full(len(score), "fusion", dtype=object)
        weights = np.asarray(score, dtype=np.float32)
        T = video.num_snippets
        targets, relaxed = dense_labels(video_grid(video, seg), score, lab, T, num_classes, gf.margin, gf.penalty)
        out.update(targets=targets, relaxed=int(relaxed))
    if recipe.ntc.enabled:
        out["teacher_scores"] = level0_scores(pred["dense"], video.num_snippets)
    out.update(
        segments=np.asarray(seg, dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(lab, dtype=np.int64),
        scores=np.asarray(score, dtype=np.float32),
        weights=weights,
        origins=np.asarray(origin, dtype=object),
    )
    return out


def level0_scores(dense: dict[str, np.ndarray], num_snippets: int) -> np.ndarray:
    """Teacher class scores of the level-0 points, i.e. one row per input snippet: [T, C] float32."""
    at0 = dense["level"] == 0
    idx = np.rint(dense["t"][at0]).astype(np.int64)
    out = np.zeros((num_snippets, dense["scores"].shape[1]), dtype=np.float32)
    ok = (idx >= 0) & (idx < num_snippets)
    out[idx[ok]] = dense["scores"][at0][ok]
    return out


def labeling_infer(cfg: Config) -> InferConfig:
    """Teacher inference settings for pseudo labels: GauFuse fuses raw candidates instead of NMS output."""
    if cfg.recipe.gaufuse.enabled:
        return dataclasses.replace(cfg.infer, nms="none")
    return cfg.infer


def needs_dense(cfg: Config) -> bool:
    """Whether the teacher must also return dense pre-NMS predictions (NPL ranking, NTC scores)."""
    return cfg.recipe.npl.enabled or cfg.recipe.ntc.enabled
