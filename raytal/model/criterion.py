"""Supervised detection loss: focal classification + DIoU regression over assigned points."""

from __future__ import annotations

from collections.abc import Callable

import torch

from raytal.losses.diou import diou_loss
from raytal.losses.focal import sigmoid_focal_loss
from raytal.losses.normalizer import LossNormalizer
from raytal.model.assign import Targets, assign_targets
from raytal.model.batch import Batch
from raytal.model.detector import DetectorOutput

ClsTargetFn = Callable[[DetectorOutput, list[Targets], torch.Tensor], torch.Tensor]


def detection_loss(
    out: DetectorOutput,
    batch: Batch,
    *,
    select: torch.Tensor | None = None,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    reg_weight: float = 1.0,
    center_sample_radius: float = 1.5,
    cls_target_fn: ClsTargetFn | None = None,
    normalizer: LossNormalizer | None = None,
    label_smoothing: float = 0.0,
) -> dict:
    """Loss over the videos in ``select`` (all when None): {"cls", "reg", "loss", "num_pos", "targets"}.

    Both terms are sums over real points divided by ``normalizer`` updated with this step's number of
    positive points (ActionFormer's moving average; None: this step's count, at least 1), so a batch
    with few actions is not drowned by background. The DIoU term compares offsets in units of each
    point's stride, as ActionFormer regresses them (DIoU does not change when both segments scale alike,
    so this is only its arithmetic). A positive point's whole classification row and its DIoU term are
    multiplied by the weight of the instance it is assigned to (1 for ground truth; pseudo-label / HPM
    weights otherwise), so an uncertain instance pulls the model less. ``cls_target_fn(out, targets,
    select)`` may replace the hard one-hot targets with soft ones; it returns [B, P, C] for the whole batch
    or [n_selected, P, C]. ``label_smoothing`` ε maps targets y to y(1 − ε) + ε/(C + 1). The losses are
    computed in float32 whatever the precision of the model's outputs.
    """
    b = out.cls_logits.shape[0]
    if select is None:
        select = torch.ones(b, dtype=torch.bool, device=out.cls_logits.device)
    select = select.to(device=out.cls_logits.device, dtype=torch.bool)
    if select.shape != (b,):
        raise ValueError(f"detection_loss: expected select of shape ({b},), got {tuple(select.shape)}")
    idx = select.nonzero().flatten().tolist()
    num_classes = out.cls_logits.shape[-1]
    targets = [
        assign_targets(out.points, batch.segments[i], batch.labels[i], num_classes, center_sample_radius) for i in idx
    ]
    zero = out.cls_logits.sum() * 0.0  # keeps the graph connected when nothing is selected
    if not idx:
        return {"cls": zero, "reg": zero, "loss": zero, "num_pos": zero.detach(), "targets": targets}

    logits = out.cls_logits[select].float()  # [S, P, C]
    valid = out.mask[select]  # [S, P]
    pos = torch.stack([t.pos for t in targets]) & valid
    if cls_target_fn is not None:
        cls_t = cls_target_fn(out, targets, select)
        if cls_t.shape[0] == b and b != len(idx):
            cls_t = cls_t[select]
        if cls_t.shape != logits.shape:
            raise ValueError(
                f"detection_loss: cls_target_fn returned {tuple(cls_t.shape)}, expected {tuple(logits.shape)}"
            )
    else:
        cls_t = torch.stack([t.cls for t in targets])
    # Per-point weight: the assigned instance's weight on positives, 1 elsewhere.
    point_w = torch.ones_like(pos, dtype=logits.dtype)
    for row, (i, t) in enumerate(zip(idx, targets)):
        w = batch.weights[i].to(logits)
        if len(w):
            point_w[row] = torch.where(t.pos, w[t.gt_index.clamp(min=0)], point_w[row])
    count = pos.sum().to(logits.dtype)
    num_pos = normalizer.update(count) if normalizer is not None else count.clamp(min=1.0)

    cls_t = cls_t.to(logits)
    if label_smoothing:
        cls_t = cls_t * (1.0 - label_smoothing) + label_smoothing / (num_classes + 1)
    focal = sigmoid_focal_loss(logits, cls_t, focal_alpha, focal_gamma).sum(-1)  # [S, P]
    cls_loss = (focal * point_w)[valid].sum() / num_pos
    if pos.any():
        reg_t = torch.stack([t.reg for t in targets])
        stride = out.points[:, 3].to(logits)[None, :, None].expand_as(reg_t)[pos]
        pred = out.offsets[select].float()[pos] / stride
        reg_loss = (diou_loss(pred, reg_t[pos] / stride) * point_w[pos]).sum() / num_pos
    else:
        reg_loss = zero
    return {
        "cls": cls_loss,
        "reg": reg_loss,
        "loss": cls_loss + reg_weight * reg_loss,
        "num_pos": count.detach(),
        "targets": targets,
    }
