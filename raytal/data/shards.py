"""Parquet shards, the internal format, and the one codec between a row and a ``Video``.

Columns (``SCHEMA``): video_id, subset, duration (s), fps, feat_stride, num_frames, T, D,
features (float32 C-order bytes of [T, D], ``large_binary``), labeled (bool: may training use the
annotations?), annotations (list<struct{label_id int32, start float64, end float64}>, seconds),
video_labels (list<int32>, weak setting).

A *training row* is a shard row as a training stage reads it: its annotations may be pseudo labels
(the struct then also holds each instance's loss ``weight``; ``raytal.data.pseudo_io.join_pseudo_labels``),
with the dense ``TRAINING_COLUMNS`` (float32 [T, C] bytes, null when absent), and its ``labeled`` and
``video_labels`` as the part of the run it is read as sees them (``raytal.data.splits.view_rows``). Every stage turns rows into videos with ``rows_to_videos`` and videos into rows with
``video_to_row``, whatever carried the rows: a Parquet file, a Ray Data block or an inference batch.

Shard files are ``<out_dir>/part-NNNNN.parquet``; Ray Data reads them directly. Writing is streaming:
``write_shards`` holds at most one shard of videos, and gives the sha256 of
each file it writes (a run's data fingerprint, ``raytal.selftrain.run_record``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytal.core import storage
from raytal.core.errors import DataError, check_video_id, where
from raytal.data.features import MAX_ABS_FEATURE, check_features
from raytal.core.video import Video

ANNOTATION_TYPE = pa.struct([("label_id", pa.int32()), ("start", pa.float64()), ("end", pa.float64())])
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("subset", pa.string()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("feat_stride", pa.int32()),
        ("num_frames", pa.int32()),
        ("T", pa.int32()),
        ("D", pa.int32()),
        ("features", pa.large_binary()),
        ("labeled", pa.bool_()),
        ("annotations", pa.list_(ANNOTATION_TYPE)),
        ("video_labels", pa.list_(pa.int32())),
    ]
)
# What a training row adds (see the module docstring); C is the width of the dense arrays.
TRAINING_COLUMNS = [pa.field("C", pa.int32()), pa.field("targets", pa.large_binary()),
                    pa.field("teacher_scores", pa.large_binary())]
SHARD_PREFIX = "part-"
_SHARD_RE = re.compile(r"^part-\d{5,}\.parquet$")
# Random float features do not compress; the small columns do.
_COMPRESSION = {name: ("NONE" if name == "features" else "ZSTD") for name in SCHEMA.names}


def video_to_row(
    video: Video, feature_dim: int | None = None, check: bool = True, source: str | Path | None = None
) -> dict[str, Any]:
    """One ``Video`` (features loaded) -> a row dict in ``SCHEMA`` (features as bytes).

    With ``check`` the features are validated (2-D, D, finite, long enough for the annotations).
    """
    check_video_id(video.video_id, source)
    if video.features is None:
        raise DataError(f"{where(source, video.video_id, 'features')}: not loaded; cannot write a shard row")
    feats = np.ascontiguousarray(video.features, dtype=np.float32)
    if check:
        feats = check_features(feats, video, feature_dim, source)
    elif feats.ndim != 2:
        raise DataError(f"{where(source, video.video_id, 'features')}: expected [T, D], got {feats.shape}")
    segs = np.asarray(video.segments, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(video.labels).reshape(-1)
    if len(segs) != len(labels):
        raise DataError(f"{where(source, video.video_id, 'labels')}: {len(labels)} labels for {len(segs)} segments")
    return {
        "video_id": video.video_id,
        "subset": video.subset,
        "duration": float(video.duration),
        "fps": float(video.fps),
        "feat_stride": int(video.feat_stride),
        "num_frames": int(video.num_frames),
        "T": int(feats.shape[0]),
        "D": int(feats.shape[1]),
        "features": feats.tobytes(),
        "labeled": bool(video.labeled),
        "annotations": [
            {"label_id": int(c), "start": float(s), "end": float(e)} for (s, e), c in zip(segs, labels)
        ],
        "video_labels": [int(c) for c in np.asarray(video.video_labels).reshape(-1)],
    }


def videos_to_table(videos: Iterable[Video], feature_dim: int | None = None, check: bool = True) -> pa.Table:
    """Videos -> a ``pa.Table`` in ``SCHEMA`` (one row each)."""
    rows = [video_to_row(v, feature_dim, check) for v in videos]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _as_table(batch: Any) -> pa.Table:
    """pa.Table / RecordBatch / dict of columns (Ray Data 'numpy' or 'pyarrow' batches) -> pa.Table."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if isinstance(batch, dict):
        cols = {}
        for name in SCHEMA.names:
            if name not in batch:
                raise DataError(f"shard batch: column '{name}' missing (have {sorted(batch)})")
            col = batch[name]
            if isinstance(col, (pa.Array, pa.ChunkedArray)):
                cols[name] = col
            else:  # numpy object arrays of lists/dicts/arrays: normalise to plain Python values
                vals = [v.tolist() if isinstance(v, np.ndarray) and v.dtype != object else v for v in col]
                vals = [list(v) if isinstance(v, np.ndarray) else v for v in vals]
                cols[name] = pa.array(vals, type=SCHEMA.field(name).type)
        return pa.table(cols)
    raise TypeError(f"rows_to_videos: expected a pyarrow Table/RecordBatch or dict of columns, got {type(batch)}")


def _dense(column: pa.ChunkedArray | None, i: int, T: int, C: int) -> np.ndarray | None:
    raw = None if column is None else column[i].as_buffer()
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).reshape(T, C).copy()


def rows_to_videos(
    batch: Any,
    source: str | Path | None = None,
    errors: list[tuple[str, str]] | None = None,
    check_finite: bool = False,
) -> list[Video]:
    """Shard or training rows (pa.Table, RecordBatch or dict of columns) -> ``Video`` records with features
    [T, D] (and, from training rows, instance weights and dense targets / teacher scores).

    A row whose feature bytes do not match T*D*4 (or, with ``check_finite``, holds NaN/Inf or values beyond
    ``MAX_ABS_FEATURE``) raises
    ``DataError`` naming ``source`` (else the row's ``path`` column, when there is one), the video and the field;
    if ``errors`` is a list, the problem is
    appended to it as (video_id, message) and the row is skipped instead (error rows of a pipeline).
    Arrays are copied out of the Arrow buffers (writable, and do not pin the whole batch).
    """
    table = _as_table(batch)
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise DataError(f"{where(source, None, missing[0])}: column missing from shard")
    small = [n for n in (*SCHEMA.names, "C") if n in table.column_names and n not in ("features", "annotations")]
    cols = {n: table.column(n).to_pylist() for n in small}
    paths = table.column("path").to_pylist() if source is None and "path" in table.column_names else None
    feats_col = table.column("features")
    dense = {n: table.column(n) if n in table.column_names else None for n in ("targets", "teacher_scores")}
    ann = table.column("annotations").combine_chunks()
    # Vectorised annotation decode: one flat struct array + list offsets for the whole batch.
    flat = ann.flatten()
    offsets = ann.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a sliced/filtered list array keeps absolute offsets; flatten() does not
    starts = flat.field("start").to_numpy(zero_copy_only=False)
    ends = flat.field("end").to_numpy(zero_copy_only=False)
    lids = flat.field("label_id").to_numpy(zero_copy_only=False)
    weighted = flat.type.get_field_index("weight") >= 0
    weights = flat.field("weight").to_numpy(zero_copy_only=False).astype(np.float32) if weighted else None
    out: list[Video] = []
    for i in range(table.num_rows):
        vid = cols["video_id"][i]
        source = paths[i] if paths else source
        try:
            T, D = cols["T"][i], cols["D"][i]
            raw = feats_col[i].as_buffer()
            if raw is None or T is None or D is None or T <= 0 or D <= 0 or raw.size != T * D * 4:
                size = None if raw is None else raw.size
                raise DataError(
                    f"{where(source, vid, 'features')}: {size} bytes, expected T*D*4 = {T}*{D}*4 for float32 [T, D]"
                )
            feats = np.frombuffer(raw, dtype=np.float32).reshape(T, D).copy()
            if check_finite and not np.isfinite(feats).all():
                raise DataError(f"{where(source, vid, 'features')}: NaN/Inf values")
            if check_finite and np.abs(feats).max() > MAX_ABS_FEATURE:
                raise DataError(f"{where(source, vid, 'features')}: values beyond +-{MAX_ABS_FEATURE:g} (up to "
                                f"{float(np.abs(feats).max()):g}); expected network features")
            lo, hi = offsets[i], offsets[i + 1]
            C = cols["C"][i] if "C" in cols else 0
            out.append(
                Video(
                    video_id=vid,
                    subset=cols["subset"][i],
                    duration=float(cols["duration"][i]),
                    fps=float(cols["fps"][i]),
                    feat_stride=int(cols["feat_stride"][i]),
                    num_frames=int(cols["num_frames"][i]),
                    features=feats,
                    segments=np.stack([starts[lo:hi], ends[lo:hi]], axis=1).astype(np.float64),
                    labels=lids[lo:hi].astype(np.int64),
                    labeled=bool(cols["labeled"][i]),
                    video_labels=np.asarray(cols["video_labels"][i] or [], dtype=np.int64),
                    weights=None if weights is None else weights[lo:hi].copy(),
                    targets=_dense(dense["targets"], i, T, C),
                    teacher_scores=_dense(dense["teacher_scores"], i, T, C),
                )
            )
        except DataError as e:
            if errors is None:
                raise
            errors.append((str(vid), str(e)))
    return out


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}.parquet"


def _write_table(table: pa.Table, path: str) -> str:
    """One shard file, atomically (a crash never leaves a truncated file under a shard name); returns the
    sha256 of its bytes, computed from the buffer it writes (a dataset records it: no second read)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression=_COMPRESSION)
    data = buf.getvalue().to_pybytes()
    storage.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def write_shards(
    videos: Iterable[Video],
    out_dir: str | Path,
    rows_per_shard: int = 256,
    feature_dim: int | None = None,
    check: bool = True,
    hashes: dict[str, str] | None = None,
) -> list[str]:
    """Stream videos into ``out_dir/part-NNNNN.parquet`` files of ``rows_per_shard`` rows each (local or URI).

    Holds at most one shard of videos in memory (plus the set of ids seen, to refuse duplicates). ``out_dir``
    must hold no shard files yet: an earlier write's files would be read with these, and which of them are
    stale is not this function's to decide (``jobs/make_dataset.py`` writes into a fresh staging folder and
    replaces its earlier output through its manifest, ``raytal.core.outputs``). ``hashes``, when given,
    receives each written path's sha256. Returns the written paths in order.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    out = storage.resolve(out_dir)
    storage.makedirs(out)
    earlier = [f for f in storage.list_files(out, suffix=".parquet", recursive=False)
               if _SHARD_RE.match(storage.name(f))]
    if earlier:
        raise DataError(f"{out}: already holds shard files ({storage.name(earlier[0])}, ...): write the shards into a "
                        "folder without any")
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    paths: list[str] = []

    def flush() -> None:
        path = storage.join(out, shard_name(len(paths)))
        sha = _write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
        if hashes is not None:
            hashes[path] = sha
        paths.append(path)
        rows.clear()

    for v in videos:
        if v.video_id in seen:
            raise DataError(f"{where(out, v.video_id, 'video_id')}: duplicate video id in the shard set")
        seen.add(v.video_id)
        rows.append(video_to_row(v, feature_dim, check, out))
        if len(rows) >= rows_per_shard:
            flush()
    if rows:
        flush()
    return paths


def list_shards(source: str | Path | Iterable[str | Path]) -> list[str]:
    """A directory (searched recursively, sorted), a file, or an explicit list of files -> shard paths
    (local paths or storage URIs)."""
    if isinstance(source, (str, Path)):
        if storage.is_dir(source):
            return storage.list_files(storage.resolve(source), suffix=".parquet")
        if storage.is_file(source):
            return [storage.resolve(source)]
        raise DataError(f"{source}: shard directory or file not found")
    return [storage.resolve(s) for s in source]


def check_unique_videos(files: Iterable[str]) -> None:
    """Every video id in one place across shard ``files`` (a file named twice counts twice): ``DataError``
    naming the video and both places, since a job would otherwise give it two rows (two predictions, two
    pseudo labels) and keep one silently. Reads the ``video_id`` columns only; an unreadable file is skipped
    (its reader reports it)."""
    seen: dict[str, tuple[str, int]] = {}
    given: set[str] = set()
    for path in files:
        if path in given:
            raise DataError(f"{path}: shard file given twice (its videos would each get two rows)")
        given.add(path)
        try:
            ids = open_shard(path).read(columns=["video_id"]).column("video_id").to_pylist()
        except DataError:
            continue
        for row, vid in enumerate(ids):
            if vid in seen:
                where_before, row_before = seen[vid]
                raise DataError(f"{where(path, vid, 'video_id')}: row {row}, and also row {row_before} of "
                                f"{where_before}: each video must be given once (it would get two rows and one "
                                "would silently win)")
            seen[vid] = (path, row)


def open_shard(path: str) -> pq.ParquetFile:
    """A shard file opened for reading; a missing, truncated or foreign file raises DataError naming it."""
    if not storage.is_file(path):
        raise DataError(f"{path}: shard file not found")
    try:
        pf = pq.ParquetFile(storage.open_input_file(path))
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet shard (truncated or corrupt?): {e}") from e
    missing = [n for n in SCHEMA.names if n not in pf.schema_arrow.names]
    if missing:
        raise DataError(f"{where(path, None, missing[0])}: column missing; not a raytal shard")
    return pf


def read_shard_tables(
    path: str, ids: Iterable[str] | None = None, columns: list[str] | None = None, rows: int | None = None,
) -> Iterator[pa.Table]:
    """The rows of one shard file as tables of ``rows`` videos (the last one shorter; one row group at a time
    when None), keeping only the videos in ``ids`` when given (filtered before any feature is decoded). The
    tables of ``rows`` are runs of the kept videos, not of the file's rows: the pseudo-label stage's
    inference batches, full however few of a file's videos a source takes."""
    pf = open_shard(path)
    keep = None if ids is None else pa.array(sorted(set(ids)), type=pa.string())
    try:
        batches = (
            pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=rows, columns=columns or SCHEMA.names)
        ) if rows else (pf.read_row_group(rg, columns=columns or SCHEMA.names) for rg in range(pf.num_row_groups))
        pending: list[pa.Table] = []
        for table in batches:
            if keep is not None:
                table = table.filter(pc.is_in(table.column("video_id"), value_set=keep))
            if not rows:
                if table.num_rows:
                    yield table
                continue
            pending.append(table)
            while sum(t.num_rows for t in pending) >= rows:
                merged = pa.concat_tables(pending)
                yield merged.slice(0, rows)
                pending = [merged.slice(rows)]
        if rows and sum(t.num_rows for t in pending):
            yield pa.concat_tables(pending)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: unreadable part (truncated or corrupt?): {e}") from e


def read_shards(
    source: str | Path | Iterable[str | Path],
    ids: Iterable[str] | None = None,
    check_finite: bool = False,
) -> Iterator[Video]:
    """Yield the ``Video`` records of the shards (features loaded), one row group at a time, keeping
    only the videos in ``ids`` when given. A missing, truncated or corrupt file, or one without the
    shard columns, raises ``DataError`` naming the file."""
    keep = None if ids is None else frozenset(ids)
    for path in list_shards(source):
        for table in read_shard_tables(path, keep):
            yield from rows_to_videos(table, path, check_finite=check_finite)
