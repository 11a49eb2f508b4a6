"""NoCo (paper 001): CALA label augmentation of the teacher's instances, and the online noise correction
of the detector student by its EMA teacher (AIC, MIC) with HPM instance weights (docs/design.md §5 "NoCo";
the paper's §3.3).

The teacher is the trainer's EMA of the student (``StepContext.ema``), at NoCo's momentum. On every iteration after the
warm-up the teacher predicts on the batch; for each pseudo-labeled video, AIC pulls its pseudo instances
towards the teacher's confident overlapping predictions (and averages their weights), MIC adds the
teacher's confident predictions that no pseudo instance covers, and HPM keeps the per-instance weights,
which the detection loss multiplies into each instance's positive classification and regression terms.
The recipe's loss then runs on the corrected batch.

Why after the warm-up (``train.warmup_epochs``): the EMA starts as a copy of the random initial student,
and its predictions only carry information once the student has fitted the CALA labels for a while (the
paper pre-trains the teacher on them first). The correction is per iteration and per crop: it changes
the instances this batch trains on, not the stored pseudo labels, so it needs no state beyond the EMA
and a 2-worker run corrects each video exactly as a 1-worker run does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from raytal.config import Config, NoCoConfig
from raytal.core.video import Video
from raytal.engine.trainer import StepContext
from raytal.model.batch import Batch
from raytal.model.detector import DetectorOutput
from raytal.pseudo.noise_correction import aic, cala, mic
from raytal.recipes.registry import BatchTransform, Instances, LabelingContext, Recipe, register


def teacher_predictions(
    out: DetectorOutput, index: int, length: int, min_score: float, topk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One video's dense teacher predictions with score > ``min_score`` (the ``topk`` best), in the
    batch's grid units clipped to [0, length]: (segments [K, 2], scores [K], labels [K])."""
    valid = out.mask[index]
    probs = torch.sigmoid(out.cls_logits[index][valid].float())  # [P, C]
    pts = out.points[valid]
    off = out.offsets[index][valid].float()
    point, cls = torch.nonzero(probs > min_score, as_tuple=True)
    score = probs[point, cls]
    if score.numel() > topk:
        keep = torch.topk(score, topk).indices
        point, cls, score = point[keep], cls[keep], score[keep]
    t = pts[point, 0]
    seg = torch.stack([t - off[point, 0], t + off[point, 1]], dim=1).clamp(0.0, float(length))
    ok = seg[:, 1] > seg[:, 0]
    return (seg[ok].cpu().numpy().astype(np.float64), score[ok].cpu().numpy().astype(np.float64),
            cls[ok].cpu().numpy().astype(np.int64))


def correct_instances(
    q_seg: np.ndarray, q_lab: np.ndarray, q_w: np.ndarray,
    p_seg: np.ndarray, p_lab: np.ndarray, p_score: np.ndarray, nc: NoCoConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """AIC then MIC on one video's pseudo instances q by teacher predictions p, per ``nc``'s switches.

    Returns (segments [N', 2], labels [N'], weights [N'], number added by MIC); without HPM every
    weight is 1 (all pseudo instances count the same, the ablation of NoCo Table 3).
    """
    seg, lab, w = np.asarray(q_seg, np.float64), np.asarray(q_lab, np.int64), np.asarray(q_w, np.float64)
    if nc.aic:
        seg, w = aic(seg, lab, w, p_seg, p_lab, p_score, nc.theta_aic, nc.theta_s, nc.gamma)
    added = 0
    if nc.mic:
        m_seg, m_lab, m_w = mic(seg, lab, p_seg, p_lab, p_score, nc.theta_m, nc.theta_low, nc.cala_nms)
        added = len(m_lab)
        seg, lab, w = np.concatenate([seg, m_seg]), np.concatenate([lab, m_lab]), np.concatenate([w, m_w])
    if not nc.hpm:
        w = np.ones_like(w)
    return seg, lab, w, added


@torch.no_grad()
def correct_batch(batch: Batch, teacher_out: DetectorOutput, nc: NoCoConfig, topk: int) -> tuple[Batch, int]:
    """The batch with its pseudo-labeled videos' instances corrected by the teacher (labeled ones kept)."""
    segments, labels, weights = list(batch.segments), list(batch.labels), list(batch.weights)
    min_score = min(nc.theta_s, nc.theta_m)
    added = 0
    for i in torch.nonzero(~batch.labeled, as_tuple=True)[0].tolist():  # loop over videos, not snippets
        p_seg, p_score, p_lab = teacher_predictions(teacher_out, i, int(batch.meta[i]["length"]), min_score, topk)
        seg, lab, w, n = correct_instances(
            batch.segments[i].cpu().numpy(), batch.labels[i].cpu().numpy(), batch.weights[i].cpu().numpy(),
            p_seg, p_lab, p_score, nc,
        )
        device = batch.segments[i].device
        segments[i] = torch.as_tensor(seg, dtype=torch.float32, device=device).reshape(-1, 2)
        labels[i] = torch.as_tensor(lab, dtype=torch.int64, device=device)
        weights[i] = torch.as_tensor(w, dtype=torch.float32, device=device)
        added += n
    return dataclasses.replace(batch, segments=segments, labels=labels, weights=weights), added


@register
class NoCo(Recipe):
    name = "noco"

    def refine(self, cfg: Config, video: Video, inst: Instances, pred: dict, context: LabelingContext,
               num_classes: int) -> Instances:
        """CALA; the base model's labels (round 1 of the weak setting) start with their CALA confidence as
        HPM weight (the paper's initial online weights), so uncertain instances pull the student less."""
        nc = cfg.recipe.noco
        out = inst
        if nc.cala:
            seg, score, lab = cala(inst.segments, inst.scores, inst.labels, nc.theta_c, nc.cala_nms, nc.theta_a)
            out = Instances.of(seg, score, lab, "cala")
            out.teacher_scores = inst.teacher_scores
        if nc.hpm and context.teacher_kind == "weak_base":
            out.weights = np.clip(out.scores, 0.0, 1.0).astype(np.float32)
        return out

    def ema_momentum(self, cfg: Config) -> float:
        return cfg.recipe.noco.ema_momentum  # the EMA is NoCo's teacher

    def batch_transform(self, cfg: Config) -> BatchTransform:
        """After the warm-up, the batch's pseudo instances are corrected by the EMA teacher (AIC, MIC)."""
        nc = cfg.recipe.noco
        start = cfg.train.warmup_epochs
        topk = cfg.infer.pre_nms_topk

        def transform(model, batch: Batch, out: DetectorOutput, ctx: StepContext) -> tuple[Batch, dict[str, float]]:
            online = (nc.aic or nc.mic) and ctx.epoch >= start and bool((~batch.labeled).any())
            if not online:
                if not nc.hpm:  # the CALA weights are HPM's initial weights: without HPM every instance counts 1
                    batch = dataclasses.replace(batch, weights=[torch.ones_like(w) for w in batch.weights])
                return batch, {}
            with torch.no_grad():
                teacher_out = ctx.ema(batch.feats, batch.mask)
            corrected, added = correct_batch(batch, teacher_out, nc, topk)
            return corrected, {"mic_added": float(added)}

        return transform
