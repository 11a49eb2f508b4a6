"""Per-iteration learning-rate schedule: linear warm-up, then cosine decay to zero (ActionFormer)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warm-up rises linearly from 1/warmup_steps to 1 so the first step already moves; the cosine then
    falls from 1 at the end of warm-up to 0 at ``total_steps``. A callable object (not a lambda) so
    ``LambdaLR.state_dict`` stores its plain-number attributes and a checkpoint restores it.
    """

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: int
) -> LambdaLR:
    """The schedule over ``epochs`` epochs of ``steps_per_epoch`` steps; call ``.step()`` after every
    optimizer step. Warm-up is capped at the whole run so a short run still decays."""
    if steps_per_epoch <= 0 or epochs <= 0:
        raise ValueError(f"steps_per_epoch and epochs must be > 0, got {steps_per_epoch}, {epochs}")
    total = steps_per_epoch * epochs
    warmup = min(total, steps_per_epoch * max(0, warmup_epochs))
    return LambdaLR(optimizer, WarmupCosine(warmup, total))
