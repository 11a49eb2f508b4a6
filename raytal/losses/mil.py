"""Multiple-instance loss of the weakly-supervised base model (docs/design.md §4 "Weak base model"), BaS-Net
formulation.

BaS-Net (Lee et al., AAAI 2020) adds a background class to the TCAM and trains two branches that share
the classifier:

* base branch — TCAM of the raw features. Every untrimmed video contains background, so its video-level
  target is the video's classes *plus* background: y = [labels, 1] / (|labels| + 1).
* suppression branch — TCAM of the features multiplied by a learned foreground attention a_t in [0, 1].
  Its target is the video's classes with background *off*: y = [labels, 0] / |labels|. The only way to
  meet it is to drive a_t to 0 on background snippets, which is what later makes the attention (and the
  suppressed TCAM) localize actions.

Video scores come from top-k mean pooling over time per class (k = max(1, floor(T_real / topk_ratio)),
padding excluded) followed by a softmax over the C + 1 classes; each branch's loss is the cross-entropy
−Σ_c y_c log p_c averaged over videos. An L1 penalty on the attention (mean over videos of Σ_t a_t,
BaS-Net α = 1e-4) keeps it sparse.
Total: L = L_base + bg_weight · L_supp + norm_weight · L_norm.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_mask(mask: Tensor, B: int, T: int) -> None:
    if mask.shape != (B, T) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool [B={B}, T={T}], got {tuple(mask.shape)} {mask.dtype}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every video needs at least one real snippet (a mask row is all False)")


def topk_pool(logits: Tensor, mask: Tensor, topk_ratio: float) -> Tensor:
    """Per video and class, mean of the k largest logits over real snippets: [B, T, K] -> [B, K].

    k = max(1, floor(T_real / topk_ratio)), so short and long videos pool the same fraction of snippets.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, K], got shape {tuple(logits.shape)}")
    B, T, _ = logits.shape
    _check_mask(mask, B, T)
    if not topk_ratio > 0:
        raise ValueError(f"topk_ratio must be > 0, got {topk_ratio}")
    k = torch.clamp(torch.floor(mask.sum(dim=1).to(logits.dtype) / topk_ratio), min=1.0)  # [B]
    ranked = logits.masked_fill(~mask[:, :, None], float("-inf")).sort(dim=1, descending=True).values
    take = torch.arange(T, device=logits.device)[None, :] < k[:, None]  # [B, T]: rank < k
    # where() instead of multiply: ranked holds -inf past the real length and -inf * 0 is NaN.
    total = torch.where(take[:, :, None], ranked, torch.zeros((), dtype=ranked.dtype, device=ranked.device))
    return total.sum(dim=1) / k[:, None]


def _cross_entropy(video_logits: Tensor, target: Tensor) -> Tensor:
    """−Σ_c y_c log softmax(z)_c per video [B]."""
    return -(target * torch.log_softmax(video_logits, dim=-1)).sum(dim=-1)


def mil_loss(
    tcam_logits: Tensor,
    mask: Tensor,
    video_labels: Tensor,
    topk_ratio: float = 8.0,
    bg_weight: float = 1.0,
    *,
    suppressed_logits: Tensor | None = None,
    attention: Tensor | None = None,
    norm_weight: float = 1e-4,
) -> dict[str, Tensor]:
    """BaS-Net MIL loss (module docstring).

    tcam_logits: [B, T, C+1] base-branch TCAM logits, background last. mask: [B, T] bool, True on real
    snippets. video_labels: [B, C] multi-hot. suppressed_logits: [B, T, C+1] suppression-branch TCAM
    (None = base branch only, plain MIL with a background class). attention: [B, T] foreground weights
    for the sparsity term (None = no term). The suppression term averages over videos with at least one
    class (a pure-background video has no valid suppressed target).
    Returns {"loss", "base", "supp", "norm", "video_probs" [B, C+1] (base branch, detached)}.
    """
    if tcam_logits.dim() != 3 or tcam_logits.shape[-1] < 2:
        raise ValueError(f"tcam_logits must be [B, T, C+1] with C >= 1, got {tuple(tcam_logits.shape)}")
    B, T, C1 = tcam_logits.shape
    C = C1 - 1
    if video_labels.shape != (B, C):
        raise ValueError(f"video_labels must be multi-hot [B={B}, C={C}], got {tuple(video_labels.shape)}")
    _check_mask(mask, B, T)
    labels = video_labels.to(tcam_logits.dtype)
    if bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError("video_labels must be multi-hot (0/1 entries)")

    ones = torch.ones(B, 1, dtype=labels.dtype, device=labels.device)
    base_target = torch.cat([labels, ones], dim=1)
    base_target = base_target / base_target.sum(dim=1, keepdim=True)
    video_logits = topk_pool(tcam_logits, mask, topk_ratio)
    base = _cross_entropy(video_logits, base_target).mean()

    zero = tcam_logits.new_zeros(())
    supp = zero
    if suppressed_logits is not None:
        if suppressed_logits.shape != tcam_logits.shape:
            raise ValueError(
                f"suppressed_logits must match tcam_logits {tuple(tcam_logits.shape)}, "
                f"got {tuple(suppressed_logits.shape)}"
            )
        n = labels.sum(dim=1, keepdim=True)
        has = n[:, 0] > 0
        supp_target = torch.cat([labels, torch.zeros_like(ones)], dim=1) / n.clamp(min=1.0)
        per_video = _cross_entropy(topk_pool(suppressed_logits, mask, topk_ratio), supp_target)
        supp = (per_video * has).sum() / has.sum().clamp(min=1)

    norm = zero
    if attention is not None:
        if attention.shape != (B, T):
            raise ValueError(f"attention must be [B={B}, T={T}], got {tuple(attention.shape)}")
        norm = (attention.abs() * mask).sum(dim=1).mean()

    loss = base + bg_weight * supp + norm_weight * norm
    return {
        "loss": loss,
        "base": base.detach(),
        "supp": supp.detach(),
        "norm": norm.detach(),
        "video_probs": torch.softmax(video_logits.detach(), dim=-1),
    }
