"""NTC positive/negative learning on non-target classes (docs/design.md §5 "NTC").

The loss takes the class partition (target, Ω_pos, Ω_neg; the rest is ambiguous and gets no loss) as
masks, so the same function serves unlabeled snippets (masks from the teacher's distribution) and
labeled snippets (Ω_pos empty, every non-target class negative).

Use with the sigmoid detector: the heads give independent per-class scores s ∈ [0, 1]^C, not a
distribution. Build the student's ``probs`` exactly as the teacher's distribution is built for the
partition, with ``raytal.pseudo.nontarget_partition.scores_to_distribution``: p = [s_1..s_C, 1 − max s] / Σ (background last, index C),
and pass ``target``/``pos``/``neg`` over those C + 1 columns. Then ℓ_pos raises classes close to the
target, ℓ_neg lowers the confidently-wrong ones, and the target term is the usual cross-entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nontarget_loss(
    probs: Tensor,
    target: Tensor,
    pos: Tensor,
    neg: Tensor,
    valid: Tensor | None = None,
    *,
    with_target: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Mean over valid snippets of ℓ_pos + ℓ_neg (+ ℓ_tgt when ``with_target``).

    probs: [N, K] class distribution per snippet (K = C + 1 with background for the sigmoid detector,
    see module docstring). target: [N] int target class. pos / neg: [N, K] bool masks of Ω_pos / Ω_neg;
    they must be disjoint, and their target column is ignored (the target has its own term).
    valid: [N] bool, snippets that take part (None = all); invalid rows may hold NaN.
    ℓ_pos = −Σ_{Ω_pos} log p, ℓ_neg = −Σ_{Ω_neg} log(1 − p), ℓ_tgt = −log p_target (the design's
    "usual target loss", docs/design.md §5 "NTC"; included by default; pass ``with_target=False`` when
    another loss already covers the target). Probabilities are clamped to [eps, 1 − eps] so the logs stay
    finite. Returns a scalar; 0 (attached to the graph) when no snippet is valid.
    """
    if probs.dim() != 2:
        raise ValueError(f"nontarget_loss expects probs [N, K]; got shape {tuple(probs.shape)}")
    n, k = probs.shape
    if target.shape != (n,) or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(
            f"nontarget_loss expects an integer target [N={n}]; got shape {tuple(target.shape)}, dtype {target.dtype}"
        )
    for name, m in (("pos", pos), ("neg", neg)):
        if m.shape != (n, k) or m.dtype != torch.bool:
            raise ValueError(
                f"nontarget_loss expects {name} as a bool mask [N={n}, K={k}]; "
                f"got shape {tuple(m.shape)}, dtype {m.dtype}"
            )
    if valid is not None and (valid.shape != (n,) or valid.dtype != torch.bool):
        raise ValueError(
            f"nontarget_loss expects valid as a bool mask [N={n}]; got shape {tuple(valid.shape)}, dtype {valid.dtype}"
        )
    if valid is not None:
        # Select rows (not multiply by the mask) so NaN in invalid rows cannot reach the sum or its gradient.
        probs, target, pos, neg = probs[valid], target[valid], pos[valid], neg[valid]
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    if bool((target < 0).any()) or bool((target >= k).any()):
        raise ValueError(f"nontarget_loss: target class ids must lie in [0, {k - 1}]")
    if bool((pos & neg).any()):
        raise ValueError("nontarget_loss: a class cannot be both positive (Ω_pos) and negative (Ω_neg) for a snippet")
    not_target = torch.ones_like(pos)
    not_target[torch.arange(probs.shape[0], device=probs.device), target] = False
    p = probs.clamp(eps, 1.0 - eps)
    zeros = torch.zeros_like(p)
    loss = -torch.where(pos & not_target, p.log(), zeros).sum(dim=1)
    loss = loss - torch.where(neg & not_target, (1.0 - p).log(), zeros).sum(dim=1)
    if with_target:
        loss = loss - p.gather(1, target[:, None].long()).squeeze(1).log()
    return loss.mean()
