"""Ray Train: a ``TrainSpec`` as DDP over ``TorchTrainer`` workers, fed by Ray Data.

It wraps ``raytal.selftrain.train_stage.run_training`` — the same loop the in-process back-end runs —
adding only what distribution needs: ``prepare_model`` (DDP; gloo on CPU, nccl on GPU), a checkpoint
reported to Ray every epoch, restoring from Ray's latest checkpoint after a worker failure
(``FailureConfig``) or when the whole run is started again with the same name and storage path (Ray Train
V2 resumes a run by its (storage_path, name)), and the data.

Data (Ray Train's ingest: ``TorchTrainer(datasets=...)`` + ``ray.train.get_dataset_shard``): the driver
builds one Ray Data dataset per kind ("labeled", "pseudo") whose items are the stage's units — shard
files, each joined with its pseudo labels — in seeded passes (``training_data.finite_passes``); read tasks
turn each unit into training rows (``raytal.data.video_rows``), which reach the workers on any node
through the object store, each worker receiving a disjoint split. A worker applies the stage's shuffle
buffer (seeded by its rank) to its rows and takes its share of every global batch (``raytal.engine.batches``), so memory per
worker is the buffer plus Ray Data's prefetch, whatever the size of the pool. The order of the dataset is
preserved, so a 1-worker run trains on the very sequence the in-process back-end reads; with W workers
the split assigns blocks as workers ask for them, so the batches differ from a 1-worker run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import ray.train
import ray.train.torch
import torch
from ray.data import ExecutionOptions
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

from raytal.config import Config, ConfigError
from raytal.core import storage
from raytal.core.threads import set_torch_threads
from raytal.core.video import Video
from raytal.data.index import Source
from raytal.data.video_rows import rows_to_training_videos, videos_to_rows
from raytal.distributed.process_group import NodeBoundTorchConfig
from raytal.engine.batches import rank_share
from raytal.engine.checkpoint import load_checkpoint, save_checkpoint
from raytal.selftrain.spec import PseudoSource, TrainSpec
from raytal.selftrain.train_stage import EpochScalars, batch_plan, end_epoch, final_state, run_training
from raytal.selftrain.training_data import finite_passes, read_unit, shuffled_rows, stage_units, stream_seed

# Test hook: set (on the driver) to "<epoch>:<marker file>" to make rank 0 raise once at that epoch (fault tests).
FAIL_ONCE_ENV = "RAYTAL_FAIL_ONCE_AT_EPOCH"
# Test hook: set (on the driver) to a directory to have every rank record in <dir>/rank_<r>.jsonl the videos it
# reads from its split and those its batches take (a resumed rank's replay included), in order, and a digest of
# its weights after each epoch (DDP tests).
TRACE_ENV = "RAYTAL_TRACE_RANKS"
ROWS_PER_BLOCK = 8  # training videos per Ray Data block out of a read task
READ_CPUS = 0.25  # read tasks are light (Parquet decode); fractional so they fit beside the workers


def _maybe_fail(epoch: int, spec: str | None) -> None:
    """``spec`` is the driver's FAIL_ONCE_ENV, shipped in the train loop config: the workers of an
    already-running Ray do not see variables the driver sets after ``ray.init``."""
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if epoch == int(at) and not Path(marker).exists():
        Path(marker).write_text("failed once")
        raise RuntimeError(f"injected failure at epoch {epoch} ({FAIL_ONCE_ENV})")


class _RankTrace:
    """What one rank read, trained on and ended each epoch with (``TRACE_ENV``): JSON lines."""

    def __init__(self, directory: str, rank: int) -> None:
        self.path = Path(directory) / f"rank_{rank}.jsonl"

    def _write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def videos(self, event: str, name: str, videos: Iterator[Video]) -> Iterator[Video]:
        for v in videos:
            self._write({event: name, "video": v.video_id})
            yield v

    def weights(self, epoch: int, model: torch.nn.Module) -> None:
        digest = hashlib.sha256()
        for t in model.state_dict().values():
            digest.update(t.detach().cpu().numpy().tobytes())
        self._write({"epoch": epoch + 1, "weights": digest.hexdigest()})


def _quiet_worker_logs() -> None:
    """Ray Train logs every report and checkpoint at INFO on the driver's console; keep warnings only."""
    try:
        from ray.train.v2._internal.execution import context, storage as ray_storage
    except ImportError:  # another Ray layout: its default logging is merely verbose
        return
    for module in (context, ray_storage):
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


# ------------------------------------------------------------------------------------------ data


def _unit_json(unit) -> str:
    if isinstance(unit, PseudoSource):
        return json.dumps({"part": unit.part, "source": unit.source.to_json(), "labels": unit.labels,
                           "previous": unit.previous})
    part, src = unit
    return json.dumps({"part": part, "source": src.to_json()})


def _unit_of(text: str):
    d = json.loads(text)
    src = Source.from_json(d["source"])
    return PseudoSource(d["part"], src, d["labels"], d["previous"]) if "labels" in d else (d["part"], src)


def _unit_rows(batch: pa.Table, *, setting: str, delta_targets: bool):
    """Read task: units -> training rows (``raytal.data.video_rows``), a few videos per block."""
    for text in batch.column("unit").to_pylist():
        chunk = []
        for video in read_unit(_unit_of(text), setting, delta_targets):
            chunk.append(video)
            if len(chunk) == ROWS_PER_BLOCK:
                yield videos_to_rows(chunk)
                chunk = []
        if chunk:
            yield videos_to_rows(chunk)


def stage_datasets(cfg: Config, spec: TrainSpec) -> dict:
    """The stage's Ray Data datasets by kind: enough seeded passes over its units for the whole stage."""
    import ray.data

    n_l, n_u, steps = batch_plan(cfg, spec)
    per_step = {"labeled": n_l, "pseudo": n_u}
    out = {}
    for name, (units, per_pass, kind) in stage_units(spec).items():
        if not per_step[name]:
            continue
        needed = (end_epoch(cfg, spec) - spec.start_epoch) * steps * per_step[name]
        passes = finite_passes(units, per_pass, needed, cfg.train.shuffle_buffer, stream_seed(cfg, spec, kind))
        items = [{"unit": _unit_json(u)} for _, u in passes]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out[name] = ds.map_batches(_unit_rows, fn_kwargs={"setting": spec.setting, "delta_targets": spec.delta_targets},
                                   batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS)
    return out


def _worker_streams(cfg: Config, spec: TrainSpec, names: list[str], rank: int, trace: _RankTrace | None) -> dict:
    """This worker's split of each dataset as an endless-enough stream of videos through the shuffle buffer."""
    kinds = {name: kind for name, (_, _, kind) in stage_units(spec).items()}
    streams = {}
    for name in names:
        shard = ray.train.get_dataset_shard(name)
        videos = (v for batch in shard.iter_batches(batch_size=ROWS_PER_BLOCK, batch_format="pyarrow", prefetch_batches=2)
                  for v in rows_to_training_videos(batch))
        if trace is not None:
            videos = trace.videos("read", name, videos)
        streams[name] = shuffled_rows(videos, cfg, spec, kinds[name], rank)
        if trace is not None:
            streams[name] = trace.videos("trained", name, streams[name])
    return streams


# ---------------------------------------------------------------------------------------- workers


def _worker_loop(config: dict) -> None:
    cfg: Config = config["cfg"]
    spec: TrainSpec = config["spec"]
    _quiet_worker_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    set_torch_threads(cfg.train.torch_threads, default=1)
    restore = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            restore = load_checkpoint(Path(d) / "state.pt")
    scalars = EpochScalars(spec.stage_dir) if rank == 0 else None
    trace = _RankTrace(config["trace"], rank) if config["trace"] else None

    def on_epoch(epoch: int, metrics: dict, trainer) -> None:
        if trace is not None:
            trace.weights(epoch, trainer.model)
        if rank == 0:
            _maybe_fail(epoch, config["fail_once"])
        metrics = {**_mean_over_ranks(metrics, world), "epoch": epoch + 1}
        if rank == 0:
            scalars(epoch, metrics)
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(Path(d) / "state.pt", trainer.state_dict())
                save_checkpoint(Path(d) / "final.pt", final_state(trainer, spec, metrics))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)

    try:
        run_training(cfg, spec, _worker_streams(cfg, spec, config["datasets"], rank, trace), restore=restore, on_epoch=on_epoch,
                     rank=rank, world_size=world, device=ray.train.torch.get_device(),
                     wrap_model=ray.train.torch.prepare_model, progress=False)
    finally:
        if scalars is not None:
            scalars.close()


def _check_shares(cfg: Config, spec: TrainSpec, world: int) -> None:
    """Every worker must take as many videos of each kind per step as the others: they read disjoint
    splits of each dataset in lockstep, and an unequal share would leave one waiting for data."""
    n_l, n_u, _ = batch_plan(cfg, spec)
    shares = {rank_share(n_l, n_u, r, world)[:2] for r in range(world)}
    if len(shares) > 1:
        raise ConfigError(
            f"ray.num_workers={world}: each global batch of train.batch_size={cfg.train.batch_size} holds {n_l} "
            f"labeled and {n_u} pseudo-labeled videos; both must be multiples of the number of workers "
            "(change train.batch_size or train.unlabeled_per_batch)")


def train_ray(cfg: Config, spec: TrainSpec) -> str:
    """Train one stage with ``cfg.ray.num_workers`` workers; returns the path of the final checkpoint.

    Segments of a GauFuse regeneration schedule share the stage directory: the next segment is the same
    Ray Train run started again, so it restores the checkpoint where the previous one stopped.
    """
    rc = cfg.ray
    _check_shares(cfg, spec, rc.num_workers)
    stage_dir = storage.resolve(spec.stage_dir)
    storage.makedirs(stage_dir)
    resources = {"CPU": rc.cpus_per_worker}
    if rc.use_gpu:
        resources["GPU"] = rc.gpus_per_worker
    datasets = stage_datasets(cfg, spec)
    trainer = ray.train.torch.TorchTrainer(
        _worker_loop,
        train_loop_config=dict(cfg=cfg, spec=spec, datasets=sorted(datasets), fail_once=os.environ.get(FAIL_ONCE_ENV),
                               trace=os.environ.get(TRACE_ENV)),
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=rc.use_gpu, resources_per_worker=resources),
        torch_config=NodeBoundTorchConfig(),  # the process group listens on the node's Ray address only
        datasets=datasets,
        dataset_config=DataConfig(execution_options=ExecutionOptions(preserve_order=True)),
        run_config=RunConfig(
            name="ray_train", storage_path=stage_dir,
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{stage_dir}: Ray Train finished without a checkpoint ({result.error})")
    final = storage.join(stage_dir, "final.pt")
    with result.checkpoint.as_directory() as d:
        save_checkpoint(final, load_checkpoint(Path(d) / "final.pt"))
    return final
