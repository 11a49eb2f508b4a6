"""Pseudo-label Parquet files (docs/design.md §3 "Pseudo labels"): one row per unlabeled video of a round.

Columns (``PSEUDO_SCHEMA``): video_id, round, teacher (checkpoint id), instances
(list<struct{label_id, start, end, score, weight, origin}>, seconds), targets (dense LinPro labels,
float16 C-order bytes of [T, C], null when absent), teacher_scores (NTC teacher snippet scores,
float32 bytes of [T, C], null when absent; float32 because they are soft training targets), T and C
(shape of those arrays, 0 when both are absent), relaxed (how many relaxed LPs this video needed),
error (null, or why the video has no pseudo labels). Writers (the Ray pipeline) build rows with
``pseudo_row``; ``read_pseudo_labels`` checks them, training readers join them to the shard rows
(``join_pseudo_labels``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytal.core import storage
from raytal.core.errors import DataError, clip, where
from raytal.data.annotations import SEGMENT_TOLERANCE_S
from raytal.data.shards import TRAINING_COLUMNS

INSTANCE_TYPE = pa.struct(
    [
        ("label_id", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("score", pa.float32()),
        ("weight", pa.float32()),
        ("origin", pa.string()),
    ]
)
PSEUDO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("round", pa.int32()),
        ("teacher", pa.string()),
        ("instances", pa.list_(INSTANCE_TYPE)),
        ("targets", pa.large_binary()),
        ("teacher_scores", pa.large_binary()),
        ("T", pa.int32()),
        ("C", pa.int32()),
        ("relaxed", pa.int32()),
        ("error", pa.string()),
    ]
)


# Pseudo labels are written per pseudo source: ``<pseudo>/shard=<k>/*.parquet`` (a Hive-style partition, as
# Ray Data's partitioned write names it), so a training reader joins one shard file with its labels
# without holding the labels of the whole pool.
SOURCE_KEY = "shard"
# A pseudo-label folder as a job's output (raytal.core.outputs): what it holds, and where its files lie.
PSEUDO_KIND = "pseudo-labels"
PSEUDO_FILES = (f"{SOURCE_KEY}=*",)
# The file a row of ``read_pseudo_table`` was read from: not stored, added on reading.
LABEL_FILE_COLUMN = "label_file"

# delta(previous generation's dense targets or None, current ones) -> the targets trained on
DenseFn = Callable[[np.ndarray | None, np.ndarray], np.ndarray]


@dataclass
class PseudoRecord:
    """One decoded pseudo-label row. Arrays are empty (and dense ones None) for an error row."""

    video_id: str
    round: int
    teacher: str
    segments: np.ndarray  # [K, 2] float64 seconds
    labels: np.ndarray  # [K] int64
    scores: np.ndarray  # [K] float32
    weights: np.ndarray  # [K] float32
    origins: np.ndarray  # [K] object (str)
    targets: np.ndarray | None  # [T, C] float32 (stored as float16)
    teacher_scores: np.ndarray | None  # [T, C] float32
    relaxed: int
    error: str | None
    file: str = ""  # the Parquet file it was read from (for messages)


def _dense_shape(name: str, arr: Any, video_id: str) -> tuple[int, int] | None:
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"video '{video_id}': {name} must be [T, C] with T, C >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"video '{video_id}': {name} holds NaN/Inf")
    return int(a.shape[0]), int(a.shape[1])


def pseudo_row(
    video_id: str,
    round: int,
    teacher: str,
    segments: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    origins: np.ndarray | list[str],
    targets: np.ndarray | None = None,
    teacher_scores: np.ndarray | None = None,
    error: str | None = None,
    relaxed: int = 0,
) -> dict[str, Any]:
    """Validate one video's pseudo labels and encode them as a ``PSEUDO_SCHEMA`` row dict.

    Raises ValueError for inconsistent lengths, non-finite values, segments with end <= start or a
    negative label, so a broken labeling stage becomes an error row instead of a bad training target.
    An error row (``error`` set) carries no instances and no dense arrays.
    """
    if not isinstance(video_id, str) or not video_id:
        raise ValueError(f"pseudo_row: video_id must be a non-empty string, got {video_id!r}")
    base = {"video_id": video_id, "round": int(round), "teacher": str(teacher)}
    if error is not None:
        return {**base, "instances": [], "targets": None, "teacher_scores": None, "T": 0, "C": 0,
                "relaxed": 0, "error": str(error)}
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2) if np.size(segments) else np.zeros((0, 2))
    lab = np.asarray(labels).reshape(-1)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    org = np.asarray(origins, dtype=object).reshape(-1)
    k = len(segs)
    if not (len(lab) == len(sc) == len(w) == len(org) == k):
        raise ValueError(
            f"video '{video_id}': pseudo labels need equal lengths, got segments {k}, labels {len(lab)}, "
            f"scores {len(sc)}, weights {len(w)}, origins {len(org)}"
        )
    if k and not (np.isfinite(segs).all() and np.isfinite(sc).all() and np.isfinite(w).all()):
        raise ValueError(f"video '{video_id}': pseudo segments/scores/weights hold NaN/Inf")
    if k and (segs[:, 1] <= segs[:, 0]).any():
        raise ValueError(f"video '{video_id}': pseudo segment with end <= start")
    if k and (not np.issubdtype(lab.dtype, np.integer) or (lab < 0).any()):
        raise ValueError(f"video '{video_id}': pseudo labels must be integer class ids >= 0, got {lab.dtype}")
    t_shape = _dense_shape("targets", targets, video_id)
    s_shape = _dense_shape("teacher_scores", teacher_scores, video_id)
    if t_shape and s_shape and t_shape != s_shape:
        raise ValueError(f"video '{video_id}': targets {t_shape} and teacher_scores {s_shape} differ in shape")
    shape = t_shape or s_shape or (0, 0)
    relaxed = int(relaxed)
    if relaxed < 0:
        raise ValueError(f"video '{video_id}': relaxed count must be >= 0, got {relaxed}")
    instances = [
        {"label_id": int(c), "start": float(s), "end": float(e), "score": float(p), "weight": float(q),
         "origin": str(o)}
        for (s, e), c, p, q, o in zip(segs, lab, sc, w, org)
    ]
    return {
        **base,
        "instances": instances,
        "targets": None if targets is None else np.ascontiguousarray(targets, dtype=np.float16).tobytes(),
        "teacher_scores": (
            None if teacher_scores is None else np.ascontiguousarray(teacher_scores, dtype=np.float32).tobytes()
        ),
        "T": shape[0],
        "C": shape[1],
        "relaxed": relaxed,
        "error": None,
    }


def source_dir(pseudo_dir: str, k: int) -> str:
    """Where the pseudo labels of the round's k-th pseudo source are (``RunIndex.pseudo_sources``)."""
    return storage.join(pseudo_dir, f"{SOURCE_KEY}={k}")


def pseudo_files(directory: str | Path) -> list[str]:
    """The Parquet files under a pseudo-label directory (all sources, or one ``shard=k``), sorted."""
    if not storage.is_dir(directory):
        raise DataError(f"{directory}: pseudo-label directory not found")
    return storage.list_files(storage.resolve(directory), suffix=".parquet")


def _decode_dense(raw: bytes | None, dtype: type, T: int, C: int, path: Path, vid: str, name: str,
                  num_classes: int | None) -> np.ndarray | None:
    if raw is None:
        return None
    size = np.dtype(dtype).itemsize
    if T < 1 or C < 1 or len(raw) != T * C * size:
        raise DataError(f"{where(path, vid, name)}: {len(raw)} bytes, expected T*C*{size} = {T}*{C}*{size} with "
                        "T, C >= 1")
    if num_classes is not None and C != num_classes:
        raise DataError(f"{where(path, vid, name)}: C = {C} columns, expected one per class ({num_classes})")
    arr = np.frombuffer(raw, dtype=dtype).reshape(T, C).astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{where(path, vid, name)}: NaN/Inf values")
    return arr


def _check_instances(path: str, vids: list, offsets: np.ndarray, field: dict[str, np.ndarray],
                     errors: list, num_classes: int | None) -> None:
    """The rules ``pseudo_row`` writes by, checked on what is read (a file may come from elsewhere, or have
    been edited): finite times with 0 <= start < end, finite scores, finite weights >= 0, class ids in
    0..num_classes-1 (>= 0 without ``num_classes``), no instances on an error row. ``DataError`` names the
    file, the video and the field."""
    start, end, label = field["start"], field["end"], field["label_id"]
    classes = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
    owner = np.repeat(np.arange(len(vids)), np.diff(offsets))
    rules = [
        ("start", ~np.isfinite(start) | (start < 0), "expected a finite time >= 0 s"),
        ("end", ~np.isfinite(end) | (end <= start), "expected a finite time after the start"),
        ("score", ~np.isfinite(field["score"]), "expected a finite number"),
        ("weight", ~(np.isfinite(field["weight"]) & (field["weight"] >= 0)), "expected a finite weight >= 0"),
        ("label_id", ~np.isfinite(label) | (label < 0) | (label >= (num_classes or np.inf)),
         f"expected a class id {classes}"),
    ]
    for name, bad, expected in rules:
        if bad.any():
            k = int(np.argmax(bad))
            row = int(owner[k])
            raise DataError(f"{where(path, vids[row], f'instances[{k - offsets[row]}].{name}')}: {expected}, got "
                            f"{field[name][k]}" + (f" (start {start[k]})" if name == "end" else ""))
    on_error_row = [i for i, e in enumerate(errors) if e is not None and offsets[i + 1] > offsets[i]]
    if on_error_row:
        i = on_error_row[0]
        raise DataError(f"{where(path, vids[i], 'instances')}: an error row ({clip(repr(errors[i]))}) with "
                        f"{offsets[i + 1] - offsets[i]} instances: expected none")


def read_pseudo_labels(directory: str | Path, num_classes: int | None = None) -> dict[str, PseudoRecord]:
    """All rows of a pseudo-label directory, by video id (error rows included, with ``error`` set).

    A file that is unreadable, lacks the schema's columns, repeats a video id or holds a value ``pseudo_row``
    would not have written (``_check_instances``; dense arrays of the wrong size, with NaN/Inf, or, given
    ``num_classes``, not one column per class) raises ``DataError`` naming the file, the video and the field.
    """
    out: dict[str, PseudoRecord] = {}
    for path in pseudo_files(directory):
        try:
            table = pq.read_table(storage.open_input_file(path))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file (truncated or corrupt?): {e}") from e
        missing = [n for n in PSEUDO_SCHEMA.names if n not in table.column_names]
        if missing:
            raise DataError(f"{where(path, None, missing[0])}: column missing; not a pseudo-label file")
        cols = {n: table.column(n).to_pylist() for n in PSEUDO_SCHEMA.names if n != "instances"}
        inst = table.column("instances").combine_chunks()
        offsets = inst.offsets.to_numpy()
        offsets = offsets - offsets[0]
        flat = inst.flatten()
        numeric = ("label_id", "start", "end", "score", "weight")
        field = {n: flat.field(n).to_numpy(zero_copy_only=False) for n in numeric}
        origins = np.asarray(flat.field("origin").to_pylist(), dtype=object)
        field = {n: (v if v.dtype != object else v.astype(np.float64)) for n, v in field.items()}  # nulls -> NaN
        _check_instances(path, cols["video_id"], offsets, field, cols["error"], num_classes)
        for i, vid in enumerate(cols["video_id"]):
            if not isinstance(vid, str) or not vid:
                raise DataError(f"{where(path, None, 'video_id')}: row {i}: expected a video id, got {vid!r}")
            if vid in out:
                raise DataError(f"{where(path, vid, 'video_id')}: duplicate video id in the pseudo labels")
            lo, hi = offsets[i], offsets[i + 1]
            T, C = int(cols["T"][i] or 0), int(cols["C"][i] or 0)
            out[vid] = PseudoRecord(
                video_id=vid,
                round=int(cols["round"][i] or 0),
                teacher=cols["teacher"][i],
                segments=np.stack([field["start"][lo:hi], field["end"][lo:hi]], axis=1).astype(np.float64),
                labels=field["label_id"][lo:hi].astype(np.int64),
                scores=field["score"][lo:hi].astype(np.float32),
                weights=field["weight"][lo:hi].astype(np.float32),
                origins=origins[lo:hi],
                targets=_decode_dense(cols["targets"][i], np.float16, T, C, path, vid, "targets", num_classes),
                teacher_scores=_decode_dense(cols["teacher_scores"][i], np.float32, T, C, path, vid, "teacher_scores",
                                             num_classes),
                relaxed=int(cols["relaxed"][i] or 0),
                error=cols["error"][i],
                file=path,
            )
    return out


def read_pseudo_table(directory: str) -> pa.Table:
    """Every row of a pseudo-label directory as one table (``PSEUDO_SCHEMA``), as written, with the file each
    row came from (``LABEL_FILE_COLUMN``, so that an error names it); what ``read_pseudo_labels`` checks, a
    training reader joins (``join_pseudo_labels``)."""
    tables = []
    for path in pseudo_files(directory):
        try:
            table = pq.read_table(storage.open_input_file(path)).select(PSEUDO_SCHEMA.names)
        except (pa.ArrowException, OSError, KeyError) as e:
            raise DataError(f"{path}: not a readable pseudo-label file (truncated or corrupt?): {e}") from e
        tables.append(table.append_column(LABEL_FILE_COLUMN, pa.array([str(path)] * table.num_rows, pa.string())))
    if tables:
        return pa.concat_tables(tables)
    return PSEUDO_SCHEMA.empty_table().append_column(LABEL_FILE_COLUMN, pa.array([], pa.string()))


def _dense_targets(labels: pa.Table, previous: pa.Table | None, delta: DenseFn | None) -> pa.Array:
    """The labels' dense targets as float32 bytes (stored as float16), and with ``delta`` the labels of the
    previous generation turned into ``delta(previous, current)`` (a video without a previous row: None)."""
    before = {} if previous is None else dict(zip(previous.column("video_id").to_pylist(), range(previous.num_rows)))
    out = []
    for i, (vid, raw) in enumerate(zip(labels.column("video_id").to_pylist(), labels.column("targets"))):
        buf = raw.as_buffer()
        if buf is None:
            out.append(None)
            continue
        T, C = labels.column("T")[i].as_py(), labels.column("C")[i].as_py()
        y = np.frombuffer(buf, np.float16).reshape(T, C).astype(np.float32)
        if delta is not None:
            j = before.get(vid)
            prev = None if j is None else previous.column("targets")[j].as_buffer()
            y = delta(None if prev is None else np.frombuffer(prev, np.float16).reshape(T, C).astype(np.float32), y)
        out.append(np.ascontiguousarray(y, np.float32).tobytes())
    return pa.array(out, pa.large_binary())


def join_pseudo_labels(rows: pa.Table, labels: pa.Table, previous: pa.Table | None = None,
                       delta: DenseFn | None = None, source: str = "") -> pa.Table:
    """Shard rows carrying their pseudo labels in place of their annotations: training rows
    (``raytal.data.shards``; the instances keep their loss weights, the dense arrays come as float32).

    A row whose label is an error row, or holds nothing to train on (no instance, no dense array), is left
    out. A row without a label means the labels come from another run or split (``DataError``); so do
    dense arrays whose T differs from the row's features and instances that end after the video (beyond
    ``SEGMENT_TOLERANCE_S``). With ``delta`` the dense targets become ``delta(previous, targets)`` against
    the ``previous`` generation's (GauFuse's Δ labels).
    """
    at = pc.index_in(rows.column("video_id"), value_set=labels.column("video_id"))
    if at.null_count:
        vid = rows.column("video_id").filter(pc.is_null(at))[0].as_py()
        raise DataError(f"{where(source or None, vid)}: no pseudo-label row for this video")
    labels = labels.take(at)
    usable = pc.and_(pc.is_null(labels.column("error")), pc.or_(
        pc.greater(pc.list_value_length(labels.column("instances")), 0),
        pc.or_(pc.is_valid(labels.column("targets")), pc.is_valid(labels.column("teacher_scores")))))
    rows, labels = rows.filter(usable), labels.filter(usable)
    vids = rows.column("video_id").to_pylist()

    def label_file(i: int) -> str | None:
        if LABEL_FILE_COLUMN in labels.column_names:
            return labels.column(LABEL_FILE_COLUMN)[i].as_py()
        return source or None

    for name in ("targets", "teacher_scores"):
        bad = pc.and_(pc.is_valid(labels.column(name)), pc.not_equal(labels.column("T"), rows.column("T")))
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise DataError(f"{where(label_file(i), vids[i], name)}: {labels.column('T')[i]} snippets, features "
                            f"have {rows.column('T')[i]}")
    inst = labels.column("instances").combine_chunks()
    ends = inst.flatten().field("end").to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(vids)), np.diff(inst.offsets.to_numpy()))
    late = ends > rows.column("duration").to_numpy()[owner] + SEGMENT_TOLERANCE_S
    if late.any():
        k = int(np.argmax(late))
        i = int(owner[k])
        first = int(inst.offsets[i].as_py() - inst.offsets[0].as_py())
        raise DataError(f"{where(label_file(i), vids[i], f'instances[{k - first}].end')}: {ends[k]} s is after the "
                        f"end of the video (duration {rows.column('duration')[i]} s)")
    rows = rows.set_column(rows.schema.get_field_index("annotations"), "annotations", inst)
    return (rows.append_column(TRAINING_COLUMNS[0], labels.column("C"))
            .append_column(TRAINING_COLUMNS[1], _dense_targets(labels, previous, delta))
            .append_column(TRAINING_COLUMNS[2], labels.column("teacher_scores")))


def check_source_rows(records: dict[str, PseudoRecord], video_ids: set[str], directory: str) -> None:
    """The rows of one pseudo source's directory must be for the videos of that source: a row for another
    video means the directory holds labels of another run or split (``DataError`` naming one of them). A
    video without a row is refused where the labels are joined (``join_pseudo_labels``)."""
    extra = sorted(set(records) - video_ids)
    if extra:
        rec = records[extra[0]]
        raise DataError(f"{where(rec.file or directory, extra[0], 'video_id')}: a pseudo-label row for a video that "
                        f"is not in its source ({len(extra)} such rows under {directory}): labels of another run or "
                        "split?")
