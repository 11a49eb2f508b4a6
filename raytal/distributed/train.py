"""Ray Train: the round's training stage as DDP over ``TorchTrainer`` workers.

It wraps ``raytal.selftrain.train_stage.run_training`` — the same loop the in-process back-end runs —
adding only what distribution needs: ``prepare_model`` (DDP; gloo on CPU, nccl on GPU), the rank's slice
of every global batch, a checkpoint reported to Ray every epoch, and restoring from Ray's latest
checkpoint after a worker failure (``FailureConfig``) or when the whole run is started again with the same
name and storage path (Ray Train V2 resumes a run by its (storage_path, name)).

Data: every worker reads the run's labeled shards and the round's pseudo-label Parquet itself and takes
its slice of each global batch. We chose this over ``iter_torch_batches`` because the detector needs whole
variable-length videos with their instance lists (padding/cropping happens per batch), the training set of
a round is small next to the unlabeled pool, and it keeps the global batches of an N-worker run identical to
a 1-worker run, which the DDP equivalence test relies on.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

from raytal.config import Config
from raytal.distributed.process_group import NodeBoundTorchConfig
from raytal.selftrain.train_stage import epoch_scalars, final_state, run_training
from raytal.train.checkpoint import load_checkpoint, save_checkpoint

# Test hook: set (on the driver) to "<epoch>:<marker file>" to make rank 0 raise once at that epoch (fault tests).
FAIL_ONCE_ENV = "RAYTAL_FAIL_ONCE_AT_EPOCH"


def _maybe_fail(epoch: int, spec: str | None) -> None:
    """``spec`` is the driver's FAIL_ONCE_ENV, shipped in the train loop config: the workers of an
    already-running Ray do not see variables the driver sets after ``ray.init``."""
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if epoch == int(at) and not Path(marker).exists():
        Path(marker).write_text("failed once")
        raise RuntimeError(f"injected failure at epoch {epoch} ({FAIL_ONCE_ENV})")


def _quiet_worker_logs() -> None:
    """Ray Train logs every report and checkpoint at INFO on the driver's console; keep warnings only."""
    try:
        from ray.train.v2._internal.execution import context, storage
    except ImportError:  # another Ray layout: its default logging is merely verbose
        return
    for module in (context, storage):
        module.logger.setLevel(logging.WARNING)


def _mean_over_ranks(metrics: dict, world: int) -> dict:
    """Every rank averages the losses of its own share of each global batch; the mean over ranks is the
    epoch's figure for the global batches (each rank holds the same number of videos per batch). A key
    some rank never produced (no pseudo video in its shares) counts as 0 there, as it does in its mean."""
    if world == 1:
        return metrics
    import torch.distributed as dist

    keys: list = [None] * world
    dist.all_gather_object(keys, sorted(k for k, v in metrics.items() if isinstance(v, float)))
    names = sorted(set().union(*keys))
    values = torch.tensor([metrics.get(k, 0.0) for k in names], dtype=torch.float64)
    dist.all_reduce(values)
    return {**metrics, **{k: float(v) / world for k, v in zip(names, values.tolist())}}


def _worker_loop(config: dict) -> None:
    cfg: Config = config["cfg"]
    _quiet_worker_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, cfg.train.torch_threads or 1))
    device = ray.train.torch.get_device()
    restore = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            restore = load_checkpoint(Path(d) / "state.pt")

    scalars = epoch_scalars(Path(config["stage_dir"])) if rank == 0 else None

    def on_epoch(epoch: int, metrics: dict, trainer) -> None:
        if rank == 0:
            _maybe_fail(epoch, config["fail_once"])
        metrics = {**_mean_over_ranks(metrics, world), "epoch": epoch + 1}
        if rank == 0:
            scalars(epoch, metrics)
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(Path(d) / "state.pt", trainer.state_dict())
                save_checkpoint(Path(d) / "final.pt", final_state(trainer, config["num_classes"], config["input_dim"], metrics))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)

    run_training(
        cfg, Path(config["split_dir"]), Path(config["pseudo_dir"]) if config["pseudo_dir"] else None,
        config["init"], config["num_classes"], config["input_dim"], restore=restore,
        prev_pseudo_dir=Path(config["prev_pseudo_dir"]) if config["prev_pseudo_dir"] else None,
        stop_epoch=config["stop_epoch"], on_epoch=on_epoch,
        rank=rank, world_size=world, device=device, wrap_model=ray.train.torch.prepare_model, progress=False,
    )


def train_ray(
    cfg: Config, stage_dir: Path, split_dir: Path, pseudo_dir: Path | None, init: str | None,
    num_classes: int, input_dim: int, *, prev_pseudo_dir: Path | None = None, stop_epoch: int | None = None,
) -> str:
    """Train one stage with ``cfg.ray.num_workers`` workers; returns the path of the final checkpoint.

    Segments of a GauFuse regeneration schedule (``stop_epoch``) share ``stage_dir``: the next segment is
    the same Ray Train run started again, so it restores the checkpoint where the previous one stopped.
    """
    stage_dir = Path(stage_dir).resolve()
    stage_dir.mkdir(parents=True, exist_ok=True)
    rc = cfg.ray
    resources = {"CPU": rc.cpus_per_worker}
    if rc.use_gpu:
        resources["GPU"] = rc.gpus_per_worker
    trainer = ray.train.torch.TorchTrainer(
        _worker_loop,
        train_loop_config=dict(
            cfg=cfg, stage_dir=str(stage_dir), split_dir=str(Path(split_dir).resolve()),
            pseudo_dir=str(Path(pseudo_dir).resolve()) if pseudo_dir else None, init=init,
            num_classes=num_classes, input_dim=input_dim, fail_once=os.environ.get(FAIL_ONCE_ENV),
            prev_pseudo_dir=str(Path(prev_pseudo_dir).resolve()) if prev_pseudo_dir else None, stop_epoch=stop_epoch,
        ),
        torch_config=NodeBoundTorchConfig(),  # the process group listens on the node's Ray address only
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=rc.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name="ray_train", storage_path=str(stage_dir),
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{stage_dir}: Ray Train finished without a checkpoint ({result.error})")
    final = stage_dir / "final.pt"
    with result.checkpoint.as_directory() as d:
        save_checkpoint(final, load_checkpoint(Path(d) / "final.pt"))
    return str(final)
