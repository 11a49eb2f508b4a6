"""GauFuse Δ pseudo-label loss (docs/design.md §5 "GauFuse Δ pseudo labels").

Training on the change Δ = Y^(r) − Y^(r−1) between two pseudo-label generations, instead of on Y^(r),
pushes up classes whose label grew and down those whose label shrank, so early wrong labels with high
confidence are not reinforced forever (self-correction).
"""

from __future__ import annotations

import torch
from torch import Tensor


def delta_label_loss(probs: Tensor, delta: Tensor, valid: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Mean over valid snippets of −Σ_c Δ_c · log p_c.

    probs: [N, C] snippet class probabilities of the model; delta: [N, C] label change Δ (may be negative;
    detached, it is a label); valid: [N] bool snippets with a Δ (None = all; invalid rows may hold NaN).
    p is clamped to [eps, 1] so a negative Δ cannot drive the loss to −∞. Returns a scalar; 0 (attached to
    the graph) when no snippet is valid.
    """
    if probs.dim() != 2 or probs.shape != delta.shape:
        raise ValueError(
            "delta_label_loss expects probs and delta [N, C] of equal shape; "
            f"got {tuple(probs.shape)}, {tuple(delta.shape)}"
        )
    if valid is not None:
        if valid.shape != probs.shape[:1] or valid.dtype != torch.bool:
            raise ValueError(
                f"delta_label_loss expects valid as a bool mask [N={probs.shape[0]}]; "
                f"got shape {tuple(valid.shape)}, dtype {valid.dtype}"
            )
        # Select rows (not multiply by the mask) so NaN labels of invalid rows cannot reach the gradient.
        probs, delta = probs[valid], delta[valid]
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    delta = delta.detach().to(probs.dtype)
    if not bool(delta.isfinite().all()):
        raise ValueError("delta_label_loss: delta has NaN/Inf on valid snippets; mark those snippets invalid")
    return -(delta * probs.clamp(eps, 1.0).log()).sum(dim=1).mean()
