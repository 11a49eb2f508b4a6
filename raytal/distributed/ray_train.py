"""Ray Train: a ``TrainSpec`` as DDP over ``TorchTrainer`` workers, fed by Ray Data.

It wraps ``raytal.selftrain.train_stage.run_training`` — the same loop the in-process back-end runs —
adding only what distribution needs: ``prepare_model`` (DDP; gloo on CPU, nccl on GPU), a checkpoint
reported to Ray every epoch, restoring from Ray's latest checkpoint after a worker failure
(``FailureConfig``) or when the whole run is started again with the same name and storage path (Ray Train
V2 resumes a run by its (storage_path, name)), and the data.

Data (Ray Train's ingest: ``TorchTrainer(datasets=...)`` + ``ray.train.get_dataset_shard``): the driver
builds one Ray Data dataset per stream ("labeled", "pseudo"): ``read_parquet`` over the shard files of the
stream's seeded passes, each block turned into training rows by the stream's read side
(``raytal.data.stream.TrainingRows``: the split's ids, viewed as their part, pseudo labels joined) in the
read tasks. Each worker iterates its shard with Ray Data's local shuffle (``train.shuffle_buffer`` rows,
seeded by the stream and its rank) in batches of its share of every global batch (``raytal.engine.batches``),
decodes them (``rows_to_videos``) and collates, so memory per worker is the buffer plus Ray Data's prefetch,
whatever the size of the pool. The dataset's order is preserved and the shuffle seeded, so a 1-worker run
is deterministic and a restarted one replays its stream exactly; without a shuffle buffer it trains on the
very sequence the in-process back-end reads. With W workers the split assigns blocks as workers ask for
them, so the batches differ from a 1-worker run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from ray.data import ExecutionOptions
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.util.queue import Empty, Queue

from raytal.config import Config, ConfigError
from raytal.core import storage
from raytal.core.seeds import seed_int
from raytal.core.threads import set_torch_threads
from raytal.core.video import Video
from raytal.distributed.process_group import NodeBoundTorchConfig
from raytal.engine.batches import rank_share
from raytal.engine.checkpoint import load_checkpoint, save_checkpoint
from raytal.selftrain.spec import TrainSpec
from raytal.selftrain.train_stage import (
    EpochScalars, batch_plan, end_epoch, epoch_bar, final_state, run_training, show_epoch,
)
from raytal.selftrain.training_data import finite_passes, stage_streams, training_videos

# Test hook: set (on the driver) to "<epoch>:<marker file>" to make rank 0 raise once at that epoch (fault tests).
FAIL_ONCE_ENV = "RAYTAL_FAIL_ONCE_AT_EPOCH"
# Test hook: set (on the driver) to a directory to have every rank record in <dir>/rank_<r>.jsonl the videos its
# batches take (a resumed rank's replay included), in order, and a digest of its weights after each epoch (DDP
# tests).
TRACE_ENV = "RAYTAL_TRACE_RANKS"
READ_CPUS = 0.5  # fractional so read tasks fit beside the workers; no more than the spare cores' worth at once


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


def stage_datasets(cfg: Config, spec: TrainSpec) -> dict:
    """The stage's Ray Data datasets by stream: Ray Data's Parquet reader over the files of enough seeded
    passes for the whole stage, each block turned into training rows by the stream's read side."""
    import ray.data

    # Ray Data's Parquet reader V2 lists files in a task that starts footer-reading tasks of its own, each
    # needing a worker process: ~10 s before the first row on a busy 2-core node, against ~0.3 s for V1,
    # which also keeps a file listed twice (a stream's passes list every file once per pass; V2 dedupes).
    ray.data.DataContext.get_current().use_datasource_v2 = False
    n_l, n_u, steps = batch_plan(cfg, spec)
    per_step = {"labeled": n_l, "pseudo": n_u}
    out = {}
    for name, stream in stage_streams(cfg, spec).items():
        if not per_step[name]:
            continue
        needed = (end_epoch(cfg, spec) - spec.start_epoch) * steps * per_step[name]
        files = stream.passes(finite_passes(stream, needed, cfg.train.shuffle_buffer))
        # One read task per file of the passes: a task given several reads them grouped by file, out of order.
        ds = ray.data.read_parquet(files, include_paths=True, num_cpus=READ_CPUS, override_num_blocks=len(files))
        out[name] = ds.map_batches(stream.rows, batch_size=None, batch_format="pyarrow", num_cpus=READ_CPUS)
    return out


def _worker_streams(cfg: Config, spec: TrainSpec, names: list[str], rank: int, world: int,
                    trace: _RankTrace | None) -> dict:
    """This worker's shard of each dataset as a stream of videos, through Ray Data's local shuffle seeded by
    the stream and the rank, in batches of the worker's share of each step."""
    streams = stage_streams(cfg, spec)
    n_l, n_u, _ = batch_plan(cfg, spec)
    share = dict(zip(("labeled", "pseudo"), rank_share(n_l, n_u, rank, world)[:2]))
    out = {}
    for name in names:
        buffer = streams[name].buffer(cfg.train.shuffle_buffer)
        batches = ray.train.get_dataset_shard(name).iter_batches(
            batch_size=share[name], batch_format="pyarrow", local_shuffle_buffer_size=buffer if buffer > 1 else None,
            local_shuffle_seed=seed_int(*streams[name].shuffle_seed(rank)))
        out[name] = _reading(training_videos(batches))
        if trace is not None:
            out[name] = trace.videos("trained", name, out[name])
    return out


def _reading(videos: Iterator[Video]) -> Iterator[Video]:
    """``videos``, its first one read in a thread from now on: a stage's first reads (Ray Data's executor
    starting, its first read tasks) overlap the model's set-up instead of following it."""
    first: list = []

    def read() -> None:
        try:
            first.append(next(videos, None))
        except BaseException as e:  # noqa: BLE001 - raised where the video is asked for
            first.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()

    def stream() -> Iterator[Video]:
        thread.join()
        if isinstance(first[0], BaseException):
            raise first[0]
        if first[0] is not None:
            yield first[0]
            yield from videos

    return stream()


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
            config["epochs"].put({"epoch": epoch + 1, "loss": metrics.get("loss", float("nan"))})
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(Path(d) / "state.pt", trainer.state_dict())
                save_checkpoint(Path(d) / "final.pt", final_state(trainer, spec, metrics))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)

    try:
        run_training(cfg, spec, _worker_streams(cfg, spec, config["datasets"], rank, world, trace), restore=restore,
                     on_epoch=on_epoch, rank=rank, world_size=world, device=ray.train.torch.get_device(),
                     wrap_model=ray.train.torch.prepare_model)
    finally:
        if scalars is not None:
            scalars.close()


@contextmanager
def _shown(epochs: Queue, bar) -> Iterator[None]:
    """While the block runs, the epochs rank 0 reports move the stage's progress bar on the driver."""
    done = threading.Event()

    def follow() -> None:
        while not done.is_set():
            try:
                show_epoch(bar, epochs.get(timeout=0.5))
            except Empty:
                continue

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        while not epochs.empty():
            show_epoch(bar, epochs.get_nowait())
        bar.close()
        ray.kill(epochs.actor)


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
    epochs = Queue(actor_options={"num_cpus": 0})  # rank 0 -> the driver's progress bar
    trainer = ray.train.torch.TorchTrainer(
        _worker_loop,
        train_loop_config=dict(cfg=cfg, spec=spec, datasets=sorted(datasets), fail_once=os.environ.get(FAIL_ONCE_ENV),
                               trace=os.environ.get(TRACE_ENV), epochs=epochs),
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=rc.use_gpu, resources_per_worker=resources),
        torch_config=NodeBoundTorchConfig(),  # the process group listens on the node's Ray address only
        datasets=datasets,
        # One worker reads its datasets whole: a split would start a coordinator actor (a process, seconds on
        # a busy node) between the worker and its first batch, to hand every block to that one worker.
        dataset_config=DataConfig(datasets_to_split="all" if rc.num_workers > 1 else [],
                                  execution_options=ExecutionOptions(preserve_order=True)),
        run_config=RunConfig(
            name="ray_train", storage_path=stage_dir,
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    with _shown(epochs, epoch_bar(cfg, spec, spec.start_epoch)):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{stage_dir}: Ray Train finished without a checkpoint ({result.error})")
    final = storage.join(stage_dir, "final.pt")
    with result.checkpoint.as_directory() as d:
        save_checkpoint(final, load_checkpoint(Path(d) / "final.pt"))
    return final
