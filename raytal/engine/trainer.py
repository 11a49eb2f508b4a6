"""The training loop: AdamW, warm-up + cosine per step, gradient clipping, EMA — and nothing about methods.

The loop feeds each batch through the model and hands the output to an ``Objective`` (built by
``raytal.recipes.objective`` from the config's recipes), which returns named loss terms with ``"loss"``
the one to minimise; the loop knows no recipe (OpenTAD's train engine, in the same spirit). Ray Train
wraps it (``wrap_model`` = DDP, a rank of its own), never copies it.

Determinism: the batches come from the caller (``raytal.engine.batches``), a pure function of the seed and
the streams; the torch RNG (dropout) is reseeded per epoch and rank from ``train.seed``.

Device and precision: the model and every batch live on ``device``; on a GPU each batch is copied from
pinned host memory without blocking, so the copy overlaps the previous step's work. ``train.precision``
runs the model's forward pass under autocast (``raytal.core.precision``); the objective runs outside it, so
the losses (and a recipe's own forward passes, e.g. NoCo's EMA teacher) are fp32, as is optimizer state.
The loss normalisers (ActionFormer's moving average of positives, ``raytal.losses.normalizer``) are the
loop's state, saved with it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from raytal.config import TrainConfig
from raytal.core.precision import autocast, grad_scaler, set_tf32
from raytal.core.seeds import SeedStream
from raytal.engine.checkpoint import numpy_rng_state, set_numpy_rng_state
from raytal.engine.ema import ModelEMA
from raytal.engine.schedule import warmup_cosine_scheduler
from raytal.losses.normalizer import LossNormalizers
from raytal.model.batch import Batch

# Epoch statistics that measure time, not the model: they differ between two runs of the same config
# (first_batch_s: the wait for a stage's first batch, in its first epoch's statistics).
TIMING_KEYS = ("step_s", "data_wait_s", "first_batch_s")


@dataclass
class StepContext:
    """What an objective may know besides the batch and the model output: where training is, the EMA of
    the model (NoCo's teacher) and the loss normalisers (one per named part of the loss; None: each step
    normalises by its own positives). ``rng`` draws for the step (ACP's frame sampling) are seeded by
    (seed, epoch, step), so a resumed run draws what an uninterrupted one would."""

    epoch: int
    step: int
    seed: int
    ema: nn.Module
    loss_norm: LossNormalizers | None = None

    def generator(self, stream: int) -> torch.Generator:
        entropy = np.random.default_rng([self.seed, self.epoch, self.step, stream]).integers(2**62)
        return torch.Generator().manual_seed(int(entropy))


# objective(model, batch, model output, context) -> named terms, "loss" the one to minimise
Objective = Callable[[nn.Module, Batch, Any, StepContext], dict[str, Tensor]]


class Trainer:
    """One model trained for ``train.epochs`` epochs of ``steps_per_epoch`` steps on whatever batches it is
    given. ``wrap_model`` (e.g. DDP) wraps the model for the forward pass; the optimizer, EMA and
    checkpoints always see the unwrapped model."""

    def __init__(
        self,
        train: TrainConfig,
        model: nn.Module,
        objective: Objective,
        *,
        steps_per_epoch: int,
        ema_momentum: float,
        rank: int = 0,
        device: str | torch.device = "cpu",
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.train = train
        self.rank = rank
        self.device = torch.device(device)
        if self.device.type == "cuda":
            set_tf32(train.tf32)
        self.scaler = grad_scaler(self.device, train.precision)
        self.loss_norm = LossNormalizers(train.init_loss_norm, train.loss_norm_momentum)
        self.objective = objective
        self.model = model.to(self.device)
        self.net = wrap_model(self.model) if wrap_model is not None else self.model
        self.ema = ModelEMA(self.model, ema_momentum, warmup=train.ema_warmup)
        self.optimizer = torch.optim.AdamW(self._param_groups(train.weight_decay), lr=train.lr)
        self.steps_per_epoch = steps_per_epoch
        self.scheduler = warmup_cosine_scheduler(self.optimizer, steps_per_epoch, train.epochs, train.warmup_epochs)
        self.epoch = 0

    def _param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """No weight decay on biases and norm scales (1-D tensors), as ActionFormer does."""
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.dim() > 1 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def train_epoch(self, epoch: int, batches: Iterator[Batch], progress: bool = False) -> dict[str, float]:
        """``steps_per_epoch`` steps on ``batches``; the mean of every scalar term, plus the last lr and the
        seconds per step (``TIMING_KEYS``): all of it, and the part spent waiting for the next batch (reading,
        collating), which shows whether the data keeps up with the model."""
        self.epoch = epoch
        torch.manual_seed(int(np.random.default_rng([self.train.seed, epoch, self.rank, SeedStream.DROPOUT]).integers(2**62)))
        self.net.train()
        sums: dict[str, float] = {}
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch}", disable=not progress, leave=False)
        wait, start = 0.0, time.perf_counter()
        for step in bar:
            t = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t
            if batch is None:
                raise RuntimeError(f"epoch {epoch}: the batch stream ended after {step} of {self.steps_per_epoch} steps")
            if self.device.type == "cuda":
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            else:
                batch = batch.to(self.device)
            ctx = StepContext(epoch, step, self.train.seed, self.ema.module, self.loss_norm)
            # Last step's gradients go before the forward pass, not after it: they would otherwise sit in memory
            # beside this step's activations (117 MB at ActionFormer's size).
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.train.precision):
                out = self.net(batch.feats, batch.mask)
            losses = self.objective(self.net, batch, out, ctx)  # fp32: outside autocast
            if "loss" not in losses:
                raise ValueError(f"the objective must return a dict with 'loss'; got keys {sorted(losses)}")
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}, step {step}: loss is {loss.item()}")
            self.scaler.scale(loss).backward()
            if self.train.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.train.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.model)
            for k, v in losses.items():  # summed where they are (no host sync per term and step)
                if isinstance(v, Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + v.detach().float().reshape(())
                elif isinstance(v, (int, float)):
                    sums[k] = sums.get(k, 0.0) + float(v)
            if bar.disable is False:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        stats = {k: float(v) / self.steps_per_epoch for k, v in sums.items()}
        stats["lr"] = float(self.scheduler.get_last_lr()[0])
        stats["step_s"] = (time.perf_counter() - start) / self.steps_per_epoch
        stats["data_wait_s"] = wait / self.steps_per_epoch
        self.epoch = epoch + 1
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "rng": {"torch": torch.get_rng_state(), "numpy": numpy_rng_state()},
            "loss_norm": self.loss_norm.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The schedule's shape (total/warm-up steps) comes from the current config, its position from the
        # checkpoint, so a finished run extended with more epochs continues on the longer schedule.
        sched = dict(state["scheduler"], lr_lambdas=[None] * len(self.optimizer.param_groups))
        self.scheduler.load_state_dict(sched)
        step = self.scheduler.last_epoch
        for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * fn(step)
        self.epoch = int(state["epoch"])
        self.loss_norm.load_state_dict(state.get("loss_norm", {}))
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        set_numpy_rng_state(state["rng"]["numpy"])


def fit(
    trainer: Trainer,
    batches: Iterator[Batch],
    end_epoch: int,
    *,
    start_epoch: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train epochs ``start_epoch .. end_epoch-1`` on ``batches`` (``steps_per_epoch`` each, in order);
    ``on_epoch_end(epoch, stats)`` runs after each (checkpoint, log)."""
    if not 0 <= start_epoch <= end_epoch:
        raise ValueError(f"expected 0 <= start_epoch <= end_epoch, got {start_epoch}, {end_epoch}")
    history = []
    show = progress and trainer.rank == 0
    bar = tqdm(range(start_epoch, end_epoch), desc="train", unit="epoch", disable=not show)
    for epoch in bar:
        # A per-step bar only on a terminal: in log files it would print a line per update.
        stats = trainer.train_epoch(epoch, batches, progress=show and sys.stderr.isatty())
        stats["epoch"] = epoch
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
        bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}")
        history.append(stats)
    return history
