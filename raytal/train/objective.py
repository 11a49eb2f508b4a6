"""The student's training objective, composed from the recipe: L = L_s + w_u·L_u + recipe terms.

``make_loss_fn(cfg)`` returns the ``LossFn`` the Trainer calls on every batch. Labeled videos give the
supervised detection loss L_s; pseudo-labeled videos give L_u (the same detection loss on pseudo instances,
whose per-instance weights scale their positive terms), weighted by NPL's α or APL's β. On top:

- NPL temporal consistency over the pseudo instances' positive points (SPEC §5);
- APL quality focal classification targets max(tIoU − tND, ε), L_locq on the quality heads, and the ACP
  contrastive loss as an auxiliary term;
- NTC positive/negative learning on non-target classes of the pseudo videos' level-0 snippets, from the
  teacher's snippet scores;
- GauFuse snippet loss on LinPro dense targets (BCE on level-0 scores), or, after a regeneration of the
  pseudo labels, the Δ-label loss on the change of the dense targets (``delta_targets``);
- NoCo: the batch's pseudo instances are corrected online by the EMA teacher first (raytal.train.noco).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from raytal.config import Config
from raytal.losses.consistency import temporal_consistency_loss
from raytal.losses.contrastive import acp_loss
from raytal.losses.delta import delta_label_loss
from raytal.losses.nontarget import nontarget_loss
from raytal.losses.quality import locq_loss, quality_target, segment_tiou_tnd
from raytal.model.batch import Batch
from raytal.model.criterion import detection_loss
from raytal.model.detector import DetectorOutput
from raytal.train.noco import noco_loss_fn
from raytal.pseudo.ntc import partition_nontarget, scores_to_distribution

# loss_fn(model, batch, out, trainer) -> named terms, "loss" the one to minimise
LossFn = Callable[[torch.nn.Module, Batch, DetectorOutput, Any], dict[str, torch.Tensor]]


def _positive_offsets(out: DetectorOutput, targets: list, videos: torch.Tensor):
    """Gather (video row, point, predicted offsets, target offsets, instance id) over positive points."""
    rows, pts, inst = [], [], []
    for row, tg in zip(videos.tolist(), targets):
        p = torch.nonzero(tg.pos, as_tuple=True)[0]
        rows.append(torch.full_like(p, row))
        pts.append(p)
        inst.append(tg.gt_index[p] + 100_000 * row)  # unique instance id across the batch
    rows, pts, inst = torch.cat(rows), torch.cat(pts), torch.cat(inst)
    reg_t = torch.cat([tg.reg[tg.pos] for tg in targets])
    return rows, pts, out.offsets[rows, pts], reg_t, inst


def _quality_terms(out: DetectorOutput, targets: list, videos: torch.Tensor, eps: float):
    """tIoU/tND of the current regression vs its target on positive points, for QFL targets and L_locq."""
    rows, pts, pred, tgt, _ = _positive_offsets(out, targets, videos)
    tiou, tnd = segment_tiou_tnd(pred.detach(), tgt)
    return rows, pts, tiou, tnd, quality_target(tiou, tnd, eps)


def _apl_cls_targets(eps: float):
    """Detection-loss hook: the class target at a positive point is max(tIoU − tND, ε), not 1."""

    def fn(out: DetectorOutput, targets: list, select: torch.Tensor) -> torch.Tensor:
        videos = torch.nonzero(select, as_tuple=True)[0]
        soft = torch.zeros_like(out.cls_logits)
        for row, tg in zip(videos.tolist(), targets):
            soft[row] = tg.cls
        rows, pts, _, _, q = _quality_terms(out, targets, videos, eps)
        soft[rows, pts] = soft[rows, pts] * q[:, None]
        return soft

    return fn


def _level0(out: DetectorOutput, T: int) -> torch.Tensor:
    """Indices of the level-0 points: one per input snippet, in time order."""
    idx = torch.nonzero(out.levels == 0, as_tuple=True)[0]
    return idx[:T]


def make_loss_fn(cfg: Config, delta_targets: bool = False) -> LossFn:
    """The recipe's objective as a Trainer ``loss_fn(model, batch, out, trainer)``.

    ``delta_targets``: the pseudo videos' dense targets are GauFuse Δ labels (Y^(g) − Y^(g−1), signed), so
    the snippet term is the Δ-label loss instead of BCE on Y.
    """
    r, tr, m = cfg.recipe, cfg.train, cfg.model
    base = dict(
        focal_alpha=tr.focal_alpha, focal_gamma=tr.focal_gamma, reg_weight=tr.reg_weight,
        center_sample_radius=m.center_sample_radius,
    )
    if r.apl.enabled:
        base["cls_target_fn"] = _apl_cls_targets(r.apl.eps)
    unlabeled_weight = r.apl.beta if r.apl.enabled else r.npl.alpha if r.npl.enabled else 1.0
    acp_gen = torch.Generator().manual_seed(cfg.run.seed)

    def loss_fn(model, batch: Batch, out: DetectorOutput, trainer=None) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        total = out.cls_logits.sum() * 0.0
        for name, select, weight in (("s", batch.labeled, 1.0), ("u", ~batch.labeled, unlabeled_weight)):
            if not bool(select.any()):
                continue
            det = detection_loss(out, batch, select=select, **base)
            total = total + weight * det["loss"]
            terms[f"cls_{name}"], terms[f"reg_{name}"] = det["cls"].detach(), det["reg"].detach()
            videos = torch.nonzero(select, as_tuple=True)[0]
            if sum(int(t.pos.sum()) for t in det["targets"]) == 0:
                continue
            if r.apl.enabled and out.quality_logits is not None:
                rows, pts, tiou, tnd, _ = _quality_terms(out, det["targets"], videos, r.apl.eps)
                locq = locq_loss(out.quality_logits[rows, pts], tiou, tnd)
                total = total + r.apl.lambda_locq * weight * locq
                terms[f"locq_{name}"] = locq.detach()
            if name == "u" and r.npl.enabled:
                rows, pts, off, _, inst = _positive_offsets(out, det["targets"], videos)
                t = out.points[pts, 0]
                order = torch.argsort(inst * 1e6 + t)  # group by instance, time order within it
                cons = temporal_consistency_loss((t - off[:, 0])[order], (t + off[:, 1])[order], inst[order])
                total = total + r.npl.consistency_weight * cons
                terms["consistency"] = cons.detach()
        pseudo = ~batch.labeled
        if r.ntc.enabled and batch.teacher_scores is not None and bool(pseudo.any()):
            T = batch.teacher_scores.shape[1]
            teacher = batch.teacher_scores[pseudo]  # [b, T, C]
            valid = (batch.mask[pseudo] & torch.isfinite(teacher).all(-1)).reshape(-1)
            C = teacher.shape[-1]
            # Teacher and student distributions are built the same way: normalised class scores with
            # background = 1 − max (SPEC §5 NTC); the partition comes from the teacher's.
            dist = scores_to_distribution(torch.nan_to_num(teacher).reshape(-1, C).detach().cpu().numpy())
            target, pos, neg = (torch.as_tensor(a, device=teacher.device) for a in partition_nontarget(dist, r.ntc.lam))
            probs = scores_to_distribution(torch.sigmoid(out.cls_logits[pseudo][:, _level0(out, T)]).reshape(-1, C))
            ntc = nontarget_loss(probs, target, pos, neg, valid, with_target=False)
            total = total + r.ntc.weight * ntc
            terms["ntc"] = ntc.detach()
        if r.gaufuse.enabled and batch.targets is not None and bool(pseudo.any()):
            T = batch.targets.shape[1]
            dense = batch.targets[pseudo]
            valid = batch.mask[pseudo][..., None] & torch.isfinite(dense)
            logits = out.cls_logits[pseudo][:, _level0(out, T)]
            if delta_targets:
                C = dense.shape[-1]
                rows = valid.all(-1).reshape(-1)
                snippet = delta_label_loss(torch.sigmoid(logits).reshape(-1, C), dense.reshape(-1, C), rows)
            else:
                bce = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(dense), reduction="none")
                snippet = (bce * valid).sum() / valid.sum().clamp(min=1)
            total = total + r.gaufuse.delta_weight * snippet
            terms["delta" if delta_targets else "snippet"] = snippet.detach()
        if r.apl.enabled and r.apl.acp:
            acp = acp_loss(out.pyramid, batch.mask, batch.feats, r.apl.acp_parts, r.apl.acp_temperature, acp_gen)
            total = total + r.apl.lambda_acp * acp
            terms["acp"] = acp.detach()
        terms["loss"] = total
        return terms

    if r.noco.enabled:  # NoCo corrects the batch's pseudo instances with the EMA teacher first
        return noco_loss_fn(cfg, loss_fn)
    return loss_fn
