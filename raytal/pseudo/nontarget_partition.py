"""NTC label-space partition of unlabeled snippets (docs/design.md §5 "NTC", paper 003).

Each snippet's class distribution is split into the target (argmax), positive classes (close to the
target's confidence: likely to hold the true class), negative classes (the bottom classes whose total
mass fits under the target's confidence: safe to push down) and the ambiguous rest (no loss).
Batched over snippets: one value sort and a few vector passes over the classes for all rows.
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def _to_torch(x: Array, name: str) -> tuple[torch.Tensor, bool]:
    was_numpy = not isinstance(x, torch.Tensor)
    t = torch.from_numpy(np.ascontiguousarray(x)) if was_numpy else x
    if t.ndim < 1 or not t.is_floating_point():
        raise ValueError(f"{name}: expected a float array [..., classes], got dtype {t.dtype} shape {tuple(t.shape)}")
    return t, was_numpy


def scores_to_distribution(scores: Array) -> Array:
    """Sigmoid class scores [..., C] -> distribution [..., C+1] with background last.

    The vector (s_1..s_C, 1 − max s) is divided by its sum. The sum is ≥ max s + (1 − max s) = 1 for
    scores in [0, 1], so the division is always defined; the ranking of classes is unchanged, which is
    all the partition looks at besides ratios to the maximum. Differentiable for torch inputs.
    """
    s, was_numpy = _to_torch(scores, "scores")
    if s.shape[-1] < 1:
        raise ValueError(f"scores: expected at least one class column, got shape {tuple(s.shape)}")
    if bool(((s < 0) | (s > 1) | ~torch.isfinite(s)).any()):
        raise ValueError("scores: expected sigmoid probabilities in [0, 1]")
    full = torch.cat([s, 1.0 - s.max(dim=-1, keepdim=True).values], dim=-1)
    p = full / full.sum(dim=-1, keepdim=True)
    return p.numpy() if was_numpy else p


def _running_sum(x: np.ndarray) -> np.ndarray:
    """Cumulative sum over axis 0 of [K, N] as K vector adds: faster than np.cumsum over a short axis."""
    out = np.empty_like(x)
    out[0] = x[0]
    for j in range(1, x.shape[0]):
        np.add(out[j - 1], x[j], out=out[j])
    return out


def partition_nontarget(p: Array, lam: float = 0.85) -> tuple[Array, Array, Array]:
    """Partition each row of p [..., K] (K = C+1 with background) -> (target [...] int64, pos, neg [..., K] bool).

    target = argmax (ties: the lowest index). Ω_neg = the largest set of bottom-ranked non-target
    classes, taken in ascending order, whose cumulative probability is ≤ max p; among equal
    probabilities the lower class index is taken first. Ω_pos = non-target classes with
    p_k ≥ λ·max p that are not in Ω_neg. Neither set contains the target; the rest is ambiguous.
    Returns numpy arrays for numpy input, tensors (on the input's device, no gradient) for tensor input.
    """
    is_tensor = isinstance(p, torch.Tensor)
    probs = p.detach().cpu().numpy() if is_tensor else np.asarray(p)
    if probs.ndim < 1 or probs.shape[-1] < 2 or not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(
            f"p: expected float probabilities [..., C+1] with at least 2 classes, got {probs.dtype} {probs.shape}"
        )
    if not (np.isfinite(probs).all() and (probs >= 0).all()):
        raise ValueError("p: expected finite, non-negative probabilities")
    lead, k = probs.shape[:-1], probs.shape[-1]
    flat = probs.reshape(-1, k)
    cols = np.arange(flat.shape[0])
    target = flat.argmax(axis=-1)
    # Class-major layout [K, N]: every step below is a handful of contiguous length-N vector operations.
    ranked = np.ascontiguousarray(flat.T)
    top = ranked[target, cols]
    # Ω_neg without an argsort: sort the values only (the target moved last as +inf); the running sum
    # (non-decreasing, p ≥ 0) gives how many classes fit, n_neg, and the value v of the last one.
    # Every class below v is in; of the classes equal to v, the first n_neg − #below by index are.
    ranked[target, cols] = np.inf
    ascending = np.ascontiguousarray(np.sort(ranked.T, axis=-1).T)
    n_neg = (_running_sum(ascending) <= top).sum(axis=0)
    v = ascending[np.maximum(n_neg - 1, 0), cols]
    below = ranked < v
    at_v = ranked == v
    quota = n_neg - below.sum(axis=0)
    neg = (below | (at_v & (_running_sum(at_v.astype(np.int32)) <= quota))) & (n_neg > 0)
    pos = (ranked >= lam * top) & ~neg
    pos[target, cols] = False
    pos, neg = np.ascontiguousarray(pos.T), np.ascontiguousarray(neg.T)
    target, pos, neg = target.reshape(lead), pos.reshape(probs.shape), neg.reshape(probs.shape)
    if is_tensor:
        return tuple(torch.from_numpy(x).to(p.device) for x in (target, pos, neg))
    return target, pos, neg
