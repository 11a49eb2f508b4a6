"""Ray Data pseudo-label pipeline: a ``LabelSpec`` -> Parquet rows.

    inputs (a Ray Data source: one read task per shard file, streamed in inference batches) ->
    teacher inference in an actor pool (make_infer() once per actor) -> labeling (inside the CPU actors,
    or in separate map tasks beside GPU actors) -> the driver writes each output block under
    ``<out>/shard=<k>`` as it arrives, under the stage's progress bar

The stages themselves are Ray-free (``raytal.selftrain.pseudo_stage``): the in-process back-end runs the
same classes and the same writer, so both write the same rows. Nothing is collected on the driver but
the block being written (pseudo-label rows are small), and the summary is built from a final read of
the small output columns. Every video that reaches the pipeline leaves one row (error rows included); an
unreadable shard file is a file-level error in the summary (its video ids cannot be recovered).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import ray
import ray.data

from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata
from ray.data.context import DataContext

from raytal.core import storage
from raytal.selftrain.pseudo_stage import (
    InferFn, InferLabelStage, InferStage, LabelFn, PipelineSummary, check_inputs, clean_output, input_blocks,
    label_batch, summary_of, write_outputs, write_source_rows, write_table,
)
from raytal.selftrain.predict import DetectStage
from raytal.selftrain.spec import InferenceInput, LabelSpec, ReadFn

# The teacher's batches are the in-process back-end's: ``batch_size`` consecutive videos of one input, so
# which videos share a batch — and so the teacher's floating-point results, which depend on the batch's
# shape in the last bits — never depends on how Ray schedules blocks, and both back-ends write the same
# rows. Ray Data reshapes what a read task yields (it merges small tables into blocks of its target size and
# slices big ones by rows), so a read task yields each batch as ONE row holding the batch's rows (Arrow
# IPC): merged or sliced, a block holds whole batches, and the actors take one packed batch per call.
BATCH_COLUMN = "batch"


def _pack(table: pa.Table) -> pa.Table:
    """A batch of rows -> a one-row table holding it (Arrow IPC)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    offsets = pa.py_buffer(np.array([0, data.size], np.int64))
    return pa.table({BATCH_COLUMN: pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, data])})


def _unpack(block: pa.Table) -> Iterator[pa.Table]:
    """The batches a block of packed batches holds, in order."""
    for chunk in block.column(BATCH_COLUMN).chunks:
        for i in range(len(chunk)):
            yield pa.ipc.open_stream(chunk[i].as_buffer()).read_all()


class PackedBatches:
    """Actor: ``stage(**stage_kwargs)`` on each packed batch of a block; its outputs concatenated."""

    def __init__(self, stage: type, stage_kwargs: dict) -> None:
        self.stage = stage(**stage_kwargs)

    def __call__(self, block: pa.Table) -> pa.Table:
        return pa.concat_tables([self.stage(batch) for batch in _unpack(block)])


class InputSource(Datasource):
    """The inputs of an inference pass as a Ray Data source: one read task per input, yielding its rows in
    batches of ``rows`` videos, each packed into one row. A read task is a source of its own, not a map over
    a list of inputs, so Ray spreads the reads over the nodes as it does its own readers', and never fuses
    them into the actors (each actor would then read whole files)."""

    def __init__(self, inputs: list[InferenceInput], read: ReadFn, rows: int, nbytes: int) -> None:
        super().__init__()
        self.inputs, self.read, self.rows, self.nbytes = inputs, read, rows, nbytes

    def estimate_inmemory_data_size(self) -> int:
        return self.nbytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: DataContext | None = None) -> list[ReadTask]:
        return [ReadTask(functools.partial(self._blocks, item), BlockMetadata(None, None, None, None))
                for item in self.inputs]

    def _blocks(self, item: InferenceInput) -> Iterator[pa.Table]:
        return (_pack(table) for table in self.read(item, self.rows))


def initial_pool_size(pool_size: int, actor_cpus: float, task_cpus: float, use_gpu: bool,
                      available: dict[str, float]) -> int:
    """How many inference actors to start with: the whole pool if it is made of GPU actors (pending ones
    are what brings GPU nodes up, and they hold nothing while they wait) or if the cluster has CPU for
    it now and for one read/write task beside it; else 1, and Ray Data grows the pool as CPUs free up.

    Ray Data grows a pool only when its actors' queues stay long, which a round of a few minutes may
    never reach, so starting full is what makes a pool of P run P-wide. But CPU actors that take every
    CPU leave none for the read tasks that feed them (two rounds sharing a 2-CPU Ray did exactly that
    and deadlocked); one actor leaves the CPUs it does not take to those tasks.
    """
    if use_gpu:
        return pool_size
    return pool_size if available.get("CPU", 0.0) >= pool_size * actor_cpus + task_cpus - 1e-9 else 1


def inference_dataset(inputs: list[InferenceInput], read: ReadFn, stage: type, stage_kwargs: dict, *, nbytes: int,
                      batch_size: int, pool_size: int, actor_cpus: float, use_gpu: bool, task_cpus: float):
    """Inputs -> read tasks -> an actor pool of ``stage(**stage_kwargs)`` on batches of ``batch_size`` rows: the
    inference stage the pseudo-label pipeline and predictions share."""
    if batch_size < 1 or pool_size < 1:
        raise ValueError(f"batch_size and pool_size must be >= 1, got {batch_size}, {pool_size}")
    if not actor_cpus > 0 or not task_cpus > 0:
        raise ValueError(f"actor_cpus and task_cpus must be > 0, got {actor_cpus}, {task_cpus}")
    if not ray.is_initialized():
        raise RuntimeError("the inference pipeline needs Ray running: call raytal.distributed.session.ensure_ray")
    videos = max(sum(item.count for item in inputs), 1)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_min_block_size, ctx.target_max_block_size
    # About one batch per block (so a small round still spreads over the pool; a smaller batch may share
    # its block with the next), and the actors' small output rows never sliced. The dataset keeps a copy.
    ctx.target_min_block_size, ctx.target_max_block_size = 1, max(1, nbytes * batch_size // videos // 2)
    try:
        ds = ray.data.read_datasource(InputSource(inputs, read, batch_size, nbytes), override_num_blocks=len(inputs),
                                      num_cpus=task_cpus)
    finally:
        ctx.target_min_block_size, ctx.target_max_block_size = saved
    # The pool keeps the size it starts with: Ray Data shrinks a pool whose actor waits a moment for
    # input, and grows it again only under a long queue, so a round could end on one actor. No more actors
    # than inputs: Ray Data hands an actor pool at most one task per input (a test subset in one file).
    pool_size = max(1, min(pool_size, len(inputs)))
    actors = initial_pool_size(pool_size, actor_cpus, task_cpus, use_gpu, ray.available_resources())
    return ds.map_batches(
        PackedBatches,
        fn_constructor_kwargs={"stage": stage,
                               "stage_kwargs": {**stage_kwargs, "torch_threads": max(1, int(actor_cpus))}},
        # One packed row = one inference batch per call (Ray Data refuses GPU actors a batch_size of None).
        batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=pool_size, initial_size=actors),
        num_cpus=actor_cpus, num_gpus=1 if use_gpu else 0,
    )


def written(ds, write: Callable[[pa.Table, str], None], total: int, desc: str) -> None:
    """The dataset's output blocks, written on the driver as they arrive (``write_outputs``)."""
    write_outputs(ds.iter_batches(batch_size=None, batch_format="pyarrow"), write, total, desc)


def run_pseudolabel_pipeline(
    spec: LabelSpec,
    *,
    make_infer: Callable[[], InferFn],
    label_video: LabelFn,
    batch_size: int,
    pool_size: int,
    actor_cpus: float,
    use_gpu: bool,
    task_cpus: float = 0.5,
    feature_dim: int | None = None,
    fuse_labeling: bool | None = None,
) -> PipelineSummary:
    """Pseudo-label the videos of ``spec`` into ``spec.out_dir`` (overwritten); Ray must be running.

    ``make_infer`` and ``label_video`` must pickle (module-level functions or picklable objects):
    ``make_infer()`` runs once per actor and returns ``infer(videos) -> [prediction dict]``;
    ``label_video(video, prediction)`` returns a dict with segments (seconds), labels, scores, weights,
    origins and optionally targets, teacher_scores [T, C] and relaxed (count). ``feature_dim`` (the
    teacher's D) turns a wrong D into a clear error row before inference. Results do not depend on
    ``pool_size``: each video's row is a function of that video.

    ``fuse_labeling`` (default: on CPU actors, off with GPUs) labels inside the inference actors
    (``InferLabelStage``) instead of in separate CPU map tasks (``task_cpus`` each), which let GPU actors
    move on to the next batch while the CPU solves LinPro; both give the same rows.
    """
    start = time.perf_counter()
    # Absolute paths: Ray tasks do not run in the driver's working directory (nor on its node).
    out_dir = storage.resolve(spec.out_dir)
    clean_output(out_dir)
    check = check_inputs(spec)
    if check.good:
        fuse = not use_gpu if fuse_labeling is None else fuse_labeling
        labeling = {"label_video": label_video, "round": int(spec.round), "teacher": str(spec.teacher)}
        ds = inference_dataset(
            check.good, input_blocks, InferLabelStage if fuse else InferStage,
            {"make_infer": make_infer, "feature_dim": feature_dim, "setting": spec.setting, **(labeling if fuse else {})},
            nbytes=check.nbytes, batch_size=batch_size, pool_size=pool_size, actor_cpus=actor_cpus, use_gpu=use_gpu,
            task_cpus=task_cpus)
        if not fuse:
            ds = ds.map_batches(label_batch, fn_kwargs=labeling, batch_size=None, batch_format="pyarrow",
                                num_cpus=task_cpus)
        written(ds, lambda table, name: write_source_rows(out_dir, table, name), check.videos, spec.name)
    return summary_of(dataclasses.replace(spec, out_dir=out_dir), check, start)


def run_predict_pipeline(inputs: list[InferenceInput], read: ReadFn, out_dir: str, *,
                         make_infer: Callable[[], InferFn], feature_dim: int | None, batch_size: int, pool_size: int,
                         actor_cpus: float, use_gpu: bool, task_cpus: float = 0.5, bytes_per_video: int = 1 << 18) -> None:
    """A checkpoint's detections on ``inputs`` into Parquet files under ``out_dir`` (overwritten): the pseudo-label
    pipeline's read tasks and inference actors with ``DetectStage`` (``raytal.selftrain.predict``)."""
    out_dir = storage.resolve(out_dir)
    clean_output(out_dir)
    videos = sum(item.count for item in inputs)
    ds = inference_dataset(
        inputs, read, DetectStage, {"make_infer": make_infer, "feature_dim": feature_dim, "setting": "semi"},
        nbytes=videos * bytes_per_video, batch_size=batch_size, pool_size=pool_size, actor_cpus=actor_cpus,
        use_gpu=use_gpu, task_cpus=task_cpus)
    written(ds, lambda table, name: write_table(storage.join(out_dir, name), table), videos, "predictions")
