"""Where an extraction writes, and the record that lets a killed or repeated one resume.

An output directory ``OUT`` (local or a storage URI) holds, for ``format="npy"``::

    OUT/<video_id>.npy            float32 [T, D] (raytal's feature files: make_dataset.py --unlabeled-features OUT)
    OUT/video_info.csv            video_id, duration, fps, feat_stride, num_frames, T, D, frames, source
                                  (make_dataset.py --video-info reads it)
    OUT/errors.csv                video_id, source, error: the videos that could not be extracted
    OUT/extract.json              the settings (backbone, weights, clip geometry, D) every re-run must repeat
    OUT/extract_log/<batch>.json  the record of each written batch: its videos' source, size, mtime and grid

and for ``format="shards"`` Parquet shards ``OUT/extract-<batch>.parquet`` in raytal's shard schema (subset
``unlabeled``, not labeled: a dataset's pool) instead of the .npy files.

Resuming: a video is skipped when the record holds it, from the same path with the same size and
modification time, and its output is there. Any other video of the input is extracted again; its old
output, if the record says this job wrote one, is removed first (the .npy file, or its row of the shard),
so no stale features survive beside new ones. Each batch's record is written before its outputs, so an
output is never there without the record that proves the job wrote it; the job never removes or replaces
a file its record does not name, and refuses to start where such a file is in the way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytal.core import storage
from raytal.core.errors import InputError, RunStateError
from raytal.core.jsonfile import read_json
from raytal.core.video import Video
from raytal.data.features import feature_path, save_features
from raytal.data.pool import POOL_SUBSET
from raytal.data.shards import SCHEMA, open_shard, video_to_row
from raytal.video.stages import Extracted
from raytal.video.sources import VideoFile

FORMATS = ("npy", "shards")
SETTINGS_FILE = "extract.json"
LOG_DIR = "extract_log"
VIDEO_INFO_FILE = "video_info.csv"
ERRORS_FILE = "errors.csv"
SHARD_PREFIX = "extract-"
INFO_COLUMNS = ["video_id", "duration", "fps", "feat_stride", "num_frames", "T", "D", "frames", "source"]
# Features do not compress; the small columns do (as raytal.data.shards writes them).
_COMPRESSION = {n: "NONE" if n == "features" else "ZSTD" for n in SCHEMA.names}


@dataclass
class OutputSummary:
    written: int  # videos with features in the output, this run and earlier ones
    errors: list[tuple[str, str]]  # (source, why) of every video without features
    skipped: int  # videos found already extracted at the start of this run
    extracted: int  # videos written by this run


_ENTRY_KEYS = {"video_id", "source", "size", "mtime_ns", "error"}


def _read_log(path: str) -> dict:
    log = read_json(path, RunStateError)
    if not (isinstance(log, dict) and isinstance(log.get("videos"), list)
            and all(isinstance(e, dict) and _ENTRY_KEYS <= set(e) for e in log["videos"])):
        raise RunStateError(f"{path}: not an extraction record (expected {{file, videos: [{{{', '.join(sorted(_ENTRY_KEYS))}, "
                            "...}]}}); restore it, or give another output directory")
    return log


def _leaves(tree: object, prefix: str = "") -> dict[str, object]:
    """A nested JSON object as {"a.b": value} (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def batch_name(videos: list[VideoFile]) -> str:
    """A batch's name: a hash of its sources, so batches of different runs never share a file."""
    return hashlib.sha256("\n".join(v.path for v in videos).encode()).hexdigest()[:20]


class FeatureOutput:
    """The output directory of one extraction (module docstring): ``start`` -> ``write`` per batch -> ``finish``."""

    def __init__(self, out: str, fmt: str, settings: dict, feat_stride: int, num_frames: int) -> None:
        if fmt not in FORMATS:
            raise InputError(f"output format {fmt!r}: expected one of {FORMATS}")
        self.out, self.fmt, self.settings = storage.resolve(out), fmt, settings
        self.feat_stride, self.num_frames = feat_stride, num_frames
        self.log_dir = storage.join(self.out, LOG_DIR)
        self.skipped = self.extracted = 0

    # ----------------------------------------------------------------------------- the record

    def _logs(self) -> Iterator[tuple[str, dict]]:
        if not storage.is_dir(self.log_dir):
            return
        for path in storage.list_files(self.log_dir, suffix=".json", recursive=False):
            yield path, _read_log(path)

    def _output_of(self, log: dict) -> str | None:
        return storage.join(self.out, log["file"]) if log.get("file") else None

    def recorded_files(self) -> set[str]:
        """The shard files the record says this job wrote."""
        return {self._output_of(log) for _, log in self._logs() if log.get("file")}

    def _check_settings(self) -> None:
        path = storage.join(self.out, SETTINGS_FILE)
        if storage.is_file(path):
            before, now = _leaves(read_json(path, RunStateError)), _leaves(self.settings)
            changed = [f"{k} was {before.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(before) | set(now))
                       if before.get(k) != now.get(k)]
            if changed:
                raise RunStateError(f"{path}: {self.out} holds features extracted with other settings ("
                                    + "; ".join(changed) + "): give another output directory, or the same settings")
        else:
            ours = [storage.join(self.out, n) for n in (VIDEO_INFO_FILE, ERRORS_FILE, LOG_DIR)]
            for p in ours:
                if storage.exists(p):
                    raise InputError(f"{p}: in the way of a new extraction (no {SETTINGS_FILE} says one wrote it): "
                                     "move it, or give another output directory")
            storage.write_text(path, json.dumps(self.settings, indent=1, sort_keys=True))

    def start(self, videos: list[VideoFile]) -> list[VideoFile]:
        """The videos still to extract, in input order; removes this job's stale outputs of them first.
        Refuses an output directory of other settings, or holding a file in the way that the job did not write."""
        storage.makedirs(self.out)
        self._check_settings()
        present = set(storage.list_files(self.out, recursive=False)) if storage.is_dir(self.out) else set()
        recorded: dict[str, tuple[str, dict, dict]] = {}  # video id -> (log path, log, entry)
        for path, log in self._logs():
            for entry in log["videos"]:
                recorded[entry["video_id"]] = (path, log, entry)
        pending, stale = [], {}
        for v in videos:
            got = recorded.get(v.video_id)
            if got is not None:
                _, log, e = got
                out = self._output_of(log) if self.fmt == "shards" else (
                    feature_path(self.out, v.video_id) if e["error"] is None else None)
                if (e["error"] is None and (e["source"], e["size"], e["mtime_ns"]) == (v.path, v.size, str(v.mtime_ns))
                        and out in present):
                    self.skipped += 1
                    continue
                stale.setdefault(got[0], set()).add(v.video_id)
            elif self.fmt == "npy" and feature_path(self.out, v.video_id) in present:
                raise InputError(f"{feature_path(self.out, v.video_id)}: a feature file this extraction did not write "
                                 f"is in the way of video '{v.video_id}' ({v.path}): move it, or give another --out")
            pending.append(v)
        for log_path, ids in stale.items():
            self._forget(log_path, ids)
        return pending

    def _forget(self, log_path: str, ids: set[str]) -> None:
        """Remove the outputs of ``ids`` that the record ``log_path`` says this job wrote, then their entries."""
        log = _read_log(log_path)
        keep = [e for e in log["videos"] if e["video_id"] not in ids]
        if self.fmt == "npy":
            for vid in ids:
                storage.delete_file(feature_path(self.out, vid), missing_ok=True)
        elif log.get("file"):
            shard = self._output_of(log)
            if storage.is_file(shard):
                if keep:
                    table = pq.read_table(storage.open_input_file(shard))
                    mask = pc.invert(pc.is_in(table.column("video_id"), value_set=pa.array(sorted(ids), pa.string())))
                    self._write_shard(shard, table.filter(mask))
                else:
                    storage.delete_file(shard)
        if keep:
            storage.write_text(log_path, json.dumps({**log, "videos": keep}))
        else:
            storage.delete_file(log_path)

    # ---------------------------------------------------------------------------------- writing

    def _write_shard(self, path: str, table: pa.Table) -> None:
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression=_COMPRESSION)
        storage.write_bytes(path, buf.getvalue().to_pybytes())

    def _video(self, r: Extracted) -> Video:
        return Video(r.video.video_id, POOL_SUBSET, r.duration, r.fps, self.feat_stride, self.num_frames,
                     features=r.features, labeled=False)

    def write(self, batch: list[Extracted]) -> None:
        """One batch: its record first, then its outputs (each file atomic)."""
        name = batch_name([r.video for r in batch])
        good = [r for r in batch if r.error is None]
        file = f"{SHARD_PREFIX}{name}.parquet" if self.fmt == "shards" and good else None
        entries = [{"video_id": r.video.video_id, "source": r.video.path, "size": r.video.size,
                    # a string: nanoseconds since 1970 have 19 digits, more than a JSON reader accepts as a number
                    "mtime_ns": str(r.video.mtime_ns), "duration": r.duration, "fps": r.fps, "frames": r.frames,
                    "T": None if r.features is None else int(r.features.shape[0]),
                    "D": None if r.features is None else int(r.features.shape[1]),
                    "error": r.error, "warning": r.warning} for r in batch]
        storage.write_text(storage.join(self.log_dir, f"{name}.json"), json.dumps({"file": file, "videos": entries}))
        if self.fmt == "npy":
            for r in good:
                save_features(self.out, r.video.video_id, r.features)
        elif good:
            rows = [video_to_row(self._video(r), check=False) for r in good]
            self._write_shard(storage.join(self.out, file), pa.Table.from_pylist(rows, schema=SCHEMA))
        self.extracted += len(good)

    def finish(self) -> OutputSummary:
        """``video_info.csv`` and ``errors.csv`` for every video of the record (this run's and earlier runs')."""
        info = io.StringIO()
        errors = io.StringIO()
        info_csv, errors_csv = csv.writer(info, lineterminator="\n"), csv.writer(errors, lineterminator="\n")
        info_csv.writerow(INFO_COLUMNS)
        errors_csv.writerow(["video_id", "source", "error"])
        written, failed = 0, []
        for _, log in sorted(self._logs(), key=lambda pl: pl[0]):
            for e in log["videos"]:
                if e["error"] is None:
                    info_csv.writerow([e["video_id"], repr(e["duration"]), repr(e["fps"]), self.feat_stride,
                                       self.num_frames, e["T"], e["D"], e["frames"], e["source"]])
                    written += 1
                else:
                    errors_csv.writerow([e["video_id"], e["source"], e["error"]])
                    failed.append((e["source"], e["error"]))
        storage.write_text(storage.join(self.out, VIDEO_INFO_FILE), info.getvalue())
        storage.write_text(storage.join(self.out, ERRORS_FILE), errors.getvalue())
        return OutputSummary(written, sorted(failed), self.skipped, self.extracted)


def check_shard_ids(directory: str, ids: set[str], ours: set[str]) -> None:
    """Refuse when a shard under ``directory`` that this job did not write (not in ``ours``) holds one of ``ids``:
    the dataset would hold the video twice."""
    if not storage.is_dir(directory):
        return
    for path in storage.list_files(directory, suffix=".parquet"):
        if path in ours:
            continue
        held = open_shard(path).read(columns=["video_id"]).column("video_id")
        clash = pc.filter(held, pc.is_in(held, value_set=pa.array(sorted(ids), pa.string()))).to_pylist()
        if clash:
            raise InputError(f"{path}: already holds video '{clash[0]}' (and {len(clash) - 1} more of the input): "
                             "a dataset holds each video once; rename the video files or leave them out")
