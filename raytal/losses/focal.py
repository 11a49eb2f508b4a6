"""Sigmoid focal loss (Lin et al. 2017), elementwise, for per-class sigmoid classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                       ) -> torch.Tensor:
    """FL = α_t (1 − p_t)^γ BCE(logits, targets), no reduction.

    p_t = p·y + (1 − p)(1 − y), α_t = α·y + (1 − α)(1 − y); soft targets y ∈ [0, 1] are allowed
    (the same formula interpolates). α < 0 switches the α weighting off.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"sigmoid_focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss
