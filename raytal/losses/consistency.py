"""NPL temporal consistency loss (docs/design.md §5 "NPL temporal consistency").

Snippets inside the same pseudo instance should agree on where the instance starts and ends, so the
loss penalises the jump between the absolute boundaries predicted by time-adjacent snippets.
"""

from __future__ import annotations

import torch
from torch import Tensor


def temporal_consistency_loss(start: Tensor, end: Tensor, instance: Tensor) -> Tensor:
    """L_cons = mean over instances of (1/(M_p−1)) Σ_i |b_{i+1} − b_i|, start and end summed.

    start, end: [M] absolute boundaries (grid units) predicted by the M snippets that lie inside
    pseudo instances; within one instance the snippets must be in time order. instance: [M] integer id
    of the instance each snippet belongs to (ids need not be contiguous or grouped; the time order of
    each instance's snippets is kept). Instances with fewer than 2 snippets have no adjacent pair and are
    left out of the mean. Returns a scalar; 0 (still attached to the graph) when no instance has a pair.
    """
    if start.dim() != 1 or end.dim() != 1 or instance.dim() != 1:
        raise ValueError(
            "temporal_consistency_loss expects 1-D start [M], end [M] and instance [M]; got shapes "
            f"{tuple(start.shape)}, {tuple(end.shape)}, {tuple(instance.shape)}"
        )
    if not (start.shape[0] == end.shape[0] == instance.shape[0]):
        raise ValueError(
            "temporal_consistency_loss expects start, end and instance of the same length M; got "
            f"{start.shape[0]}, {end.shape[0]}, {instance.shape[0]}"
        )
    if instance.dtype.is_floating_point or instance.dtype == torch.bool:
        raise ValueError(f"instance must be an integer tensor of instance ids; got dtype {instance.dtype}")
    zero = (start.sum() + end.sum()) * 0.0
    if start.shape[0] < 2:
        return zero
    # A stable sort by instance groups each instance's snippets while keeping their time order.
    ids, inverse = torch.unique(instance, return_inverse=True)
    order = torch.sort(inverse, stable=True).indices
    group = inverse[order]
    b_start, b_end = start[order], end[order]
    same = group[1:] == group[:-1]  # adjacent pair inside one instance
    jump = (b_start[1:] - b_start[:-1]).abs() + (b_end[1:] - b_end[:-1]).abs()
    pair_group = group[1:][same]
    n_inst = ids.shape[0]
    jump_sum = torch.zeros(n_inst, dtype=jump.dtype, device=jump.device).index_add(0, pair_group, jump[same])
    n_pairs = torch.bincount(pair_group, minlength=n_inst)  # = M_p − 1 for every instance with M_p ≥ 2
    has_pair = n_pairs > 0
    if not bool(has_pair.any()):
        return zero
    per_instance = jump_sum[has_pair] / n_pairs[has_pair].to(jump.dtype)
    return per_instance.mean()
