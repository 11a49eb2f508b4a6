"""ActionFormer label assignment: which pyramid points are positives for which instance."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Targets:
    cls: torch.Tensor  # [P, C] float, 1 at the assigned class (0 rows for negatives)
    reg: torch.Tensor  # [P, 2] (start, end) distances from the point, input-grid snippets (0 for negatives)
    pos: torch.Tensor  # [P] bool
    gt_index: torch.Tensor  # [P] int64 assigned instance (-1 for negatives)


def assign_targets(points: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, num_classes: int,
                   center_sample_radius: float) -> Targets:
    """Assign every point (vectorized over points × instances).

    A point at t with stride s is positive for an instance [a, b] when
    * it lies inside the centre region clipped to the instance:
      max(a, m − r·s) < t < min(b, m + r·s), m = (a + b)/2, r = ``center_sample_radius``;
    * the larger of its distances (t − a, b − t) lies in its level's regression range [lo, hi].
    Of several such instances the shortest wins (small actions are otherwise swallowed). Instances of
    exactly the same length (e.g. one segment with two labels) all set their class in ``cls``.
    """
    if points.dim() != 2 or points.shape[1] != 4:
        raise ValueError(f"assign_targets: expected points [P, 4], got {tuple(points.shape)}")
    segments = segments.reshape(-1, 2).to(points)
    labels = labels.reshape(-1).to(device=points.device, dtype=torch.int64)
    if len(segments) != len(labels):
        raise ValueError(f"assign_targets: {len(segments)} segments but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"assign_targets: labels must lie in [0, {num_classes}), got {labels.tolist()}")
    p = points.shape[0]
    if len(segments) == 0:
        return Targets(
            cls=points.new_zeros(p, num_classes), reg=points.new_zeros(p, 2),
            pos=torch.zeros(p, dtype=torch.bool, device=points.device),
            gt_index=torch.full((p,), -1, dtype=torch.int64, device=points.device),
        )
    t, lo, hi, stride = (points[:, i : i + 1] for i in range(4))  # each [P, 1]
    start, end = segments[None, :, 0], segments[None, :, 1]  # [1, N]
    left, right = t - start, end - t  # [P, N]
    centre = 0.5 * (start + end)
    radius = center_sample_radius * stride
    inside = torch.minimum(t - torch.maximum(start, centre - radius), torch.minimum(end, centre + radius) - t) > 0
    far = torch.maximum(left, right)
    in_range = (far >= lo) & (far <= hi)
    lengths = (end - start).expand(p, -1).masked_fill(~(inside & in_range), float("inf"))
    min_len, idx = lengths.min(1)
    pos = torch.isfinite(min_len)
    ties = (lengths <= min_len[:, None] + 1e-3) & pos[:, None]
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(points.dtype)  # [N, C]
    cls = (ties.to(points.dtype) @ one_hot).clamp(max=1.0)
    rows = torch.arange(p, device=points.device)
    reg = torch.stack([left[rows, idx], right[rows, idx]], 1) * pos[:, None]
    gt_index = torch.where(pos, idx, torch.full_like(idx, -1))
    return Targets(cls=cls, reg=reg, pos=pos, gt_index=gt_index)
