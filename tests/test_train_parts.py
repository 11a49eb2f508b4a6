"""Schedule, EMA and checkpoint pieces of raytal/engine (no detector needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from raytal.core.errors import CheckpointError
from raytal.engine.checkpoint import load_checkpoint, numpy_rng_state, save_checkpoint, set_numpy_rng_state
from raytal.engine.ema import ModelEMA
from raytal.engine.schedule import WarmupCosine, warmup_cosine_scheduler


# ------------------------------------------------------------------------------------------ schedule


def test_warmup_cosine_values():
    f = WarmupCosine(warmup_steps=2, total_steps=6)
    # ActionFormer's warm-up: step/(warmup - 1) -> 0, 1.0; cosine over the 4 remaining steps:
    # 0.5(1+cos(pi*k/4)), k=0..4: k=1: 0.5(1+0.70711)=0.85355, k=2: 0.5, k=3: 0.5(1-0.70711)=0.14645, k=4: 0
    expected = [0.0, 1.0, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    assert [f(s) for s in range(8)] == pytest.approx(expected, abs=1e-6)
    # a floor of 0.1: the cosine falls to 0.1 instead: k=2 gives 0.1 + 0.9 x 0.5
    assert WarmupCosine(2, 6, floor=0.1)(4) == pytest.approx(0.55)
    assert WarmupCosine(0, 4)(0) == 1.0  # without warm-up the cosine starts at once


def test_scheduler_steps_per_iteration():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = warmup_cosine_scheduler(opt, steps_per_epoch=2, epochs=3, warmup_epochs=1)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(6):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # total 6 steps, warm-up 2: lr = 0.1 × [0, 1], then the cosine from 0.1 down to ActionFormer's floor 1e-8:
    # 1e-8 + (0.1 - 1e-8) x 0.5(1 + cos(pi k/4)), k = 0..4
    cosine = [1e-8 + (0.1 - 1e-8) * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert lrs == pytest.approx([0.0, 0.1] + cosine, rel=1e-9, abs=1e-15)


def test_schedule_rejects_bad_sizes():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(7, 6)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0, 0)


# ----------------------------------------------------------------------------------------------- EMA


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1, bias=False)
        self.register_buffer("count", torch.zeros(1))
        with torch.no_grad():
            self.lin.weight.fill_(1.0)


class _Wrapper(nn.Module):  # stands in for DDP, which keeps the model in .module
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_ema_momentum_and_buffers():
    model = _Tiny()
    ema = ModelEMA(_Wrapper(model), momentum=0.9, warmup=False)
    with torch.no_grad():
        model.lin.weight.fill_(2.0)
        model.count.fill_(5.0)
    ema.update(_Wrapper(model))
    # 0.9 × 1 + 0.1 × 2 = 1.1 ; buffer copied as is
    assert ema.module.lin.weight.item() == pytest.approx(1.1)
    assert ema.module.count.item() == 5.0
    ema.update(model)
    # 0.9 × 1.1 + 0.1 × 2 = 1.19
    assert ema.module.lin.weight.item() == pytest.approx(1.19)
    assert model.lin.weight.item() == 2.0  # the copy is independent of the model
    assert not ema.module.lin.weight.requires_grad


def test_ema_warmup_momentum():
    model = _Tiny()
    ema = ModelEMA(model, momentum=0.999, warmup=True)
    with torch.no_grad():
        model.lin.weight.fill_(2.0)
    ema.update(model)
    # n = 0: m = min(0.999, 1/10) = 0.1 -> 0.1 × 1 + 0.9 × 2 = 1.9
    assert ema.module.lin.weight.item() == pytest.approx(1.9)
    # n = 1: m = 2/11 -> 2/11 × 1.9 + 9/11 × 2 = (3.8 + 18)/11 = 1.981818
    ema.update(model)
    assert ema.module.lin.weight.item() == pytest.approx(21.8 / 11)


def test_ema_state_round_trip():
    model = _Tiny()
    ema = ModelEMA(model, momentum=0.5, warmup=False)
    with torch.no_grad():
        model.lin.weight.fill_(3.0)
    ema.update(model)  # 0.5 × 1 + 0.5 × 3 = 2
    other = ModelEMA(_Tiny(), momentum=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.module.lin.weight.item() == 2.0 and other.updates == 1 and other.momentum == 0.5


def test_ema_rejects_bad_momentum():
    with pytest.raises(ValueError, match="momentum"):
        ModelEMA(_Tiny(), momentum=1.0)


# -------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    state = {"w": torch.arange(3.0), "epoch": 2, "name": "x", "nested": {"l": [1, 2.5, None]}}
    path = save_checkpoint(tmp_path / "c" / "last.pt", state)
    assert not (tmp_path / "c" / "last.pt.tmp").exists()
    back = load_checkpoint(path)
    assert torch.equal(back["w"], torch.tensor([0.0, 1.0, 2.0]))
    assert back["epoch"] == 2 and back["name"] == "x" and back["nested"] == {"l": [1, 2.5, None]}


def test_checkpoint_rejects_non_plain_state(tmp_path):
    with pytest.raises(ValueError, match=r"state\.rng: ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"rng": np.zeros(3)})
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_numpy_rng_state_survives_a_checkpoint(tmp_path):
    np.random.seed(123)
    save_checkpoint(tmp_path / "r.pt", {"numpy": numpy_rng_state()})
    first = np.random.rand(4)
    np.random.seed(0)
    set_numpy_rng_state(load_checkpoint(tmp_path / "r.pt")["numpy"])
    np.testing.assert_array_equal(np.random.rand(4), first)
