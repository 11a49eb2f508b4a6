"""Ray Data pseudo-label pipeline (SPEC §3 "Pseudo labels", §6 "Ray Data"): shards -> Parquet rows.

    unlabeled shard files (read tasks, one file each, streamed in blocks of a few inference batches) ->
    teacher inference in an actor pool (make_infer() once per actor, so the teacher checkpoint is loaded
    once per actor, not per batch) -> label_video map tasks (the recipe's pure pseudo-label stages) ->
    write_parquet(out_dir) in PSEUDO_SCHEMA.

With CPU actors the labeling runs inside the inference actor (``InferLabelStage``): same stage
functions, one object-store hop less.

Nothing is collected on the driver: batches stream through the stages and the summary is built from
a final read of the small output columns. Every video that reaches the pipeline leaves one row; a
per-video failure (undecodable or non-finite features, wrong feature dimension, an exception in
inference or labeling) becomes an error row with the reason.

Unreadable shard files: Parquet keeps its metadata (row count, schema) in the footer at the end of the
file, so a truncated file has lost exactly the part that says which videos it held. Each file's
footer and ``video_id`` column are therefore checked on the driver before the dataset is built (a
small read, no features); a file that fails is left out of the dataset and reported as a file-level
error in the summary (``file_errors``), since its video ids cannot be recovered to make error rows.
Every readable file is processed as usual.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raytal.core.errors import DataError
from raytal.data.pseudo_io import PSEUDO_SCHEMA, pseudo_row
from raytal.data.shards import SCHEMA as SHARD_SCHEMA
from raytal.data.shards import list_shards, rows_to_videos
from raytal.core.video import Video

InferFn = Callable[[list[Video]], list[dict]]
LabelFn = Callable[[Video, dict], dict]
MAX_REASONS = 5  # error reasons kept in the summary (smallest video ids, so the choice is deterministic)
# Ray Data's Parquet reader put a round's small shard files into one block, and an actor takes one block
# per call, so a round of a few shards ran on one actor while the rest of the pool idled. The pipeline
# sizes blocks instead: BATCHES_PER_BLOCK inference batches, and at least BLOCKS_PER_ACTOR per actor.
BATCHES_PER_BLOCK = 4
BLOCKS_PER_ACTOR = 4
# Pseudo-label rows are small: with labeling in the actors, the write gathers blocks into files of at least
# this many rows (fewer write tasks). Not with separate labeling tasks: Ray Data then fuses those tasks
# into one task per file, so a small round would label on one node.
MIN_ROWS_PER_FILE = 256

# What the inference stage hands to the labeling stage: the video record without its hidden ground
# truth, and the teacher's prediction as an .npz blob (arrays only, loaded with allow_pickle=False).
_PRED_SCHEMA = pa.schema(
    [SHARD_SCHEMA.field(n) for n in ("video_id", "subset", "duration", "fps", "feat_stride", "num_frames", "T", "D",
                                     "features", "video_labels")]
    + [pa.field("prediction", pa.large_binary()), pa.field("error", pa.string())]
)


@dataclass
class PipelineSummary:
    """What a pseudo-label round produced. ``rows_out == videos_in`` unless a file was unreadable."""

    out_dir: str
    videos_in: int
    rows_out: int
    num_errors: int
    first_errors: list[tuple[str, str]]  # (video_id, reason), up to MAX_REASONS smallest ids
    file_errors: list[tuple[str, str]]  # (file, reason): shard files whose videos could not be read
    instances_per_class: dict[int, int]
    relaxed: int  # relaxed LPs over all videos
    elapsed: float  # seconds

    def format(self) -> str:
        lines = [
            f"pseudo labels -> {self.out_dir}",
            f"videos in: {self.videos_in}  rows out: {self.rows_out}  error rows: {self.num_errors}  "
            f"relaxed LPs: {self.relaxed}  time: {self.elapsed:.1f} s",
            "instances per class: "
            + (", ".join(f"{c}: {n}" for c, n in sorted(self.instances_per_class.items())) or "none"),
        ]
        lines += [f"  error {vid}: {reason}" for vid, reason in self.first_errors]
        lines += [f"  unreadable shard {path}: {reason}" for path, reason in self.file_errors]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ prediction blobs


def encode_prediction(pred: dict) -> bytes:
    """A prediction dict (arrays, one level of nested dicts such as ``dense``) -> .npz bytes."""
    flat: dict[str, np.ndarray] = {}
    for key, value in pred.items():
        if "/" in key:
            raise ValueError(f"prediction key {key!r} must not contain '/'")
        if isinstance(value, dict):
            for sub, arr in value.items():
                flat[f"{key}/{sub}"] = np.asarray(arr)
        else:
            flat[key] = np.asarray(value)
    if any(a.dtype == object for a in flat.values()):
        raise ValueError("prediction arrays must be numeric (object arrays are not serialised)")
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return buf.getvalue()


def decode_prediction(blob: bytes) -> dict:
    """Inverse of ``encode_prediction``."""
    out: dict[str, Any] = {}
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        for key in z.files:
            if "/" in key:
                outer, inner = key.split("/", 1)
                out.setdefault(outer, {})[inner] = z[key]
            else:
                out[key] = z[key]
    return out


# ---------------------------------------------------------------------------------------- stages


def _error_pred_row(video_id: str, reason: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in _PRED_SCHEMA.names}
    row.update(video_id=video_id, error=reason)
    return row


def _pred_row(video: Video, pred: dict) -> dict[str, Any]:
    feats = np.ascontiguousarray(video.features, dtype=np.float32)
    return {
        "video_id": video.video_id,
        "subset": video.subset,
        "duration": video.duration,
        "fps": video.fps,
        "feat_stride": video.feat_stride,
        "num_frames": video.num_frames,
        "T": feats.shape[0],
        "D": feats.shape[1],
        "features": feats.tobytes(),
        "video_labels": [int(c) for c in video.video_labels],
        "prediction": encode_prediction(pred),
        "error": None,
    }


class InferStage:
    """Actor: builds the teacher once (``make_infer()``), then runs it on batches of shard rows and
    returns prediction rows for a separate labeling stage (``label_batch``)."""

    def __init__(self, make_infer: Callable[[], InferFn], feature_dim: int | None, torch_threads: int) -> None:
        import torch

        # Ray sets OMP_NUM_THREADS=1 in workers; give the actor the threads its CPU share pays for.
        torch.set_num_threads(torch_threads)
        self.feature_dim = feature_dim
        self.infer = make_infer()

    def _run(self, videos: list[Video]) -> list[tuple[Video, dict]]:
        preds = self.infer(videos)
        if len(preds) != len(videos):
            raise ValueError(f"teacher returned {len(preds)} predictions for {len(videos)} videos")
        return list(zip(videos, preds))

    def predict(self, batch: pa.Table) -> tuple[list[tuple[str, str]], list[tuple[Video, dict]]]:
        """([(video id, reason)] for the videos that failed, [(video, prediction)] for the rest)."""
        failed: list[tuple[str, str]] = []
        videos = rows_to_videos(batch, source="shard", errors=failed, check_finite=True)
        good = []
        for v in videos:
            if self.feature_dim is not None and v.features.shape[1] != self.feature_dim:
                failed.append((v.video_id, f"shard: video '{v.video_id}': field 'features': "
                               f"D = {v.features.shape[1]}, the teacher expects D = {self.feature_dim}"))
            else:
                good.append(v)
        if not good:
            return failed, []
        try:
            return failed, self._run(good)
        except Exception:  # noqa: BLE001 - isolate the failing video(s) by retrying one at a time
            done = []
            for v in good:
                try:
                    done += self._run([v])
                except Exception as e:  # noqa: BLE001 - one bad video is an error row, not a dead job
                    failed.append((v.video_id, f"inference failed: {type(e).__name__}: {e}"))
            return failed, done

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed, done = self.predict(batch)
        rows = [_error_pred_row(vid, reason) for vid, reason in failed] + [_pred_row(v, p) for v, p in done]
        return pa.Table.from_pylist(rows, schema=_PRED_SCHEMA)


def _error_row(video_id: str, round: int, teacher: str, reason: str) -> dict[str, Any]:
    return pseudo_row(video_id, round, teacher, [], [], [], [], [], error=reason)


def _label_row(video_id: str, make: Callable[[], tuple[Video, dict]], label_video: LabelFn, round: int,
               teacher: str) -> dict[str, Any]:
    """One PSEUDO_SCHEMA row: ``label_video`` on ``make()``'s (video, prediction); a raise -> error row."""
    try:
        out = label_video(*make())
        return pseudo_row(
            video_id, round, teacher, out["segments"], out["labels"], out["scores"], out["weights"],
            out["origins"], out.get("targets"), out.get("teacher_scores"), relaxed=out.get("relaxed", 0),
        )
    except Exception as e:  # noqa: BLE001 - one bad video is an error row, not a dead job
        return _error_row(video_id, round, teacher, f"labeling failed: {type(e).__name__}: {e}")


class InferLabelStage(InferStage):
    """Actor: teacher inference and the recipe's labeling in one call, returning pseudo-label rows.

    For CPU actors: a separate labeling task would only add a hop (features and predictions through
    the object store) and compete with the actors for the same cores. Rows are the ones
    ``label_batch(InferStage(...)(batch))`` gives, in the same order.
    """

    def __init__(self, make_infer: Callable[[], InferFn], feature_dim: int | None, torch_threads: int, *,
                 label_video: LabelFn, round: int, teacher: str) -> None:
        super().__init__(make_infer, feature_dim, torch_threads)
        self.label_video, self.round, self.teacher = label_video, int(round), str(teacher)

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed, done = self.predict(batch)
        rows = [_error_row(vid, self.round, self.teacher, reason) for vid, reason in failed]
        # Labeling sees the video without its hidden ground truth, as after the hop in label_batch.
        rows += [_label_row(v.video_id, lambda v=v, p=p: (_unlabeled(v), p), self.label_video, self.round,
                            self.teacher) for v, p in done]
        return pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA)


def _unlabeled(video: Video) -> Video:
    return dataclasses.replace(video, labeled=False, segments=np.zeros((0, 2)), labels=np.zeros(0, np.int64))


def _video_of(cols: dict[str, list], i: int) -> Video:
    T, D = cols["T"][i], cols["D"][i]
    return Video(
        video_id=cols["video_id"][i],
        subset=cols["subset"][i],
        duration=cols["duration"][i],
        fps=cols["fps"][i],
        feat_stride=cols["feat_stride"][i],
        num_frames=cols["num_frames"][i],
        features=np.frombuffer(cols["features"][i], dtype=np.float32).reshape(T, D).copy(),
        labeled=False,  # no ground truth travels with an unlabeled video into the labeling stage
        video_labels=np.asarray(cols["video_labels"][i] or [], dtype=np.int64),
    )


def label_batch(batch: pa.Table, *, label_video: LabelFn, round: int, teacher: str) -> pa.Table:
    """Map task: prediction rows -> pseudo-label rows; a raising or invalid label_video -> error row."""
    cols = {name: batch.column(name).to_pylist() for name in _PRED_SCHEMA.names}
    rows = []
    for i, vid in enumerate(cols["video_id"]):
        if cols["error"][i] is not None:
            rows.append(_error_row(vid, round, teacher, cols["error"][i]))
        else:
            rows.append(_label_row(vid, lambda i=i: (_video_of(cols, i), decode_prediction(cols["prediction"][i])),
                                   label_video, round, teacher))
    return pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA)


# --------------------------------------------------------------------------------------- driver


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it): s3:// and gs:// URIs work wherever a local path does."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def list_shard_files(source: str) -> list[str]:
    """A shard directory (recursive, sorted) or file, local or s3:// / gs:// -> the shard file paths."""
    if "://" not in source:
        return [str(p) for p in list_shards(source)]
    fs, inner = _filesystem(source)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.File:
        return [source]
    if info.type != pafs.FileType.Directory:
        raise DataError(f"{source}: shard directory or file not found")
    scheme = source.split("://", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    return sorted(f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


class ShardCheck(NamedTuple):
    good: list[str]  # readable shard files
    videos: int  # videos in them
    nbytes: int  # their uncompressed size (Parquet footers), to size Ray Data blocks
    errors: list[tuple[str, str]]  # (file, reason) for the rest


def check_shard_files(shard_files: list[str]) -> ShardCheck:
    """Which shard files are readable, reading footers and ids only."""
    good, bad, count, nbytes = [], [], 0, 0
    for path in shard_files:
        try:
            fs, inner = _filesystem(str(path))
            with fs.open_input_file(inner) as f:
                pf = pq.ParquetFile(f)
                missing = [n for n in SHARD_SCHEMA.names if n not in pf.schema_arrow.names]
                if missing:
                    raise DataError(f"column '{missing[0]}' missing; not a raytal shard")
                ids = pf.read(columns=["video_id"]).column("video_id")
                size = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups))
            if ids.null_count:
                raise DataError("null video_id")
        except (pa.ArrowException, OSError, DataError) as e:
            bad.append((str(path), f"unreadable Parquet shard (truncated or corrupt?): {e}"))
            continue
        good.append(str(path))
        count += len(ids)
        nbytes += size
    return ShardCheck(good, count, nbytes, bad)


def block_rows(videos: int, batch_size: int, pool_size: int) -> int:
    """Videos per Ray Data block: BATCHES_PER_BLOCK inference batches, or fewer so that a small round
    still gives every actor BLOCKS_PER_ACTOR blocks (an actor takes one block per call)."""
    return max(1, min(BATCHES_PER_BLOCK * batch_size, -(-videos // (BLOCKS_PER_ACTOR * pool_size))))


def _output_files(out_dir: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, root = _filesystem(out_dir)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return fs, sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


def clean_output(out_dir: str) -> None:
    """Remove the Parquet files of an earlier run: Ray names output files per run, so re-running a round
    would otherwise add a second copy instead of overwriting."""
    fs, files = _output_files(out_dir)
    for f in files:
        fs.delete_file(f)
    fs.create_dir(_filesystem(out_dir)[1], recursive=True)


def summarize_output(out_dir: str) -> tuple[int, int, list[tuple[str, str]], dict[int, int], int]:
    """(rows, error rows, first reasons, instances per class, relaxed) from the small output columns,
    one file at a time."""
    rows = errors = relaxed = 0
    reasons: list[tuple[str, str]] = []
    per_class: dict[int, int] = {}
    fs, files = _output_files(out_dir)
    for path in files:
        t = pq.read_table(path, columns=["video_id", "instances", "relaxed", "error"], filesystem=fs)
        rows += t.num_rows
        relaxed += int(pc.sum(t.column("relaxed")).as_py() or 0)
        err = t.column("error")
        errors += t.num_rows - err.null_count
        if err.null_count < t.num_rows:
            bad = t.filter(pc.is_valid(err))
            reasons = sorted(reasons + list(zip(bad.column("video_id").to_pylist(), bad.column("error").to_pylist())))
            reasons = reasons[:MAX_REASONS]
        flat = pc.list_flatten(t.column("instances"))
        labels = np.concatenate(
            [chunk.field("label_id").to_numpy(zero_copy_only=False) for chunk in flat.chunks] + [np.zeros(0, np.int32)]
        )
        ids, counts = np.unique(labels, return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            per_class[c] = per_class.get(c, 0) + n
    return rows, errors, reasons, per_class, relaxed


def _file_blocks(batch: pa.Table, *, rows: int):
    """Read task: shard file paths -> tables of ``rows`` videos, streamed one Parquet batch at a time."""
    for path in batch.column("path").to_pylist():
        fs, inner = _filesystem(path)
        with fs.open_input_file(inner) as f:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=SHARD_SCHEMA.names):
                yield pa.Table.from_batches([rb])


def _read_shards(files: list[str], rows: int, block_bytes: int, remote_args: dict):
    """The shard files as a dataset of blocks of about ``rows`` videos (``block_bytes``), read one file
    per task. Ray Data's own Parquet reader bundles small files into one block per round and kept
    hundreds of MB of decoded data in its worker, growing with the number of videos."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_min_block_size, ctx.target_max_block_size
    ctx.target_min_block_size, ctx.target_max_block_size = 1, block_bytes  # the dataset keeps a copy
    try:
        paths = ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))
    finally:
        ctx.target_min_block_size, ctx.target_max_block_size = saved
    # Reads SPREAD over the nodes, as Ray Data's readers do. Given as a remote-args function, which also
    # keeps Ray Data from fusing the read into the actors (each actor would then read whole files).
    return paths.map_batches(_file_blocks, fn_kwargs={"rows": rows}, batch_size=1, batch_format="pyarrow",
                             ray_remote_args_fn=_spread, **remote_args)


def _spread() -> dict[str, str]:
    return {"scheduling_strategy": "SPREAD"}


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


def run_pseudolabel_pipeline(
    shard_files: list[str],
    out_dir: str,
    *,
    make_infer: Callable[[], InferFn],
    label_video: LabelFn,
    round: int,
    teacher: str,
    batch_size: int,
    pool_size: int,
    actor_cpus: float,
    use_gpu: bool,
    task_cpus: float = 0.5,
    feature_dim: int | None = None,
    fuse_labeling: bool | None = None,
) -> PipelineSummary:
    """Pseudo-label the videos of ``shard_files`` into ``out_dir`` (overwritten); Ray must be running.

    ``make_infer`` and ``label_video`` must pickle (module-level functions or picklable objects):
    ``make_infer()`` runs once per actor and returns ``infer(videos) -> [prediction dict]`` (arrays;
    e.g. detect() output + "dense"); ``label_video(video, prediction)`` returns a dict with segments
    (seconds), labels, scores, weights, origins and optionally targets, teacher_scores [T, C] and
    relaxed (count). ``feature_dim`` (the teacher's D) turns a wrong D into a clear error row before
    inference. Results do not depend on ``pool_size``: each video's row is a function of that video.

    ``fuse_labeling`` (default: on CPU actors, off with GPUs) labels inside the inference actors
    (``InferLabelStage``) instead of in separate CPU map tasks (``task_cpus`` each), which let GPU actors
    move on to the next batch while the CPU solves LinPro; both give the same rows.
    """
    import ray
    import ray.data

    if not shard_files:
        raise ValueError("run_pseudolabel_pipeline: no shard files given")
    if batch_size < 1 or pool_size < 1:
        raise ValueError(f"batch_size and pool_size must be >= 1, got {batch_size}, {pool_size}")
    if not actor_cpus > 0 or not task_cpus > 0:
        raise ValueError(f"actor_cpus and task_cpus must be > 0, got {actor_cpus}, {task_cpus}")
    if not ray.is_initialized():
        raise RuntimeError("run_pseudolabel_pipeline: Ray is not running; call raytal.distributed.session.ensure_ray")
    start = time.perf_counter()
    # Absolute paths: Ray tasks do not run in the driver's working directory (nor on its node).
    out_dir = out_dir if "://" in out_dir else str(Path(out_dir).resolve())
    shard_files = [f if "://" in str(f) else str(Path(f).resolve()) for f in shard_files]
    clean_output(out_dir)
    good, videos_in, nbytes, file_errors = check_shard_files(shard_files)
    if good:
        fuse = not use_gpu if fuse_labeling is None else fuse_labeling
        labeling = {"label_video": label_video, "round": int(round), "teacher": str(teacher)}
        io_args = {"num_cpus": task_cpus}  # read/write tasks: fractional, so they fit beside the actors
        rows = block_rows(videos_in, batch_size, pool_size)
        block_bytes = max(1, nbytes * rows // max(videos_in, 1))
        ds = _read_shards(good, rows, block_bytes, io_args)
        # The pool keeps the size it starts with: Ray Data shrinks a pool whose actor waits a moment for
        # input, and grows it again only under a long queue, so a round could end on one actor.
        actors = initial_pool_size(pool_size, actor_cpus, task_cpus, use_gpu, ray.available_resources())
        ds = ds.map_batches(
            InferLabelStage if fuse else InferStage,
            fn_constructor_kwargs={
                "make_infer": make_infer,
                "feature_dim": feature_dim,
                "torch_threads": max(1, int(actor_cpus)),
                **(labeling if fuse else {}),
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=pool_size, initial_size=actors),
            num_cpus=actor_cpus,
            num_gpus=1 if use_gpu else 0,
        )
        if not fuse:
            ds = ds.map_batches(label_batch, fn_kwargs=labeling, batch_size=batch_size, batch_format="pyarrow",
                                num_cpus=task_cpus)
        ds.write_parquet(out_dir, min_rows_per_file=MIN_ROWS_PER_FILE if fuse else None, ray_remote_args=io_args)
    rows, errors, reasons, per_class, relaxed = summarize_output(out_dir) if good else (0, 0, [], {}, 0)
    if rows != videos_in:
        raise RuntimeError(f"pseudo-label pipeline wrote {rows} rows for {videos_in} input videos")
    return PipelineSummary(
        out_dir=out_dir,
        videos_in=videos_in,
        rows_out=rows,
        num_errors=errors,
        first_errors=reasons,
        file_errors=file_errors,
        instances_per_class=per_class,
        relaxed=relaxed,
        elapsed=time.perf_counter() - start,
    )
