"""One training stage (a ``TrainSpec``): the loop both back-ends run.

The in-process back-end calls ``run_training`` with streams it reads itself (``train_local``); the Ray
Train back-end calls it in every worker with the worker's shards of the stage's Ray Data datasets, its rank, a DDP
``wrap_model`` and an ``on_epoch`` that reports checkpoints to Ray. One loop, not two.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tensorboardX import SummaryWriter

from raytal.config import Config
from raytal.core import storage
from raytal.core.progress import progress
from raytal.core.threads import set_torch_threads
from raytal.core.video import Video
from raytal.engine.batches import rank_batches, rank_share, split_batch, steps_per_epoch
from raytal.engine.checkpoint import load_checkpoint, save_checkpoint
from raytal.engine.ema import unwrap
from raytal.engine.trainer import Trainer, fit
from raytal.recipes.apl import acp_pretraining_objective
from raytal.recipes.objective import make_objective
from raytal.recipes.registry import active_recipes, first_opinion
from raytal.selftrain.models import build_detector, detector_state
from raytal.selftrain.spec import TrainSpec
from raytal.selftrain.training_data import local_streams

log = logging.getLogger("raytal.train")
EpochHook = Callable[[int, dict, Trainer], None]


def batch_plan(cfg: Config, spec: TrainSpec) -> tuple[int, int, int]:
    """(labeled, pseudo) videos per global batch and the number of steps per epoch."""
    n_l, n_u = split_batch(cfg.train.batch_size, cfg.train.unlabeled_per_batch, spec.num_labeled, spec.num_pseudo)
    steps = steps_per_epoch(spec.num_labeled, spec.num_pseudo, n_l, n_u, cfg.train.min_batches_per_epoch,
                            cfg.train.steps_per_epoch)
    return n_l, n_u, steps


def end_epoch(cfg: Config, spec: TrainSpec) -> int:
    return cfg.train.epochs if spec.stop_epoch is None else spec.stop_epoch


def _skip(stream: Iterator[Video] | None, count: int) -> Iterator[Video] | None:
    """``stream`` after its first ``count`` videos (a resumed stage replays its segment's stream)."""
    if stream is None or count <= 0:
        return stream
    for _ in itertools.islice(stream, count):
        pass
    return stream


def run_training(
    cfg: Config,
    spec: TrainSpec,
    streams: dict[str, Iterator[Video]],
    *,
    restore: dict | None = None,
    on_epoch: EpochHook | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    wrap_model=None,
) -> Trainer:
    """Train ``spec``'s model on this rank's ``streams`` ({"labeled", "pseudo"}: endless shuffled video
    streams, see ``raytal.selftrain.training_data``) until ``spec.stop_epoch`` or ``train.epochs``.

    ``restore`` is a Trainer state (the last epoch checkpoint) to resume from: the streams, which start
    at the segment's first epoch, are replayed up to it, so a resumed in-process stage trains on what an
    uninterrupted one would.
    """
    set_torch_threads(cfg.train.torch_threads)
    n_l, n_u, steps = batch_plan(cfg, spec)
    model = build_detector(cfg, spec.num_classes, spec.input_dim)
    if spec.init:
        state = load_checkpoint(spec.init)
        model.load_state_dict(state.get("ema") or state["model"])
    if spec.objective == "acp_pretraining":
        objective = acp_pretraining_objective(cfg)
    else:
        objective = make_objective(cfg, delta_targets=spec.delta_targets)
    ema = first_opinion([r.ema_momentum(cfg) for r in active_recipes(cfg)], cfg.train.ema_momentum)
    trainer = Trainer(cfg.train, model, objective, steps_per_epoch=steps, ema_momentum=ema, rank=rank,
                      device=device, wrap_model=wrap_model)
    start = spec.start_epoch
    if restore is not None:
        trainer.load_state_dict(restore)
        start = int(restore["epoch"])
    k_l, k_u, _ = rank_share(n_l, n_u, rank, world_size)
    done = (start - spec.start_epoch) * steps
    labeled = _skip(streams.get("labeled"), done * k_l)
    pseudo = _skip(streams.get("pseudo"), done * k_u)
    batches = rank_batches(
        labeled if labeled is not None else iter(()), pseudo if pseudo is not None else iter(()),
        n_l=n_l, n_u=n_u, rank=rank, world=world_size, seed=cfg.train.seed, start_epoch=start,
        steps_per_epoch=steps, pad_multiple=model.pad_multiple, max_seq_len=cfg.data.max_seq_len,
        trunc_thresh=cfg.data.trunc_thresh,
    )
    timed = FirstBatch(b for _, _, b in batches)

    def hook(epoch: int, metrics: dict) -> None:
        if on_epoch is not None:
            on_epoch(epoch, {**metrics, "first_batch_s": timed.seconds} if epoch == start else metrics, trainer)

    fit(trainer, timed, end_epoch(cfg, spec), start_epoch=start, on_epoch_end=hook, progress=False)
    return trainer


class FirstBatch:
    """Batches, timing the wait for the first one: the start-up of a stage's data path, which the first
    epoch's metrics report as ``first_batch_s``."""

    def __init__(self, batches: Iterator) -> None:
        self.batches, self.seconds = batches, 0.0
        self.started = False

    def __iter__(self) -> "FirstBatch":
        return self

    def __next__(self):
        if self.started:
            return next(self.batches)
        t = time.perf_counter()
        batch = next(self.batches)
        self.started, self.seconds = True, time.perf_counter() - t
        return batch


def epoch_bar(cfg: Config, spec: TrainSpec, start: int):
    """The stage's one progress bar, over its epochs (``show_epoch`` moves it)."""
    return progress(end_epoch(cfg, spec), spec.name, "epoch", initial=start)


def show_epoch(bar, metrics: dict) -> None:
    """The bar at ``metrics["epoch"]`` epochs done, with the epoch's loss."""
    bar.update(int(metrics["epoch"]) - bar.n)
    bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", refresh=False)


def final_state(trainer: Trainer, spec: TrainSpec, metrics: dict | None = None) -> dict:
    """What a stage keeps: plain and EMA weights, the model's shape and the last epoch's metrics."""
    return detector_state(unwrap(trainer.model), trainer.ema.module, spec.num_classes, spec.input_dim,
                          trainer.epoch, metrics)


class EpochScalars:
    """TensorBoard scalars of a stage (``<stage>/tb``), one point per epoch; rank 0 only. Written to a
    local directory and copied next to the stage when it is on object storage (tensorboardX writes files)."""

    def __init__(self, stage_dir: str) -> None:
        self.remote = storage.join(stage_dir, "tb") if storage.is_uri(stage_dir) else None
        self.local = tempfile.mkdtemp(prefix="raytal-tb-") if self.remote else storage.join(stage_dir, "tb")
        # tensorboardX names its file by the second: a stage resumed within the same second would overwrite
        # the killed segment's file. Nanoseconds (19 digits, so names sort in time order) keep one per segment.
        self.writer = SummaryWriter(self.local, filename_suffix=f".{time.time_ns()}")

    def __call__(self, epoch: int, metrics: dict) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"train/{k}", float(v), epoch)
        self.writer.flush()
        self._copy()

    def close(self) -> None:
        """Write out what the writer still holds. Its flush() does not wait for the events queued to its
        writing thread: without this, the last epoch's scalars reach the local file only when the process
        exits, and a stage on object storage never gets them."""
        self.writer.close()
        self._copy()
        if self.remote:  # the local copy of a stage on object storage: a temporary folder, removed
            shutil.rmtree(self.local, ignore_errors=True)

    def _copy(self) -> None:
        if self.remote:
            for f in Path(self.local).iterdir():
                storage.write_bytes(storage.join(self.remote, f.name), f.read_bytes())


def train_local(cfg: Config, spec: TrainSpec) -> str:
    """In-process stage with an epoch checkpoint ``<stage>/last.pt``; resumes from it (also where the
    previous segment of a regeneration schedule stopped). Returns the final checkpoint's path."""
    storage.makedirs(spec.stage_dir)
    last = storage.join(spec.stage_dir, "last.pt")
    restore = load_checkpoint(last) if storage.is_file(last) else None
    scalars = EpochScalars(spec.stage_dir)
    last_metrics: dict = {}

    bar = epoch_bar(cfg, spec, int(restore["epoch"]) if restore else spec.start_epoch)

    def on_epoch(epoch: int, metrics: dict, trainer: Trainer) -> None:
        metrics = {**metrics, "epoch": epoch + 1}  # epochs done, as the Ray back-end reports it
        save_checkpoint(last, trainer.state_dict())
        scalars(epoch, metrics)
        last_metrics.update(metrics)
        show_epoch(bar, metrics)

    try:
        trainer = run_training(cfg, spec, local_streams(cfg, spec), restore=restore, on_epoch=on_epoch)
    finally:
        scalars.close()
        bar.close()
    final = storage.join(spec.stage_dir, "final.pt")
    save_checkpoint(final, final_state(trainer, spec, last_metrics))
    return final
