"""Per-iteration learning-rate schedule: linear warm-up, then cosine decay (ActionFormer's
``LinearWarmupCosineAnnealingLR``, in its closed form)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

ETA_MIN = 1e-8  # ActionFormer's floor of the cosine, in absolute learning rate


class WarmupCosine:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warm-up rises linearly from 0 at step 0 to 1 at step ``warmup_steps − 1`` (ActionFormer starts from a
    learning rate of 0); the cosine then falls from 1 at ``warmup_steps`` to ``floor`` at ``total_steps``.
    Without warm-up the cosine starts at step 0. A callable object (not a lambda) so
    ``LambdaLR.state_dict`` stores its plain-number attributes and a checkpoint restores it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, floor: float = 0.0) -> None:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"floor must be in [0, 1), got {floor}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.floor = float(floor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(self.warmup_steps - 1, 1)
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: int
) -> LambdaLR:
    """The schedule over ``epochs`` epochs of ``steps_per_epoch`` steps, down to ActionFormer's 1e-8; call
    ``.step()`` after every optimizer step. Warm-up is capped at the whole run so a short run still decays."""
    if steps_per_epoch <= 0 or epochs <= 0:
        raise ValueError(f"steps_per_epoch and epochs must be > 0, got {steps_per_epoch}, {epochs}")
    total = steps_per_epoch * epochs
    warmup = min(total, steps_per_epoch * max(0, warmup_epochs))
    base = optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, WarmupCosine(warmup, total, min(ETA_MIN / base, 0.5) if base > 0 else 0.0))
