"""The plain, in-process training loop. Ray Train wraps it (rank/world_size/wrap_model), never copies it.

Determinism: an epoch's GLOBAL batch list (which videos, and each video's random crop) is a pure function
of (cfg.train.seed, epoch), identical for any world size; rank r takes positions r, r+W, r+2W, ... of
every global batch. Each video is cropped with its own RNG (seeded by seed, epoch, batch, position) and
the per-video batches are concatenated, so how a global batch is split over ranks never changes a crop.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from raytal.config import Config
from raytal.core.video import Video
from raytal.model.batch import Batch, collate
from raytal.train.checkpoint import numpy_rng_state, set_numpy_rng_state
from raytal.train.ema import ModelEMA, unwrap
from raytal.train.objective import LossFn, make_loss_fn
from raytal.train.schedule import warmup_cosine_scheduler

# Independent RNG streams derived from the seed (SeedSequence entropy lists).
_LABELED_STREAM, _PSEUDO_STREAM, _CROP_STREAM, _TORCH_STREAM = 11, 12, 13, 14


def split_batch(batch_size: int, unlabeled_per_batch: float, n_labeled: int, n_pseudo: int) -> tuple[int, int]:
    """(labeled, pseudo) videos per global batch: ``round(B × unlabeled_per_batch)`` pseudo videos when
    both sets are non-empty, the whole batch from the one set otherwise."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if not 0.0 <= unlabeled_per_batch <= 1.0:
        raise ValueError(f"unlabeled_per_batch must be in [0, 1], got {unlabeled_per_batch}")
    if n_labeled == 0 and n_pseudo == 0:
        raise ValueError("no training videos: both the labeled and the pseudo-labeled sets are empty")
    if n_pseudo == 0:
        return batch_size, 0
    if n_labeled == 0:
        return 0, batch_size
    n_u = min(batch_size, int(round(batch_size * unlabeled_per_batch)))
    return batch_size - n_u, n_u


def _stream(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices into ``n`` items: back-to-back random permutations, so every item appears
    once before any repeats."""
    reps = math.ceil(count / n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]


def global_batches(
    n_labeled: int, n_pseudo: int, batch_size: int, unlabeled_per_batch: float, seed: int, epoch: int,
    min_batches: int = 0,
) -> np.ndarray:
    """The epoch's global batches as an int array [num_batches, batch_size, 2] of (source, index),
    source 0 = labeled, 1 = pseudo; labeled entries first in each batch.

    An epoch is long enough for the larger stream to be seen once (the smaller one repeats, freshly
    permuted); the last batch wraps around rather than being short, so every batch is full and any
    world size dividing the batch size gets an equal share.
    """
    n_l, n_u = split_batch(batch_size, unlabeled_per_batch, n_labeled, n_pseudo)
    num = max(math.ceil(n_labeled / n_l) if n_l else 0, math.ceil(n_pseudo / n_u) if n_u else 0, min_batches)
    out = np.zeros((num, batch_size, 2), dtype=np.int64)
    if n_l:
        rng = np.random.default_rng([seed, epoch, _LABELED_STREAM])
        out[:, :n_l, 1] = _stream(n_labeled, num * n_l, rng).reshape(num, n_l)
    if n_u:
        rng = np.random.default_rng([seed, epoch, _PSEUDO_STREAM])
        out[:, n_l:, 0] = 1
        out[:, n_l:, 1] = _stream(n_pseudo, num * n_u, rng).reshape(num, n_u)
    return out


def _pad_time(x: Tensor, dim: int, length: int, value: float) -> Tensor:
    extra = length - x.shape[dim]
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad, value=value)


def _dense_or_nan(parts: list[Tensor | None], length: int) -> Tensor | None:
    """Stack optional [1, T_i, C] dense fields; videos without one get NaN rows (the Batch convention)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    c = present[0].shape[-1]
    filled = [
        _pad_time(p, 1, length, 0.0) if p is not None else torch.full((1, length, c), float("nan"))
        for p in parts
    ]
    return torch.cat(filled, dim=0)


def concat_batches(batches: list[Batch]) -> Batch:
    """One Batch from several (each typically one video), padding the time axis to the longest."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    length = max(b.feats.shape[2] for b in batches)
    return Batch(
        feats=torch.cat([_pad_time(b.feats, 2, length, 0.0) for b in batches], dim=0),
        mask=torch.cat([_pad_time(b.mask, 1, length, False) for b in batches], dim=0),
        segments=[s for b in batches for s in b.segments],
        labels=[s for b in batches for s in b.labels],
        weights=[s for b in batches for s in b.weights],
        labeled=torch.cat([b.labeled for b in batches], dim=0),
        targets=_dense_or_nan([b.targets for b in batches], length),
        teacher_scores=_dense_or_nan([b.teacher_scores for b in batches], length),
        meta=[m for b in batches for m in b.meta],
    )


class Trainer:
    """AdamW + warm-up/cosine (per step) + gradient clipping + EMA, over deterministic global batches.

    ``pseudo`` videos (``labeled=False`` records with pseudo instances) are mixed into every batch per
    ``cfg.train.unlabeled_per_batch``. ``wrap_model`` (e.g. DDP) wraps the model for the forward pass;
    the optimizer, EMA and checkpoints always see the unwrapped model.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        labeled: list[Video],
        pseudo: list[Video] | None = None,
        *,
        loss_fn: LossFn | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        t = cfg.train
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if t.batch_size % world_size:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) must be a multiple of the number of workers ({world_size}): "
                "it is the global batch, split evenly over workers"
            )
        if t.torch_threads > 0:
            torch.set_num_threads(t.torch_threads)
        self.cfg = cfg
        self.labeled = list(labeled)
        self.pseudo = list(pseudo or [])
        for v in self.pseudo:
            if v.labeled:
                raise ValueError(f"pseudo video '{v.video_id}': expected labeled=False for a pseudo-labeled video")
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        # Mixed precision on GPU only (CPU autocast to bfloat16 is slower for these small convolutions).
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn: LossFn = loss_fn or make_loss_fn(cfg)
        self.model = model.to(self.device)
        self.net = wrap_model(self.model) if wrap_model is not None else self.model
        # NoCo's teacher is this EMA, at NoCo's momentum.
        self.ema = ModelEMA(self.model, cfg.recipe.noco.ema_momentum if cfg.recipe.noco.enabled else t.ema_momentum)
        self.optimizer = torch.optim.AdamW(self._param_groups(t.weight_decay), lr=t.lr)
        self.steps_per_epoch = len(self.epoch_plan(0))
        self.scheduler = warmup_cosine_scheduler(self.optimizer, self.steps_per_epoch, t.epochs, t.warmup_epochs)
        self.epoch = 0

    def _param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """No weight decay on biases and norm scales (1-D tensors), as ActionFormer does."""
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.dim() > 1 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """The global batches of ``epoch`` ([num_batches, batch_size, 2] of (source, index))."""
        t = self.cfg.train
        return global_batches(
            len(self.labeled), len(self.pseudo), t.batch_size, t.unlabeled_per_batch, t.seed, epoch,
            t.min_batches_per_epoch,
        )

    def make_batch(self, epoch: int, index: int, entries: np.ndarray) -> Batch:
        """This rank's share of global batch ``index``: positions rank, rank+W, ... each cropped with an
        RNG of its own position, so the crop does not depend on the world size."""
        pools = (self.labeled, self.pseudo)
        d = self.cfg.data
        pad = unwrap(self.model).pad_multiple
        parts = []
        for pos in range(self.rank, len(entries), self.world_size):
            source, i = entries[pos]
            rng = np.random.default_rng([self.cfg.train.seed, epoch, index, pos, _CROP_STREAM])
            video = pools[source][i]
            parts.append(collate([video], pad_multiple=pad, max_seq_len=d.max_seq_len, rng=rng, trunc_thresh=d.trunc_thresh))
        return concat_batches(parts)

    def train_epoch(self, epoch: int, progress: bool = False) -> dict[str, float]:
        """One epoch; returns the mean of every scalar the loss function reports, plus the last lr."""
        self.epoch = epoch
        torch.manual_seed(int(np.random.default_rng([self.cfg.train.seed, epoch, self.rank, _TORCH_STREAM]).integers(2**62)))
        self.net.train()
        plan = self.epoch_plan(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(range(len(plan)), desc=f"epoch {epoch}", disable=not progress or self.rank != 0, leave=False)
        for index in bar:
            batch = self.make_batch(epoch, index, plan[index]).to(self.device)
            with torch.autocast(device_type=self.device.type, enabled=self.amp):
                out = self.net(batch.feats, batch.mask)
                losses = self.loss_fn(self.net, batch, out, self)
            if "loss" not in losses:
                raise ValueError(f"loss_fn must return a dict with 'loss'; got keys {sorted(losses)}")
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}, batch {index}: loss is {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.train.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.model)
            for k, v in losses.items():
                if isinstance(v, Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                elif isinstance(v, (int, float)):
                    sums[k] = sums.get(k, 0.0) + float(v)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        stats = {k: v / len(plan) for k, v in sums.items()}
        stats["lr"] = float(self.scheduler.get_last_lr()[0])
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
        torch.set_rng_state(state["rng"]["torch"])
        set_numpy_rng_state(state["rng"]["numpy"])


def fit(
    trainer: Trainer,
    epochs: int,
    *,
    start_epoch: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train epochs ``start_epoch .. epochs-1`` (``epochs`` is the end, so a resumed run passes
    ``start_epoch=trainer.epoch``); ``on_epoch_end(epoch, stats)`` runs after each (checkpoint, log)."""
    if not 0 <= start_epoch <= epochs:
        raise ValueError(f"expected 0 <= start_epoch <= epochs, got start_epoch={start_epoch}, epochs={epochs}")
    history = []
    show = progress and trainer.rank == 0
    bar = tqdm(range(start_epoch, epochs), desc="train", unit="epoch", disable=not show)
    for epoch in bar:
        # A per-batch bar only on a terminal: in log files it would print a line per update.
        stats = trainer.train_epoch(epoch, progress=show and sys.stderr.isatty())
        stats["epoch"] = epoch
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
        bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}")
        history.append(stats)
    return history
