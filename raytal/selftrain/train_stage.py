"""One training stage (teacher or student) of a round: the loop both back-ends run.

The in-process back-end calls ``run_training`` directly; the Ray Train back-end calls it inside every
worker with ``rank``/``world_size``, a DDP ``wrap_model`` and a ``on_epoch`` that reports checkpoints to
Ray. One loop, not two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from tensorboardX import SummaryWriter

from raytal.config import Config
from raytal.selftrain.common import build_detector, round_training_videos
from raytal.train.objective import make_loss_fn
from raytal.train.checkpoint import load_checkpoint, save_checkpoint
from raytal.train.trainer import Trainer, fit

EpochHook = Callable[[int, dict, Trainer], None]


def run_training(
    cfg: Config,
    split_dir: Path,
    pseudo_dir: Path | None,
    init_checkpoint: str | None,
    num_classes: int,
    input_dim: int,
    *,
    restore: dict | None = None,
    prev_pseudo_dir: Path | None = None,
    stop_epoch: int | None = None,
    on_epoch: EpochHook | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    wrap_model=None,
    progress: bool = True,
) -> Trainer:
    """Train a detector for ``cfg.train.epochs`` on the round's labeled (+ pseudo-labeled) videos.

    ``init_checkpoint`` starts the student from the teacher (``train.student_init: teacher``);
    ``restore`` is a Trainer state (from the last epoch checkpoint) to resume from. A GauFuse regeneration
    schedule trains a stage in segments: ``stop_epoch`` ends this one early (the learning-rate schedule
    still spans ``cfg.train.epochs``) and ``prev_pseudo_dir`` turns the dense targets into Δ labels.
    """
    labeled, pseudo = round_training_videos(
        Path(split_dir), Path(pseudo_dir) if pseudo_dir else None, Path(prev_pseudo_dir) if prev_pseudo_dir else None
    )
    model = build_detector(cfg, num_classes, input_dim)
    if init_checkpoint:
        state = load_checkpoint(init_checkpoint)
        model.load_state_dict(state.get("ema") or state["model"])
    trainer = Trainer(
        cfg, model, labeled, pseudo or None, loss_fn=make_loss_fn(cfg, delta_targets=prev_pseudo_dir is not None), rank=rank, world_size=world_size,
        device=device, wrap_model=wrap_model,
    )
    start = 0
    if restore is not None:
        trainer.load_state_dict(restore)
        start = int(restore["epoch"])
    hook = (lambda epoch, metrics: on_epoch(epoch, metrics, trainer)) if on_epoch else None
    end = cfg.train.epochs if stop_epoch is None else stop_epoch
    fit(trainer, end, start_epoch=start, on_epoch_end=hook, progress=progress and rank == 0)
    return trainer


def final_state(trainer: Trainer, num_classes: int, input_dim: int, metrics: dict | None = None) -> dict:
    """What a round keeps of a finished stage: plain and EMA weights, the shapes to rebuild the model and
    the last epoch's training metrics (which loss terms the recipe trained with, and their values)."""
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    return {
        "model": model.state_dict(),
        "ema": trainer.ema.module.state_dict() if trainer.ema is not None else None,
        "num_classes": num_classes,
        "input_dim": input_dim,
        "epoch": trainer.epoch,
        "metrics": {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
    }


def epoch_scalars(stage_dir: Path) -> Callable[[int, dict], None]:
    """TensorBoard scalars of a stage (``<stage>/tb``), one point per epoch; rank 0 only."""
    writer = SummaryWriter(str(Path(stage_dir) / "tb"))

    def log(epoch: int, metrics: dict) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(f"train/{k}", float(v), epoch)
        writer.flush()

    return log


def train_local(
    cfg: Config, stage_dir: Path, split_dir: Path, pseudo_dir: Path | None, init_checkpoint: str | None,
    num_classes: int, input_dim: int, *, prev_pseudo_dir: Path | None = None, stop_epoch: int | None = None,
) -> str:
    """In-process stage with an epoch checkpoint in ``stage_dir/last.pt``; resumes from it (also where
    the previous segment of a regeneration schedule stopped)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    last = stage_dir / "last.pt"
    restore = load_checkpoint(last) if last.exists() else None

    scalars = epoch_scalars(stage_dir)
    last_metrics: dict = {}

    def on_epoch(epoch: int, metrics: dict, trainer: Trainer) -> None:
        save_checkpoint(last, trainer.state_dict())
        scalars(epoch, metrics)
        last_metrics.update(metrics)

    trainer = run_training(
        cfg, split_dir, pseudo_dir, init_checkpoint, num_classes, input_dim, restore=restore,
        prev_pseudo_dir=prev_pseudo_dir, stop_epoch=stop_epoch, on_epoch=on_epoch,
    )
    final = stage_dir / "final.pt"
    save_checkpoint(final, final_state(trainer, num_classes, input_dim, last_metrics))
    return str(final)
