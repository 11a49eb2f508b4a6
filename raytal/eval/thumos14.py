"""Loaders for the official THUMOS14 text formats (the evaluation kit's inputs).

* Annotations: a directory with one file per class, ``<Class>_<subset>.txt`` (e.g.
  ``BaseballPitch_test.txt``), lines ``video start end`` in seconds, plus ``Ambiguous_<subset>.txt``
  (intervals where any action is unclear; the thumos14 protocol ignores detections overlapping them).
  The official files list CliffDiving instances under Diving too; they are kept as they are.
* Detections: one file, lines ``video start end class_id score`` where ``class_id`` is the index in
  the 101-class THUMOS list (7 = BaseballPitch ... 97 = VolleyballSpiking); only the 20 detection
  classes are valid.

Every error names the file, the line (as the field) and, where known, the video.
"""

from __future__ import annotations

import math
from pathlib import Path

from raytal.core.errors import DataError, where
from raytal.core.segments import SegmentTable
from raytal.eval.detection import check_predictions

# THUMOS 101-class index -> name, for the 20 temporal detection classes.
THUMOS14_DETECTION_CLASSES: dict[int, str] = {
    7: "BaseballPitch",
    9: "BasketballDunk",
    12: "Billiards",
    21: "CleanAndJerk",
    22: "CliffDiving",
    23: "CricketBowling",
    24: "CricketShot",
    26: "Diving",
    31: "FrisbeeCatch",
    33: "GolfSwing",
    36: "HammerThrow",
    40: "HighJump",
    45: "JavelinThrow",
    51: "LongJump",
    68: "PoleVault",
    79: "Shotput",
    85: "SoccerPenalty",
    92: "TennisSwing",
    93: "ThrowDiscus",
    97: "VolleyballSpiking",
}
AMBIGUOUS = "Ambiguous"


def _number(text: str, path: Path, vid: str | None, fld: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where(path, vid, fld)}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where(path, vid, fld)}: expected a finite number, got {text!r}")
    return value


def _read_lines(path: Path, n_fields: int, header: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank lines of ``path``, each with exactly ``n_fields`` fields."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != n_fields:
                raise DataError(
                    f"{where(path, parts[0], f'line {n}')}: expected {n_fields} fields ({header}), got {len(parts)}"
                )
            rows.append((n, parts))
    return rows


def _read_segments(path: Path) -> tuple[list[str], list[tuple[float, float]]]:
    videos, segs = [], []
    for n, (vid, s, e) in _read_lines(path, 3, "video start end"):
        start = _number(s, path, vid, f"line {n}: start")
        end = _number(e, path, vid, f"line {n}: end")
        if end < start:
            raise DataError(f"{where(path, vid, f'line {n}')}: end {end} < start {start}")
        videos.append(vid)
        segs.append((start, end))
    return videos, segs


def load_thumos14_annotations(
    directory: str | Path, subset: str = "test", classes: list[str] | None = None
) -> tuple[list[str], SegmentTable, SegmentTable]:
    """Read ``<Class>_<subset>.txt`` files and ``Ambiguous_<subset>.txt`` from ``directory``.

    Returns (classes, ground truth, ambiguous). ``classes`` defaults to the sorted class names of the
    files found (for the official files: the 20 detection classes in THUMOS id order); a file of a class
    outside a given list is an error. Rows are in class order, then file order.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: expected a directory of THUMOS14 annotation txt files")
    suffix = f"_{subset}.txt"
    files = {p.name[: -len(suffix)]: p for p in directory.iterdir() if p.name.endswith(suffix)}
    amb_path = files.pop(AMBIGUOUS, None)
    if not files:
        raise DataError(f"{directory}: no '<Class>{suffix}' annotation files")
    names = sorted(files)
    if classes is None:
        classes = names
    index = {c: i for i, c in enumerate(classes)}
    for name in names:
        if name not in index:
            raise DataError(f"{files[name]}: class '{name}' is not in the class list")
    videos: list[str] = []
    segs: list[tuple[float, float]] = []
    labels: list[int] = []
    for name in names:
        v, s = _read_segments(files[name])
        videos += v
        segs += s
        labels += [index[name]] * len(v)
    gt = SegmentTable(videos, segs, labels)
    ambiguous = SegmentTable.empty()
    if amb_path is not None:
        v, s = _read_segments(amb_path)
        ambiguous = SegmentTable(v, s, [0] * len(v))
    return list(classes), gt, ambiguous


def load_thumos14_detections(
    path: str | Path, classes: list[str], known_videos: set[str] | None = None
) -> SegmentTable:
    """Read a detection file (``video start end class_id score``), labels indexed into ``classes``.

    A class id outside the 20 detection classes, a class missing from ``classes``, (when ``known_videos``
    is given) a video not in it, or a prediction ``raytal.eval.detection.prediction_problem`` refuses is
    an error naming file, video and line.
    """
    path = Path(path)
    index = {c: i for i, c in enumerate(classes)}
    videos, lines, segs, labels, scores = [], [], [], [], []
    for n, (vid, s, e, cid, sc) in _read_lines(path, 5, "video start end class_id score"):
        if known_videos is not None and vid not in known_videos:
            raise DataError(f"{where(path, vid, f'line {n}: video')}: unknown video (not in the ground truth)")
        start = _number(s, path, vid, f"line {n}: start")
        end = _number(e, path, vid, f"line {n}: end")
        try:
            name = THUMOS14_DETECTION_CLASSES[int(cid)]
        except (ValueError, KeyError):
            raise DataError(
                f"{where(path, vid, f'line {n}: class_id')}: {cid!r} is not a THUMOS14 detection class id "
                f"(one of {sorted(THUMOS14_DETECTION_CLASSES)})"
            ) from None
        if name not in index:
            raise DataError(f"{where(path, vid, f'line {n}: class_id')}: class '{name}' is not in the class list")
        videos.append(vid)
        lines.append(n)
        segs.append((start, end))
        labels.append(index[name])
        scores.append(_number(sc, path, vid, f"line {n}: score"))
    pred = SegmentTable(videos, segs, labels, scores)  # lists: the table converts and checks them
    check_predictions(pred, path, lambda i, kind: f"line {lines[i]}: {kind}")
    return pred
