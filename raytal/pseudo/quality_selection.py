"""APL pseudo-label quality: joint score and the dynamic positive / candidate split (docs/design.md §5 "APL ALQA",
paper 002).

The joint score trusts a prediction only as far as its predicted localization quality (tIoU minus
tND) allows; the split adapts τ_pos to each round's score distribution instead of a fixed threshold.
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor

# Values equal to τ_pos up to float rounding count as positive: mean + std equals the maximum exactly
# for two distinct values or for all-equal values, and rounding must not flip those cases.
_TAU_TOL = 1e-9


def joint_score(p_cls: Array, p_tiou: Array, p_tnd: Array, eps: float = 1e-3) -> Array:
    """P = max(P_tIoU − P_tND, ε) · P_cls, elementwise (numpy or torch; shapes must broadcast)."""
    if isinstance(p_cls, torch.Tensor):
        return torch.clamp(p_tiou - p_tnd, min=eps) * p_cls
    return np.maximum(np.asarray(p_tiou) - np.asarray(p_tnd), eps) * np.asarray(p_cls)


def positive_threshold(quality: np.ndarray, tau_neg: float = 0.15) -> float:
    """τ_pos = mean + std (population) of the scores above τ_neg; +inf when none is above τ_neg."""
    quality = np.asarray(quality, dtype=np.float64)
    if quality.ndim != 1:
        raise ValueError(f"quality: expected a 1-D array of joint scores, got shape {quality.shape}")
    kept = quality[quality > tau_neg]
    if kept.size == 0:
        return float("inf")
    return float(kept.mean() + kept.std())


def split_by_quality(quality: np.ndarray, tau_neg: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Split one round's post-NMS predictions by joint score P [K] -> (positive [K], candidate [K]).

    Scores ≤ τ_neg are dropped (neither); positive: P ≥ τ_pos; candidate: τ_neg < P < τ_pos.
    """
    quality = np.asarray(quality, dtype=np.float64)
    tau_pos = positive_threshold(quality, tau_neg)
    above = quality > tau_neg
    positive = above & (quality >= tau_pos - _TAU_TOL)
    return positive, above & ~positive
