"""ActivityNet-style annotation JSON, both dialects (SPEC §3), loaded into ``Video`` records.

Dialects:

* ActionFormer's (e.g. ``shared/data/thumos14.json``): every video has ``fps``; every annotation has
  ``label``, ``segment`` [start_s, end_s] and ``label_id``.
* Official ActivityNet 1.3: no ``fps`` (``default_fps`` is used), no ``label_id``, subsets
  "training"/"validation"/"testing", and a top-level ``taxonomy`` (a tree of ``nodeName``/``parentName``).

Class ids, in order of precedence: a fixed ``classes`` list given by the caller (a label outside it is an
error); else the file's ``label_id`` (must map label <-> id one to one; classes are listed by ascending
id, so ids 0..C-1 are kept as they are and gappy ids are compacted in order); else the sorted leaf names
of the ``taxonomy``; else the sorted distinct labels.

Checks (each error names the file, the video and the field):

* structure: ``database`` mapping, per video ``subset`` (str), ``duration`` (> 0), ``annotations``
  (list), ``fps`` (> 0, or ``default_fps``), per annotation ``label`` and ``segment`` (two numbers);
  duplicate video ids (``json.load`` would silently keep the last one, so duplicates are detected
  with ``object_pairs_hook``). These are always errors.
* per segment: ``end <= start``, a segment outside ``[0, duration]`` by more than ``SEGMENT_TOLERANCE_S``
  (segments inside the tolerance are clipped silently: durations and times in real files are rounded),
  a non-finite time, a label not in a fixed class list. With ``strict=True`` these are errors. With
  ``strict=False`` each becomes one entry of ``Annotations.warnings`` and the segment is **dropped**,
  except a segment that sticks out of ``[0, duration]`` but still overlaps it with positive length,
  which is **clipped** to ``[0, duration]`` (its real part is kept). A zero-length ground-truth segment
  can never be matched at tIoU > 0, so dropping it only removes an unreachable target.

Note: the real ``thumos14.json`` has 30 segments past the video's duration (5 videos; 22 of them in
``video_test_0000270``, whose annotations are known to be wrong); it loads with ``strict=False`` only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raytal.core.errors import DataError, check_video_id, where
from raytal.core.video import Video

# Segments may stick out of [0, duration] by this much (seconds) and are then clipped silently.
SEGMENT_TOLERANCE_S = 0.05


@dataclass
class Annotations:
    """Loaded annotation file: ``classes[i]`` is the name of class id i; videos have no features."""

    classes: list[str]
    videos: dict[str, Video]
    warnings: list[str] = field(default_factory=list)

    def subset(self, name: str) -> list[Video]:
        """The videos of one subset, in file order."""
        return [v for v in self.videos.values() if v.subset == name]

    def subsets(self) -> list[str]:
        """Subset names in order of first appearance."""
        return list(dict.fromkeys(v.subset for v in self.videos.values()))


class _Obj(dict):
    """A JSON object that remembers the keys it saw more than once."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    obj.duplicates = []
    for k, v in pairs:
        if k in obj:
            obj.duplicates.append(k)
        obj[k] = v
    return obj


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            return json.load(f, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 JSON: {e}") from e


def _number(value: Any, path: Path, vid: str, fld: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where(path, vid, fld)}: expected a number, got {value!r}")
    return float(value)


def _taxonomy_leaves(taxonomy: Any, path: Path) -> list[str]:
    """Sorted names of the taxonomy nodes that are nobody's parent (the 200 ActivityNet classes)."""
    if not isinstance(taxonomy, list):
        raise DataError(f"{where(path, None, 'taxonomy')}: expected a list of nodes")
    names, parents = set(), set()
    for i, node in enumerate(taxonomy):
        if not isinstance(node, dict) or not isinstance(node.get("nodeName"), str):
            raise DataError(f"{where(path, None, f'taxonomy[{i}].nodeName')}: missing or not a string")
        names.add(node["nodeName"])
        if isinstance(node.get("parentName"), str):
            parents.add(node["parentName"])
    return sorted(names - parents)


def load_annotations(
    path: str | Path,
    classes: list[str] | None = None,
    strict: bool = True,
    default_fps: float | None = None,
    feat_stride: int = 0,
    num_frames: int = 0,
) -> Annotations:
    """Load an ActivityNet-style annotation file (either dialect; see the module docstring).

    ``default_fps`` is used for videos without ``fps`` (official ActivityNet); ``feat_stride`` and
    ``num_frames`` are copied into every ``Video`` (0 = not known yet; the dataset loader sets them).
    Segments are float64 seconds [N, 2], labels int64 class ids [N], in file order.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(f"{where(path, None, 'database')}: expected a top-level object with a 'database' mapping")
    db: _Obj = data["database"]
    if db.duplicates:
        dup = db.duplicates[0]
        raise DataError(f"{where(path, dup, 'database')}: duplicate video id '{dup}' (listed more than once)")
    warnings: list[str] = []

    # ---- first pass: structure, and the label <-> label_id map when the file has ids
    raw: list[tuple[str, str, float, float, list[tuple[str, float, float, str]]]] = []
    id_of: dict[str, int] = {}
    label_of: dict[int, str] = {}
    has_ids: bool | None = None
    for vid, rec in db.items():
        check_video_id(vid, path)
        if not isinstance(rec, dict):
            raise DataError(f"{where(path, vid)}: expected an object, got {type(rec).__name__}")
        if rec.duplicates:
            raise DataError(f"{where(path, vid, rec.duplicates[0])}: key listed more than once")
        for key in ("subset", "duration", "annotations"):
            if key not in rec:
                raise DataError(f"{where(path, vid, key)}: missing")
        subset = rec["subset"]
        if not isinstance(subset, str):
            raise DataError(f"{where(path, vid, 'subset')}: expected a string, got {subset!r}")
        duration = _number(rec["duration"], path, vid, "duration")
        if not math.isfinite(duration) or duration <= 0:
            raise DataError(f"{where(path, vid, 'duration')}: expected a positive number of seconds, got {duration}")
        if "fps" in rec:
            fps = _number(rec["fps"], path, vid, "fps")
        elif default_fps is not None:
            fps = float(default_fps)
        else:
            raise DataError(f"{where(path, vid, 'fps')}: missing and no default_fps was given")
        if not math.isfinite(fps) or fps <= 0:
            raise DataError(f"{where(path, vid, 'fps')}: expected a positive number, got {fps}")
        anns = rec["annotations"]
        if not isinstance(anns, list):
            raise DataError(f"{where(path, vid, 'annotations')}: expected a list, got {type(anns).__name__}")
        items: list[tuple[str, float, float, str]] = []
        for j, ann in enumerate(anns):
            fld = f"annotations[{j}]"
            if not isinstance(ann, dict):
                raise DataError(f"{where(path, vid, fld)}: expected an object")
            label = ann.get("label")
            if not isinstance(label, str):
                raise DataError(f"{where(path, vid, fld + '.label')}: missing or not a string")
            seg = ann.get("segment")
            if not isinstance(seg, list) or len(seg) != 2:
                raise DataError(f"{where(path, vid, fld + '.segment')}: expected [start, end], got {seg!r}")
            start = _number(seg[0], path, vid, fld + ".segment")
            end = _number(seg[1], path, vid, fld + ".segment")
            this_has_id = "label_id" in ann
            if has_ids is None:
                has_ids = this_has_id
            elif has_ids != this_has_id:
                raise DataError(
                    f"{where(path, vid, fld + '.label_id')}: some annotations have label_id and others not"
                )
            if this_has_id:
                lid = ann["label_id"]
                if isinstance(lid, bool) or not isinstance(lid, int) or lid < 0:
                    raise DataError(f"{where(path, vid, fld + '.label_id')}: expected an integer >= 0, got {lid!r}")
                if id_of.get(label, lid) != lid or label_of.get(lid, label) != label:
                    raise DataError(
                        f"{where(path, vid, fld + '.label_id')}: label '{label}' with id {lid} contradicts "
                        f"earlier annotations (label '{label}' -> id {id_of.get(label)}, "
                        f"id {lid} -> '{label_of.get(lid)}')"
                    )
                id_of[label], label_of[lid] = lid, label
            items.append((label, start, end, fld))
        raw.append((vid, subset, duration, fps, items))

    # ---- class list
    fixed = classes is not None
    if classes is not None:
        class_list = list(classes)
        if len(set(class_list)) != len(class_list):
            raise DataError(f"{path}: the given class list has duplicate names")
    elif id_of:
        class_list = [label_of[i] for i in sorted(label_of)]
    elif "taxonomy" in data:
        class_list = _taxonomy_leaves(data["taxonomy"], path)
    else:
        class_list = sorted({label for *_, items in raw for label, *_ in items})
    index = {name: i for i, name in enumerate(class_list)}

    # ---- second pass: per-segment checks
    def problem(msg: str) -> None:
        if strict:
            raise DataError(msg)
        warnings.append(msg)

    videos: dict[str, Video] = {}
    tol = SEGMENT_TOLERANCE_S
    for vid, subset, duration, fps, items in raw:
        segs: list[tuple[float, float]] = []
        labels: list[int] = []
        for label, start, end, fld in items:
            lab_loc, seg_loc = where(path, vid, fld + ".label"), where(path, vid, fld + ".segment")
            if label not in index:
                known = "the given class list" if fixed else "the class list"
                problem(f"{lab_loc}: label '{label}' is not in {known}; segment dropped")
                continue
            if not (math.isfinite(start) and math.isfinite(end)):
                problem(f"{seg_loc}: non-finite time [{start}, {end}]; segment dropped")
                continue
            if end <= start:
                problem(f"{seg_loc}: end {end} <= start {start}; segment dropped")
                continue
            if start < -tol or end > duration + tol:
                lo, hi = max(start, 0.0), min(end, duration)
                action = f"clipped to [{lo}, {hi}]" if hi > lo else "segment dropped"
                problem(f"{seg_loc}: [{start}, {end}] is outside [0, duration={duration}]; {action}")
                if hi <= lo:
                    continue
            segs.append((min(max(start, 0.0), duration), min(max(end, 0.0), duration)))
            labels.append(index[label])
        videos[vid] = Video(
            video_id=vid,
            subset=subset,
            duration=duration,
            fps=fps,
            feat_stride=feat_stride,
            num_frames=num_frames,
            segments=np.asarray(segs, dtype=np.float64).reshape(-1, 2),
            labels=np.asarray(labels, dtype=np.int64),
        )
    return Annotations(classes=class_list, videos=videos, warnings=warnings)


def annotations_to_json(classes: list[str], videos: list[Video] | dict[str, Video]) -> dict[str, Any]:
    """The ActionFormer-dialect object for these videos (GT segments of every video, labeled or not)."""
    vids = list(videos.values()) if isinstance(videos, dict) else list(videos)
    db: dict[str, Any] = {}
    for v in vids:
        if v.video_id in db:
            raise DataError(f"{where(None, v.video_id)}: duplicate video id")
        if len(v.labels) and (v.labels.min() < 0 or v.labels.max() >= len(classes)):
            raise DataError(f"{where(None, v.video_id, 'labels')}: class id outside 0..{len(classes) - 1}")
        db[v.video_id] = {
            "subset": v.subset,
            "duration": float(v.duration),
            "fps": float(v.fps),
            "annotations": [
                {"label": classes[int(c)], "segment": [float(s), float(e)], "label_id": int(c)}
                for (s, e), c in zip(v.segments, v.labels)
            ],
        }
    return {"version": "raytal-1", "database": db}


def save_annotations(path: str | Path, annotations: Annotations) -> None:
    """Write ``annotations`` in the ActionFormer dialect (fps and label_id on every entry).

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    obj = annotations_to_json(annotations.classes, annotations.videos)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
