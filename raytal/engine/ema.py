"""Exponential moving average of a model's weights (ActionFormer evaluates it; NoCo's teacher is one)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under a DDP-style wrapper (which keeps it in ``.module``)."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


class ModelEMA:
    """A frozen copy of a model whose floating-point parameters track ``ema = m·ema + (1−m)·param``.

    Buffers (e.g. norm statistics, integer counters) are copied, not averaged: they are state, not weights.
    With ``warmup`` the momentum is ``min(m, (1+n)/(10+n))`` after ``n`` updates, so a short run's
    average is not dominated by the random initial weights (at m = 0.999 it would take ~1000 steps).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = float(momentum)
        self.warmup = warmup
        self.updates = 0

    def current_momentum(self) -> float:
        if not self.warmup:
            return self.momentum
        return min(self.momentum, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = self.current_momentum()
        src = unwrap(model)
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in src.parameters()]
        if len(ema_params) != len(params):
            raise ValueError(f"EMA holds {len(ema_params)} parameters, the model has {len(params)}")
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - m)
        for e, b in zip(self.module.buffers(), src.buffers()):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.momentum = float(state["momentum"])
