"""ActivityNet-style annotation JSON, both dialects (docs/design.md §3 "Annotations"), loaded into ``Video`` records.

Dialects:

* ActionFormer's (e.g. its THUMOS14 ``thumos14.json``): every video has ``fps``; every annotation has
  ``label``, ``segment`` [start_s, end_s] and ``label_id``.
* Official ActivityNet 1.3: no ``fps`` (``default_fps`` is used), no ``label_id``, subsets
  "training"/"validation"/"testing", and a top-level ``taxonomy`` (a tree of ``nodeName``/``parentName``).

Class ids, in order of precedence: a fixed ``classes`` list given by the caller (a label outside it is an
error); else the file's ``label_id`` (must map label <-> id one to one; classes are listed by ascending
id, so ids 0..C-1 are kept as they are and gappy ids are compacted in order); else the sorted leaf names
of the ``taxonomy``; else the sorted distinct labels.

Checks (each names the file, the video and the field):

* Real defects, errors in both modes: not a ``database`` mapping; per video a missing or wrong
  ``subset`` (str), ``duration`` (> 0), ``annotations`` (list), ``fps`` (> 0, or ``default_fps``);
  per annotation a missing ``label`` or a ``segment`` that is not two finite numbers; a label outside
  the class list; ``end < start``; a start before 0; duplicate video ids (``json.load`` would silently
  keep the last one, so duplicates are detected with ``object_pairs_hook``).
* Benign defects of official files (ActivityNet 1.3 has zero-length segments and segments past the
  video's end; ``thumos14.json`` has 30 segments that start after their video's end, 22 of them in
  ``video_test_0000270``, whose annotations are known to be wrong). With ``strict=False`` (default)
  each is fixed with one entry in ``Annotations.warnings`` and counted in ``Annotations.fixes``
  (``FIX_KINDS``): a zero-length segment is dropped (it can never be matched at tIoU > 0); a segment
  that ends past the duration is clipped to it, or dropped when it starts at or after it; a video
  with no annotation left in a *labeled* subset (one where some video has annotations) is dropped
  (``drop_unannotated``; an unannotated test subset such as ActivityNet's is kept). With
  ``strict=True`` they are errors, all of them listed in one ``DataError``.

Times within ``SEGMENT_TOLERANCE_S`` outside ``[0, duration]`` are clipped silently: durations and
times in real files are rounded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raytal.core import storage
from raytal.core.errors import DataError, check_video_id, where
from raytal.core.jsonfile import CheckedObject, note_duplicates, read_json
from raytal.core.video import Video

# Segments may stick out of [0, duration] by this much (seconds) and are then clipped silently.
SEGMENT_TOLERANCE_S = 0.05
# The benign defects fixed with strict=False, in the order of the summary line.
FIX_KINDS = {
    "zero_length": "zero-length segments dropped",
    "clipped": "segments clipped to the duration",
    "past_end": "segments past the duration dropped",
    "unannotated": "videos without annotations dropped",
}


@dataclass
class Annotations:
    """Loaded annotation file: ``classes[i]`` is the name of class id i; videos have no features."""

    classes: list[str]
    videos: dict[str, Video]
    warnings: list[str] = field(default_factory=list)  # one per fixed problem (strict=False)
    fixes: dict[str, int] = field(default_factory=dict)  # FIX_KINDS key -> count
    official: bool = False  # the official ActivityNet dialect (a taxonomy, no label_id)

    def fix_summary(self) -> str:
        """``"N annotation problems fixed: a zero-length segments dropped, ..."``; "" when none were."""
        total = sum(self.fixes.values())
        if not total:
            return ""
        parts = ", ".join(f"{self.fixes.get(k, 0)} {text}" for k, text in FIX_KINDS.items())
        return f"{total} annotation problems fixed: {parts}"

    def subset(self, name: str) -> list[Video]:
        """The videos of one subset, in file order."""
        return [v for v in self.videos.values() if v.subset == name]

    def subsets(self) -> list[str]:
        """Subset names in order of first appearance."""
        return list(dict.fromkeys(v.subset for v in self.videos.values()))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    return read_json(path, DataError, object_pairs_hook=note_duplicates)


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
    strict: bool = False,
    default_fps: float | None = None,
    feat_stride: int = 0,
    num_frames: int = 0,
    drop_unannotated: bool = True,
) -> Annotations:
    """Load an ActivityNet-style annotation file (either dialect; see the module docstring).

    ``default_fps`` is used for videos without ``fps`` (official ActivityNet); ``feat_stride`` and
    ``num_frames`` are copied into every ``Video`` (0 = not known yet; the dataset loader sets them).
    ``drop_unannotated=False`` keeps (and does not report) videos without annotations in labeled
    subsets: an evaluator must still know them, so that their predictions count as false positives.
    Segments are float64 seconds [N, 2], labels int64 class ids [N], in file order.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(f"{where(path, None, 'database')}: expected a top-level object with a 'database' mapping")
    db: CheckedObject = data["database"]
    if db.duplicates:
        dup = db.duplicates[0][0]
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
            raise DataError(f"{where(path, vid, rec.duplicates[0][0])}: key listed more than once")
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
    fixed_classes = classes is not None
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

    # ---- second pass: per-segment checks. Real defects raise at once; benign ones are fixed with a
    # warning each, or (strict) collected and raised together.
    fixes = dict.fromkeys(FIX_KINDS, 0)
    benign: list[str] = []

    def fixed(kind: str, problem: str, action: str) -> None:
        if strict:
            benign.append(problem)
        else:
            warnings.append(f"{problem}; {action}")
            fixes[kind] += 1

    labeled_subsets = {subset for _, subset, _, _, items in raw if items}
    videos: dict[str, Video] = {}
    tol = SEGMENT_TOLERANCE_S
    for vid, subset, duration, fps, items in raw:
        segs: list[tuple[float, float]] = []
        labels: list[int] = []
        for label, start, end, fld in items:
            lab_loc, seg_loc = where(path, vid, fld + ".label"), where(path, vid, fld + ".segment")
            if label not in index:
                known = "the given class list" if fixed_classes else "the class list"
                raise DataError(f"{lab_loc}: label '{label}' is not in {known}")
            if not (math.isfinite(start) and math.isfinite(end)):
                raise DataError(f"{seg_loc}: expected finite times, got [{start}, {end}]")
            if end < start:
                raise DataError(f"{seg_loc}: end {end} < start {start}: expected start <= end")
            if start < -tol or end <= 0.0:
                raise DataError(
                    f"{seg_loc}: [{start}, {end}] starts before 0: expected it inside [0, duration={duration}]"
                )
            if end == start:
                fixed("zero_length", f"{seg_loc}: zero-length segment [{start}, {end}]", "dropped")
                continue
            if start >= duration:
                fixed("past_end", f"{seg_loc}: [{start}, {end}] starts at or after the end of the video "
                      f"(duration={duration})", "dropped")
                continue
            if end > duration + tol:
                fixed("clipped", f"{seg_loc}: [{start}, {end}] ends after the end of the video (duration={duration})",
                      f"clipped to [{start}, {duration}]")
            segs.append((max(start, 0.0), min(end, duration)))
            labels.append(index[label])
        if drop_unannotated and not segs and subset in labeled_subsets:
            loc = where(path, vid, "annotations")
            if not items:
                fixed("unannotated", f"{loc}: no annotations, in subset '{subset}' whose other videos have some",
                      "video dropped")
                continue
            if not strict:  # every segment was fixed away (each reported above)
                fixed("unannotated", f"{loc}: none of its {len(items)} segments is left", "video dropped")
                continue
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
    if benign:
        listing = "\n  ".join(benign)
        raise DataError(
            f"{path}: {len(benign)} annotation problems (strict mode; without it each is fixed with a "
            f"warning):\n  {listing}"
        )
    return Annotations(classes=class_list, videos=videos, warnings=warnings, fixes=fixes,
                       official="taxonomy" in data and not has_ids)


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

    Written atomically and never through a link (``raytal.core.storage.write_text``), so a reader never sees
    half a file.
    """
    obj = annotations_to_json(annotations.classes, annotations.videos)
    storage.write_text(path, json.dumps(obj, indent=1) + "\n")
