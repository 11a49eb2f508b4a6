"""Anchor-free points of the pyramid: one per snippet of each level, on the input grid."""

from __future__ import annotations

import torch


def make_points(t: int, regression_ranges: list[list[float]], device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points for an input of ``t`` snippets and one pyramid level per regression range.

    Level l has stride s = 2**l and t / s points at centres i*s (input-grid snippets), each carrying
    the level's regression range [lo, hi]. Returns points [P, 4] = (centre, lo, hi, stride) and
    levels [P] int64, levels concatenated in order.
    """
    levels = len(regression_ranges)
    if levels < 1:
        raise ValueError("make_points: expected at least one regression range")
    if t % (2 ** (levels - 1)) != 0:
        raise ValueError(f"make_points: expected t divisible by {2 ** (levels - 1)} for {levels} levels, got {t}")
    pts, lvl = [], []
    for level, rng in enumerate(regression_ranges):
        if len(rng) != 2 or not rng[0] < rng[1]:
            raise ValueError(f"make_points: regression range of level {level} must be [lo, hi] with lo < hi, got {rng}")
        stride = 2**level
        n = t // stride
        centre = torch.arange(n, device=device, dtype=torch.float32) * stride
        p = torch.empty(n, 4, device=device)
        p[:, 0] = centre
        p[:, 1] = float(rng[0])
        p[:, 2] = float(rng[1])
        p[:, 3] = float(stride)
        pts.append(p)
        lvl.append(torch.full((n,), level, dtype=torch.int64, device=device))
    return torch.cat(pts), torch.cat(lvl)
