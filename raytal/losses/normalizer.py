"""ActionFormer's loss normaliser: a moving average of the number of positive points per step.

Dividing each step's loss by its own positive count makes a batch with one short action weigh as much as
one with dozens; ActionFormer divides by an exponential moving average of that count instead, which is
steadier with the small batches (2 videos on THUMOS14) it trains with.
"""

from __future__ import annotations

import torch


class LossNormalizer:
    """``value ← m·value + (1 − m)·max(num_pos, 1)`` at every ``update``, starting from ``init``.

    The value stays a tensor on the device of the counts (no host sync per step); ``state_dict`` reads it.
    """

    def __init__(self, init: float, momentum: float) -> None:
        if not init > 0:
            raise ValueError(f"LossNormalizer: expected init > 0, got {init}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LossNormalizer: expected momentum in [0, 1), got {momentum}")
        self.value: torch.Tensor | float = float(init)
        self.momentum = float(momentum)

    def update(self, num_pos: torch.Tensor) -> torch.Tensor:
        """Fold this step's positive count in; returns the new normaliser (a 0-d tensor, no gradient)."""
        count = num_pos.detach().to(torch.float32).clamp(min=1.0)
        self.value = self.momentum * self.value + (1.0 - self.momentum) * count
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value), "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, float]) -> None:
        # float32 as it was computed (a Python float would round the next update differently)
        self.value = torch.tensor(float(state["value"]), dtype=torch.float32)
        self.momentum = float(state["momentum"])


class LossNormalizers:
    """One ``LossNormalizer`` per named part of a loss (labeled / pseudo-labeled videos), made on first use."""

    def __init__(self, init: float, momentum: float) -> None:
        self.init, self.momentum = init, momentum
        self.parts: dict[str, LossNormalizer] = {}

    def __call__(self, name: str) -> LossNormalizer:
        if name not in self.parts:
            self.parts[name] = LossNormalizer(self.init, self.momentum)
        return self.parts[name]

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {name: n.state_dict() for name, n in self.parts.items()}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        for name, part in state.items():
            self(name).load_state_dict(part)
