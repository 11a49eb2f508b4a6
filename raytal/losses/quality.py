"""APL ALQA losses (docs/design.md §5 "APL ALQA"): tIoU / tND quality targets, L_locq and the quality focal loss.

The quality heads learn to predict how good the regression branch currently is (tIoU and tND of its
segment against the (pseudo) ground truth), and the classification target at the true class becomes
max(tIoU − tND, ε), so the class score ranks predictions by joint classification-localization quality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def segment_tiou_tnd(pred: Tensor, target: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """tIoU and tND of segments given as offsets from the same point.

    pred, target: [N, 2] non-negative distances (to start, to end) from one anchor point, as the
    regression head predicts them; the segments are [−d_s, d_e] around that point.
    tND = ρ² / c²: ρ = distance between the two centres, c = length of the smallest enclosing segment
    (the DIoU penalty term, so 1 − tIoU + tND is the DIoU loss). Returns (tiou [N], tnd [N]).
    """
    if pred.dim() != 2 or pred.shape[-1] != 2 or pred.shape != target.shape:
        raise ValueError(
            "segment_tiou_tnd expects pred and target [N, 2] of equal shape; "
            f"got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    ps, pe = pred[:, 0], pred[:, 1]
    ts, te = target[:, 0], target[:, 1]
    inter = (torch.minimum(ps, ts) + torch.minimum(pe, te)).clamp_min(0.0)
    union = (ps + pe) + (ts + te) - inter
    tiou = inter / union.clamp_min(eps)
    enclosing = torch.maximum(ps, ts) + torch.maximum(pe, te)
    rho = 0.5 * ((pe - ps) - (te - ts))  # centre of [−d_s, d_e] is (d_e − d_s) / 2
    tnd = rho.square() / enclosing.square().clamp_min(eps)
    return tiou, tnd


def quality_target(tiou: Tensor, tnd: Tensor, eps: float = 1e-3) -> Tensor:
    """Soft classification target max(tIoU − tND, ε) at the true class (APL Eq. 4/5)."""
    return (tiou - tnd).clamp_min(eps)


def locq_loss(quality_logits: Tensor, tiou: Tensor, tnd: Tensor, reduction: str = "mean") -> Tensor:
    """L_locq = BCE(σ(logit_tIoU), tIoU) + BCE(σ(logit_tND), tND) per positive point.

    quality_logits: [N, 2] (tIoU, tND) logits of the quality heads at positive points; tiou, tnd: [N]
    targets from the regression branch, detached here (they are labels, the regression head must not be
    pulled toward what the quality head predicts). reduction: "mean" (over the N points — equals the
    per-positive normalisation of the detection loss when N is the positives), "sum" or "none" ([N]).
    Empty input gives 0 attached to the graph.
    """
    if quality_logits.dim() != 2 or quality_logits.shape[-1] != 2:
        raise ValueError(f"locq_loss expects quality_logits [N, 2]; got {tuple(quality_logits.shape)}")
    n = quality_logits.shape[0]
    if tiou.shape != (n,) or tnd.shape != (n,):
        raise ValueError(f"locq_loss expects tiou and tnd [N={n}]; got {tuple(tiou.shape)}, {tuple(tnd.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"locq_loss reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
    targets = torch.stack([tiou, tnd], dim=1).detach().clamp(0.0, 1.0).to(quality_logits.dtype)
    per_point = F.binary_cross_entropy_with_logits(quality_logits, targets, reduction="none").sum(dim=1)
    if reduction == "none":
        return per_point
    if n == 0:
        return quality_logits.sum() * 0.0
    return per_point.mean() if reduction == "mean" else per_point.sum()


def quality_focal_loss(logits: Tensor, soft_targets: Tensor, gamma: float = 2.0) -> Tensor:
    """Quality focal loss |y − σ(x)|^γ · BCE(σ(x), y), elementwise (GFL form used by APL).

    logits, soft_targets: [N, C]; soft_targets hold max(tIoU − tND, ε) at the true class of positives and
    0 elsewhere. The modulating factor is not detached (as in GFL), so easy points also get smaller
    gradients. No reduction: the caller normalises by the number of positives like the focal loss.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(
            "quality_focal_loss expects logits and soft_targets of equal shape; "
            f"got {tuple(logits.shape)}, {tuple(soft_targets.shape)}"
        )
    y = soft_targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (y - torch.sigmoid(logits)).abs().pow(gamma) * bce
