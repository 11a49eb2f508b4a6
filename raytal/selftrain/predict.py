"""A trained checkpoint on new videos: the inference stage of the pseudo-label pipeline, writing detections.

Inputs are shard files (any subset of a dataset, or a pool) or a directory of feature files
``<id>.npy`` (local or a storage URI), read in units of one shard file or ``FILES_PER_UNIT`` feature
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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raytal.core import storage
from raytal.core.errors import DataError
from raytal.core.video import Video
from raytal.data.features import check_features, read_npy
from raytal.data.pool import VideoInfo, features_span
from raytal.data.shards import SCHEMA as SHARD_SCHEMA
from raytal.data.shards import open_shard, video_to_row
from raytal.selftrain.pseudo_stage import READ_ERROR, UNIT_COLUMNS, InferStage, Unit

FILES_PER_UNIT = 64  # feature files per read task
DETECTION = pa.struct([("label_id", pa.int32()), ("start", pa.float64()), ("end", pa.float64()),
                       ("score", pa.float32())])
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


def shard_units(files: list[str]) -> list[Unit]:
    return [Unit(k, "test", f, None, open_shard(f).metadata.num_rows) for k, f in enumerate(files)]


def feature_units(features_dir: str) -> list[Unit]:
    """Units of ``FILES_PER_UNIT`` feature files: ``Unit.file`` is the directory, ``Unit.ids`` the ids."""
    files = storage.list_files(storage.resolve(features_dir), suffix=".npy", recursive=False)
    if not files:
        raise DataError(f"{features_dir}: no .npy feature files (expected <video_id>.npy, float32 [T, D])")
    ids = [storage.name(f)[: -len(".npy")] for f in files]
    return [Unit(k, "test", storage.resolve(features_dir), tuple(ids[i:i + FILES_PER_UNIT]), len(ids[i:i + FILES_PER_UNIT]))
            for k, i in enumerate(range(0, len(ids), FILES_PER_UNIT))]


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


def read_feature_unit(unit: Unit, rows: int, *, grid: Grid, info: dict[str, VideoInfo]) -> Iterator[pa.Table]:
    """A unit of feature files as shard rows; a file that cannot be read is a row with its reason."""
    out = []
    for vid in unit.ids:
        try:
            row = {**_feature_row(unit.file, vid, grid, info), READ_ERROR: None}
        except DataError as e:
            row = {"video_id": vid, READ_ERROR: str(e)}
        out.append({**row, "shard": unit.k, "part": unit.part})
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


def summarize(out_dir: str, start: float) -> PredictSummary:
    videos = errors = detections = 0
    first: list[tuple[str, str]] = []
    for path in storage.list_files(out_dir, suffix=".parquet"):
        t = pq.read_table(storage.open_input_file(path))
        videos += t.num_rows
        for vid, dets, err in zip(*(t.column(n).to_pylist() for n in DETECTIONS_SCHEMA.names)):
            detections += len(dets)
            if err is not None:
                errors += 1
                first = sorted(first + [(vid, err)])[:5]
    return PredictSummary(videos, errors, detections, first, time.perf_counter() - start)


# The results JSON starts with this (its first key), so a later job knows it may replace the file
# (raytal.core.outputs.check_output_file); the format's readers ignore the extra key.
RESULTS_WRITER = "raytal jobs/predict.py"
RESULTS_SIGNATURE = b'{"written_by": "raytal'


def write_results_json(out_dir: str, classes: list[str], path: str) -> None:
    """The detections of ``out_dir`` in the ActivityNet results format; error rows under ``errors``."""
    results: dict[str, list] = {}
    errors: dict[str, str] = {}
    for f in storage.list_files(out_dir, suffix=".parquet"):
        t = pq.read_table(storage.open_input_file(f))
        for vid, dets, err in zip(*(t.column(n).to_pylist() for n in DETECTIONS_SCHEMA.names)):
            if vid in results:  # inputs are checked for repeated videos first; never one silent winner
                raise DataError(f"{f}: video '{vid}': predicted twice; each video must be given once")
            if err is not None:
                errors[vid] = err
            results[vid] = [{"label": classes[d["label_id"]] if d["label_id"] < len(classes) else str(d["label_id"]),
                             "segment": [d["start"], d["end"]], "score": d["score"]} for d in dets]
    storage.write_text(path, json.dumps({"written_by": RESULTS_WRITER, "version": "VERSION 1.3",
                                         "results": dict(sorted(results.items())),
                                         "external_data": {"used": False}, "errors": errors}))
