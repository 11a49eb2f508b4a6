"""The pseudo-labeling stage of a round, without Ray: the per-batch steps both back-ends run.

    inputs (one shard file of a pseudo source each, ``input_blocks``: streamed in blocks of a few batches)
    -> teacher inference on a batch of videos (``InferStage``: make_infer() once per actor, so the teacher
       checkpoint is read once per actor, not per batch)
    -> the recipes' labeling per video (``label_batch``, or inside the actor: ``InferLabelStage``)
    -> pseudo-label rows (``PSEUDO_SCHEMA`` + ``shard``), written to ``<out>/shard=<k>`` per source.

The in-process back-end chains them in a loop (``label_in_process``); the Ray Data pipeline
(``raytal.distributed.pseudo_pipeline``) runs the same classes as read tasks, actors and map tasks. Rows and
videos are converted by the shards' one codec (``raytal.data.shards``).

Every video that reaches the stage leaves one row; a per-video failure (undecodable or non-finite
features, wrong feature dimension, an exception in inference or labeling) becomes an error row with the
reason. Unreadable shard files: Parquet keeps its metadata (row count, schema) in the footer at the end of
the file, so a truncated file has lost exactly the part that says which videos it held. Each file's footer
and ``video_id`` column are therefore checked before anything runs (a small read, no
features; a file that fails is left out and reported as a file-level error in the summary.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytal.core import storage
from raytal.core.errors import DataError
from raytal.core.progress import progress
from raytal.core.threads import set_torch_threads
from raytal.core.video import Video
from raytal.data.pseudo_io import PSEUDO_SCHEMA, SOURCE_KEY, pseudo_row, source_dir
from raytal.data.shards import SCHEMA as SHARD_SCHEMA
from raytal.data.shards import open_shard, read_shard_tables, rows_to_videos, video_to_row
from raytal.data.splits import view_rows
from raytal.selftrain.spec import InferenceInput, LabelSpec

InferFn = Callable[[list[Video]], list[dict]]
LabelFn = Callable[[Video, dict], dict]
MAX_REASONS = 5  # error reasons kept in the summary (smallest video ids, so the choice is deterministic)
# Rows travelling through the stage carry the index of their pseudo source (their output directory) and
# their part (how the video is viewed: raytal.data.splits.view_rows).
UNIT_COLUMNS = [pa.field(SOURCE_KEY, pa.int32()), pa.field("part", pa.string())]
# A row a read task could not build a video from (e.g. an unreadable feature file) carries the reason here.
READ_ERROR = "read_error"
OUT_SCHEMA = pa.schema([*PSEUDO_SCHEMA, UNIT_COLUMNS[0]])
# What the inference stage hands to a separate labeling stage: the video's row without its hidden ground
# truth, and the teacher's prediction as an .npz blob (arrays only, loaded with allow_pickle=False).
_PRED_SCHEMA = pa.schema([*SHARD_SCHEMA, pa.field("prediction", pa.large_binary()), pa.field("error", pa.string()),
                          UNIT_COLUMNS[0]])


@dataclass
class PipelineSummary:
    """What a pseudo-label pass produced. ``rows_out == videos_in`` unless a file was unreadable."""

    out_dir: str
    videos_in: int
    rows_out: int
    num_errors: int
    usable: int  # rows with labels to train on (not an error row, and not empty)
    first_errors: list[tuple[str, str]]  # (video_id, reason), up to MAX_REASONS smallest ids
    file_errors: list[tuple[str, str]]  # (file, reason): shard files whose videos could not be read
    instances_per_class: dict[int, int]
    relaxed: int  # relaxed LPs over all videos
    elapsed: float  # seconds

    def format(self) -> str:
        lines = [
            f"pseudo labels -> {self.out_dir}",
            f"videos in: {self.videos_in}  rows out: {self.rows_out}  error rows: {self.num_errors}  "
            f"with labels: {self.usable}  relaxed LPs: {self.relaxed}  time: {self.elapsed:.1f} s",
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


# ------------------------------------------------------------------------------------ inputs


class InputCheck(NamedTuple):
    good: list[InferenceInput]  # readable
    videos: int  # videos in them
    nbytes: int  # their uncompressed size (Parquet footers), to size Ray Data blocks
    errors: list[tuple[str, str]]  # (file, reason) for the rest


def check_inputs(spec: LabelSpec) -> InputCheck:
    """Which shard files of ``spec`` are readable, reading footers and ids only."""
    good, bad, count, nbytes = [], [], 0, 0
    for k, (part, src) in enumerate(spec.sources):
        try:
            pf = open_shard(src.file)
            ids = pf.read(columns=["video_id"]).column("video_id")
            if ids.null_count:
                raise DataError("null video_id")
            size = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups))
        except (pa.ArrowException, OSError, DataError) as e:
            bad.append((src.file, f"unreadable Parquet shard (truncated or corrupt?): {e}"))
            continue
        n = len(ids) if src.ids is None else src.count
        good.append(InferenceInput(k, part, src.file, src.ids, n))
        count += n
        nbytes += size * n // max(len(ids), 1)
    return InputCheck(good, count, nbytes, bad)


def input_blocks(item: InferenceInput, rows: int) -> Iterator[pa.Table]:
    """The input's shard rows in tables of at most ``rows`` videos, tagged with its output and part."""
    for table in read_shard_tables(item.file, item.ids, rows=rows):
        n = table.num_rows
        yield table.append_column(UNIT_COLUMNS[0], pa.array([item.k] * n, pa.int32())).append_column(
            UNIT_COLUMNS[1], pa.array([item.part] * n, pa.string()))


# ---------------------------------------------------------------------------------------- stages


def _error_pred_row(video_id: str, reason: str, k: int) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in _PRED_SCHEMA.names}
    row.update(video_id=video_id, error=reason, **{SOURCE_KEY: k})
    return row


def _pred_row(video: Video, pred: dict, k: int) -> dict[str, Any]:
    return {**video_to_row(video, check=False), "prediction": encode_prediction(pred), "error": None, SOURCE_KEY: k}


def _unlabeled(video: Video) -> Video:
    """The video without its hidden ground truth: labeling never sees it."""
    return dataclasses.replace(video, labeled=False, segments=np.zeros((0, 2)), labels=np.zeros(0, np.int64))


class InferStage:
    """Actor: builds the teacher once (``make_infer()``), then runs it on batches of unit rows and returns
    prediction rows for a separate labeling stage (``label_batch``)."""

    def __init__(self, make_infer: Callable[[], InferFn], feature_dim: int | None, torch_threads: int,
                 setting: str) -> None:
        # Ray sets OMP_NUM_THREADS=1 in workers; give the actor the threads its CPU share pays for.
        set_torch_threads(torch_threads)
        self.feature_dim, self.setting = feature_dim, setting
        self.infer = make_infer()

    def _run(self, videos: list[Video]) -> list[tuple[Video, dict]]:
        preds = self.infer(videos)
        if len(preds) != len(videos):
            raise ValueError(f"teacher returned {len(preds)} predictions for {len(videos)} videos")
        return list(zip(videos, preds))

    def predict(self, batch: pa.Table) -> tuple[list[tuple[str, str]], list[tuple[Video, dict]], dict[str, int]]:
        """([(video id, reason)] for the videos that failed, [(video, prediction)] for the rest, and each
        video's source index)."""
        failed: list[tuple[str, str]] = []
        source = dict(zip(batch.column("video_id").to_pylist(), batch.column(SOURCE_KEY).to_pylist()))
        if READ_ERROR in batch.column_names:
            unread = batch.filter(pc.is_valid(batch.column(READ_ERROR)))
            failed += zip(unread.column("video_id").to_pylist(), unread.column(READ_ERROR).to_pylist())
            batch = batch.filter(pc.is_null(batch.column(READ_ERROR)))
        parts = batch.column("part")
        videos = [v for part in dict.fromkeys(parts.to_pylist())
                  for v in rows_to_videos(view_rows(batch.filter(pc.equal(parts, part)), part, self.setting),
                                          source="shard", errors=failed, check_finite=True)]
        good = []
        for v in videos:
            if self.feature_dim is not None and v.features.shape[1] != self.feature_dim:
                failed.append((v.video_id, f"shard: video '{v.video_id}': field 'features': "
                               f"D = {v.features.shape[1]}, the teacher expects D = {self.feature_dim}"))
            else:
                good.append(v)
        if not good:
            return failed, [], source
        try:
            return failed, self._run(good), source
        except Exception:  # noqa: BLE001 - isolate the failing video(s) by retrying one at a time
            done = []
            for v in good:
                try:
                    done += self._run([v])
                except Exception as e:  # noqa: BLE001 - one bad video is an error row, not a dead job
                    failed.append((v.video_id, f"inference failed: {type(e).__name__}: {e}"))
            return failed, done, source

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed, done, source = self.predict(batch)
        rows = [_error_pred_row(vid, reason, source[vid]) for vid, reason in failed]
        rows += [_pred_row(_unlabeled(v), p, source[v.video_id]) for v, p in done]
        return pa.Table.from_pylist(rows, schema=_PRED_SCHEMA)


def _error_row(video_id: str, round: int, teacher: str, reason: str, k: int) -> dict[str, Any]:
    return {**pseudo_row(video_id, round, teacher, [], [], [], [], [], error=reason), SOURCE_KEY: k}


def _label_row(video_id: str, make: Callable[[], tuple[Video, dict]], label_video: LabelFn, round: int,
               teacher: str, k: int) -> dict[str, Any]:
    """One OUT_SCHEMA row: ``label_video`` on ``make()``'s (video, prediction); a raise -> error row."""
    try:
        out = label_video(*make())
        row = pseudo_row(
            video_id, round, teacher, out["segments"], out["labels"], out["scores"], out["weights"],
            out["origins"], out.get("targets"), out.get("teacher_scores"), relaxed=out.get("relaxed", 0),
        )
        return {**row, SOURCE_KEY: k}
    except Exception as e:  # noqa: BLE001 - one bad video is an error row, not a dead job
        return _error_row(video_id, round, teacher, f"labeling failed: {type(e).__name__}: {e}", k)


class InferLabelStage(InferStage):
    """Actor: teacher inference and the recipe's labeling in one call, returning pseudo-label rows.

    For CPU actors: a separate labeling task would only add a hop (features and predictions through the
    object store) and compete with the actors for the same cores. Rows are the ones
    ``label_batch(InferStage(...)(batch))`` gives, in the same order.
    """

    def __init__(self, make_infer: Callable[[], InferFn], feature_dim: int | None, torch_threads: int,
                 setting: str, *, label_video: LabelFn, round: int, teacher: str) -> None:
        super().__init__(make_infer, feature_dim, torch_threads, setting)
        self.label_video, self.round, self.teacher = label_video, int(round), str(teacher)

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed, done, source = self.predict(batch)
        rows = [_error_row(vid, self.round, self.teacher, reason, source[vid]) for vid, reason in failed]
        rows += [_label_row(v.video_id, lambda v=v, p=p: (_unlabeled(v), p), self.label_video, self.round,
                            self.teacher, source[v.video_id]) for v, p in done]
        return pa.Table.from_pylist(rows, schema=OUT_SCHEMA)


def label_batch(batch: pa.Table, *, label_video: LabelFn, round: int, teacher: str) -> pa.Table:
    """Map task: prediction rows -> pseudo-label rows; a raising or invalid label_video -> error row."""
    failed = batch.filter(pc.is_valid(batch.column("error")))
    done = batch.filter(pc.is_null(batch.column("error")))
    rows = [_error_row(vid, round, teacher, reason, k) for vid, reason, k in
            zip(*(failed.column(n).to_pylist() for n in ("video_id", "error", SOURCE_KEY)))]
    videos = rows_to_videos(done.select(SHARD_SCHEMA.names))  # labeled false, no ground truth: _unlabeled
    for v, pred, k in zip(videos, done.column("prediction"), done.column(SOURCE_KEY).to_pylist()):
        rows.append(_label_row(v.video_id, lambda v=v, pred=pred: (v, decode_prediction(pred.as_py())), label_video,
                               round, teacher, k))
    return pa.Table.from_pylist(rows, schema=OUT_SCHEMA)


# ----------------------------------------------------------------------------------- output


def clean_output(out_dir: str) -> None:
    """Remove the output of an earlier run of the pass: output files are named per run, so re-running a
    round would otherwise add a second copy instead of overwriting. Only files of the pass's own layout
    (``shard=<k>/*.parquet``) are removed; any other file is refused (``DataError``), never deleted. The jobs
    write each pass into a fresh staging folder of their output (``raytal.core.outputs``), so this removes
    nothing there."""
    storage.makedirs(out_dir)
    root = storage.resolve(out_dir).rstrip("/") + "/"
    files = storage.list_files(out_dir)
    foreign = [f for f in files if not re.fullmatch(rf"{SOURCE_KEY}=\d+/[^/]+\.parquet", f[len(root):])]
    if foreign:
        raise DataError(f"{out_dir}: holds files that are not pseudo labels (e.g. {foreign[0]}): not removed; "
                        "give the pass a folder of its own")
    for f in files:
        storage.delete_file(f)


def summarize_output(out_dir: str) -> tuple[int, int, int, list[tuple[str, str]], dict[int, int], int]:
    """(rows, error rows, usable rows, first reasons, instances per class, relaxed) from the small output
    columns, one file at a time."""
    rows = errors = usable = relaxed = 0
    reasons: list[tuple[str, str]] = []
    per_class: dict[int, int] = {}
    for path in storage.list_files(out_dir, suffix=".parquet"):
        t = pq.read_table(storage.open_input_file(path), columns=["video_id", "instances", "targets", "teacher_scores",
                                                                  "relaxed", "error"])
        rows += t.num_rows
        relaxed += int(pc.sum(t.column("relaxed")).as_py() or 0)
        err = t.column("error")
        errors += t.num_rows - err.null_count
        if err.null_count < t.num_rows:
            bad = t.filter(pc.is_valid(err))
            reasons = sorted(reasons + list(zip(bad.column("video_id").to_pylist(), bad.column("error").to_pylist())))
            reasons = reasons[:MAX_REASONS]
        has = pc.or_(pc.greater(pc.list_value_length(t.column("instances")), 0),
                     pc.or_(pc.is_valid(t.column("targets")), pc.is_valid(t.column("teacher_scores"))))
        usable += int(pc.sum(pc.and_(has, pc.is_null(err))).as_py() or 0)
        flat = pc.list_flatten(t.column("instances"))
        labels = np.concatenate(
            [chunk.field("label_id").to_numpy(zero_copy_only=False) for chunk in flat.chunks] + [np.zeros(0, np.int32)]
        )
        ids, counts = np.unique(labels, return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            per_class[c] = per_class.get(c, 0) + n
    return rows, errors, usable, reasons, per_class, relaxed


def summary_of(spec: LabelSpec, check: InputCheck, start: float) -> PipelineSummary:
    """The pass's summary from its output (and a check that no video was lost)."""
    rows, errors, usable, reasons, per_class, relaxed = (
        summarize_output(spec.out_dir) if check.good else (0, 0, 0, [], {}, 0))
    if rows != check.videos:
        raise RuntimeError(f"pseudo-label pass wrote {rows} rows for {check.videos} input videos")
    return PipelineSummary(spec.out_dir, check.videos, rows, errors, usable, reasons, check.errors, per_class,
                           relaxed, time.perf_counter() - start)


def write_table(path: str, table: pa.Table) -> None:
    """One Parquet file (local or URI), atomically."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes(path, buf.getvalue().to_pybytes())


def write_source_rows(out_dir: str, table: pa.Table, name: str) -> None:
    """``table``'s rows (OUT_SCHEMA) into ``<out>/shard=<k>/<name>`` per source index k."""
    for k in sorted(set(table.column(SOURCE_KEY).to_pylist())):
        rows = table.filter(pc.equal(table.column(SOURCE_KEY), k)).drop_columns([SOURCE_KEY])
        write_table(storage.join(source_dir(out_dir, k), name), rows)


def write_outputs(tables: Iterable[pa.Table], write: Callable[[pa.Table, str], None], total: int, desc: str) -> None:
    """Each output table of a pass written as it comes (the i-th as ``part-<i>.parquet``), under one progress
    bar of the pass's videos. Both back-ends write this way: the rows of a table are the same whichever
    produced them, and nothing is held but the table being written."""
    with progress(total, desc, "video") as bar:
        for i, table in enumerate(tables):
            write(table, f"part-{i:07d}.parquet")
            bar.update(table.num_rows)


def run_in_process(inputs: list[InferenceInput], stage: Callable[[pa.Table], pa.Table],
                   write: Callable[[pa.Table, str], None], rows: int, desc: str,
                   read: Callable[[InferenceInput, int], Iterator[pa.Table]] = input_blocks) -> None:
    """The stage in this process, one input at a time, each block's output written as it comes."""
    tables = (stage(block) for item in inputs for block in read(item, rows))
    write_outputs(tables, write, sum(item.count for item in inputs), desc)


def label_in_process(spec: LabelSpec, make_infer: Callable[[], InferFn], label_video: LabelFn,
                     batch_size: int, torch_threads: int, feature_dim: int | None = None) -> PipelineSummary:
    """The labeling stage in this process: the rows the Ray pipeline writes, error rows included."""
    start = time.perf_counter()
    clean_output(spec.out_dir)
    check = check_inputs(spec)
    stage = InferLabelStage(make_infer, feature_dim, max(1, torch_threads), spec.setting, label_video=label_video,
                            round=spec.round, teacher=spec.teacher)
    run_in_process(check.good, stage, lambda table, name: write_source_rows(spec.out_dir, table, name), batch_size,
                   spec.name)
    return summary_of(spec, check, start)
