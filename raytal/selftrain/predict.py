"""A trained checkpoint on new videos: the inference stage of the pseudo-label pipeline, writing detections.

Inputs are shard files (any subset of a dataset, or a pool) or a directory of feature files
``<id>.npy`` (local or a storage URI), read in inputs of one shard file or ``FILES_PER_INPUT`` feature
files. ``DetectStage`` is the pipeline's inference actor (``InferStage``: the model is loaded once per
actor) returning each video's test-time detections (``raytal.selftrain.teacher.Predictor``: the run's NMS
or GauFuse fusion) instead of pseudo labels. A video that cannot be read or predicted (a missing or
non-finite feature file, a wrong width) becomes a row with ``error`` set; nothing is dropped.

Output: Parquet files of ``DETECTIONS_SCHEMA`` (``video_id``, ``detections``, ``error``), which
``write_results_json`` turns into the ActivityNet results format (seconds, labels by name) that
``jobs/evaluate.py`` and the official kits read.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytal.core import storage
from raytal.core.errors import DataError
from raytal.core.segments import SegmentTable
from raytal.core.video import Video
from raytal.data.features import check_features, read_npy
from raytal.data.pool import VideoInfo, features_span
from raytal.data.shards import SCHEMA as SHARD_SCHEMA
from raytal.data.shards import open_shard, video_to_row
from raytal.selftrain.pseudo_stage import READ_ERROR, UNIT_COLUMNS, InferStage
from raytal.selftrain.spec import InferenceInput

FILES_PER_INPUT = 64  # feature files per read task
DETECTION = pa.struct([("label_id", pa.int32()), ("start", pa.float64()), ("end", pa.float64()),
                       ("score", pa.float64())])
DETECTIONS_SCHEMA = pa.schema([("video_id", pa.string()), ("detections", pa.list_(DETECTION)),
                               ("error", pa.string())])
_READ_SCHEMA = pa.schema([*SHARD_SCHEMA, *UNIT_COLUMNS, pa.field(READ_ERROR, pa.string())])


class DetectStage(InferStage):
    """Actor: a checkpoint's detections on batches of unit rows (``make_infer`` builds a Predictor)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        failed, done, _ = self.predict(batch)
        rows = [{"video_id": vid, "detections": [], "error": reason} for vid, reason in failed]
        for v, p in done:
            dets = [{"label_id": int(c), "start": float(s), "end": float(e), "score": float(q)}
                    for (s, e), c, q in zip(np.asarray(p["segments"]).reshape(-1, 2), p["labels"], p["scores"])]
            rows.append({"video_id": v.video_id, "detections": dets, "error": None})
        return pa.Table.from_pylist(rows, schema=DETECTIONS_SCHEMA)


@dataclass(frozen=True)
class Grid:
    """How feature files map to time: the training dataset's snippet grid."""

    feature_dim: int
    feat_stride: int
    num_frames: int
    fps: float


def shard_inputs(files: list[str]) -> list[InferenceInput]:
    return [InferenceInput(k, "test", f, None, open_shard(f).metadata.num_rows) for k, f in enumerate(files)]


def feature_inputs(features_dir: str) -> list[InferenceInput]:
    """Inputs of ``FILES_PER_INPUT`` feature files: ``file`` is the directory, ``ids`` the ids."""
    files = storage.list_files(storage.resolve(features_dir), suffix=".npy", recursive=False)
    if not files:
        raise DataError(f"{features_dir}: no .npy feature files (expected <video_id>.npy, float32 [T, D])")
    ids = [storage.name(f)[: -len(".npy")] for f in files]
    return [InferenceInput(k, "test", storage.resolve(features_dir), tuple(ids[i:i + FILES_PER_INPUT]),
                           len(ids[i:i + FILES_PER_INPUT])) for k, i in enumerate(range(0, len(ids), FILES_PER_INPUT))]


def _feature_row(directory: str, vid: str, grid: Grid, info: dict[str, VideoInfo]) -> dict:
    path = storage.join(directory, f"{vid}.npy")
    row = info.get(vid)
    fps = row.fps if row is not None and row.fps else grid.fps
    video = Video(vid, "test", 0.0, fps, grid.feat_stride, grid.num_frames, labeled=False)
    video.features = check_features(read_npy(path, vid), video, grid.feature_dim, path)
    T = video.features.shape[0]
    video.duration = row.duration if row is not None and row.duration else features_span(T, grid.feat_stride,
                                                                                          grid.num_frames, fps)
    return video_to_row(video, grid.feature_dim, check=False, source=path)


def read_feature_input(item: InferenceInput, rows: int, *, grid: Grid, info: dict[str, VideoInfo]
                       ) -> Iterator[pa.Table]:
    """An input of feature files as shard rows; a file that cannot be read is a row with its reason."""
    out = []
    for vid in item.ids:
        try:
            row = {**_feature_row(item.file, vid, grid, info), READ_ERROR: None}
        except DataError as e:
            row = {"video_id": vid, READ_ERROR: str(e)}
        out.append({**row, "shard": item.k, "part": item.part})
        if len(out) == rows:
            yield pa.Table.from_pylist(out, schema=_READ_SCHEMA)
            out = []
    if out:
        yield pa.Table.from_pylist(out, schema=_READ_SCHEMA)


@dataclass
class PredictSummary:
    videos: int
    errors: int
    detections: int
    first_errors: list[tuple[str, str]]
    elapsed: float

    def format(self, out: str) -> str:
        lines = [f"{self.videos} videos, {self.errors} error rows, {self.detections} detections -> {out} "
                 f"({self.elapsed:.1f} s)"]
        return "\n".join(lines + [f"  error {vid}: {reason}" for vid, reason in self.first_errors])


def read_detections(out_dir: str) -> pa.Table:
    """Every row of a detections directory, by video id: the same order whichever back-end wrote it (the
    evaluation breaks score ties by row order)."""
    tables = [pq.read_table(storage.open_input_file(f)) for f in storage.list_files(out_dir, suffix=".parquet")]
    table = pa.concat_tables(tables) if tables else DETECTIONS_SCHEMA.empty_table()
    return table.sort_by("video_id")


def detections_of(table: pa.Table) -> SegmentTable:
    return SegmentTable.from_arrow(table.column("video_id"), table.column("detections"), with_scores=True)


def summarize(out_dir: str, start: float) -> PredictSummary:
    """Counts of a detections directory, one file at a time (any size)."""
    videos = errors = detections = 0
    first: list[tuple[str, str]] = []
    for path in storage.list_files(out_dir, suffix=".parquet"):
        t = pq.read_table(storage.open_input_file(path))
        bad = t.filter(pc.is_valid(t.column("error")))
        videos, errors = videos + t.num_rows, errors + bad.num_rows
        detections += int(pc.sum(pc.list_value_length(t.column("detections"))).as_py() or 0)
        first = sorted(first + list(zip(bad.column("video_id").to_pylist(), bad.column("error").to_pylist())))[:5]
    return PredictSummary(videos, errors, detections, first, time.perf_counter() - start)


# The results JSON of jobs/predict.py starts with this (its first key), so a later job knows it may replace the
# file (raytal.core.outputs.check_output_file); the format's readers ignore the extra key.
RESULTS_WRITER = "raytal jobs/predict.py"
RESULTS_SIGNATURE = b'{"written_by": "raytal'


def results_json(pred: SegmentTable, ids: list[str], classes: list[str], errors: dict[str, str] | None = None) -> dict:
    """Detections in the ActivityNet results format (seconds, labels by name): what ``jobs/evaluate.py``
    and the official evaluation kits read. Every video predicted on has an entry, possibly empty; videos
    that could not be read are listed under ``errors``."""
    results: dict[str, list] = {vid: [] for vid in ids}
    for vid, (s, e), lab, score in zip(pred.video, pred.segments, pred.labels, pred.scores):
        name = classes[int(lab)] if lab < len(classes) else str(int(lab))
        results[vid].append({"label": name, "segment": [float(s), float(e)], "score": float(score)})
    out = {"version": "VERSION 1.3", "results": results, "external_data": {"used": False}}
    return out if errors is None else {**out, "errors": errors}


def write_results_json(table: pa.Table, classes: list[str], path: str) -> None:
    """The detections of ``table`` (``read_detections``) as an ActivityNet results file."""
    ids = table.column("video_id").to_pylist()
    repeated = sorted(v for v, n in Counter(ids).items() if n > 1)
    if repeated:  # inputs are checked for repeated videos first; never one silent winner
        raise DataError(f"{path}: video '{repeated[0]}': predicted twice; each video must be given once")
    errors = table.filter(pc.is_valid(table.column("error")))
    storage.write_text(path, json.dumps({"written_by": RESULTS_WRITER, **results_json(
        detections_of(table), ids, classes,
        dict(zip(errors.column("video_id").to_pylist(), errors.column("error").to_pylist())))}))
