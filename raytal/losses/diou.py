"""Distance-IoU loss on 1-D segments given as (start, end) distances from a shared point."""

from __future__ import annotations

import torch


def diou_loss(pred_offsets: torch.Tensor, target_offsets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 − IoU + ρ²/c² per pair -> [N].

    Both segments are [t − d_s, t + d_e] around the same point t, so the intersection is
    min(ds_p, ds_g) + min(de_p, de_g), the enclosing length c is max(ds) + max(de), and the centre
    distance is ρ = ½ |(de_p − ds_p) − (de_g − ds_g)|. The ρ term keeps a gradient when IoU is 0.
    """
    if pred_offsets.shape != target_offsets.shape or pred_offsets.dim() != 2 or pred_offsets.shape[1] != 2:
        raise ValueError(
            f"diou_loss: expected two [N, 2] tensors, got {tuple(pred_offsets.shape)} and {tuple(target_offsets.shape)}"
        )
    ls_p, le_p = pred_offsets[:, 0], pred_offsets[:, 1]
    ls_g, le_g = target_offsets[:, 0], target_offsets[:, 1]
    inter = torch.minimum(ls_p, ls_g) + torch.minimum(le_p, le_g)
    union = (ls_p + le_p) + (ls_g + le_g) - inter
    iou = inter / union.clamp(min=eps)
    enclose = torch.maximum(ls_p, ls_g) + torch.maximum(le_p, le_g)
    rho = 0.5 * ((le_p - ls_p) - (le_g - ls_g))
    return 1.0 - iou + rho**2 / enclose.clamp(min=eps) ** 2
