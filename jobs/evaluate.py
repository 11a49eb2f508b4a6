"""Score detections against ground truth: detection mAP per tIoU (SPEC §7, issues 3 and 13).

    python jobs/evaluate.py --gt GT.json --pred RESULTS.json [--subset NAME] [--tiou 0.3:0.1:0.7] [--json]
    python jobs/evaluate.py --gt DIR_OF_TXT --pred FILE.txt --protocol thumos14 --tiou 0.5

Ground truth: an ActivityNet-style annotation JSON (either dialect; files whose videos lack
``duration``, such as DETAD's, are read directly), or a directory of THUMOS14 per-class txt files
with ``Ambiguous_<subset>.txt`` (``--subset`` picks the file suffix, default ``test``). With a JSON,
``--subset`` keeps the videos of that subset (default: all videos of the file).
Predictions: the ActivityNet results JSON ``{"results": {video_id: [{"label": str, "segment": [s, e],
"score": float}]}}`` or a THUMOS14 detection txt (``video start end class_id score``).
Every JSON input is read within limits (``raytal.core.jsonfile``: size, nesting, absurd numbers).

Predictions, one policy (``raytal.eval.detection``'s, the same for both formats and in-process):

- errors naming the file, video and field: a video or label the ground truth does not have; a segment
  that is not two finite numbers or ends before it starts; a score that is not a finite number. Nothing
  is scored from such a file.
- scored as they are, as the official kits score them, with one warning and a count each on stderr:
  zero-length segments (tIoU 0 with every segment: false positives; raytal's own detections are clipped
  to the video and may collapse at its end), segments starting before 0 s (matched by their tIoU as
  given) and negative scores (ranked as given: AP depends only on the order).

Prints a table in percent, or with ``--json`` one JSON object of fractions; warnings (e.g. zero-length
ground truth removed) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytal.cli import run_job
from raytal.data.annotations import load_annotations
from raytal.core.errors import DataError, clip, where
from raytal.core.jsonfile import read_json
from raytal.eval.detection import PROTOCOLS, check_predictions, evaluate_detection
from raytal.core.protocols import parse_tious
from raytal.eval.tables import format_map_table
from raytal.core.segments import SegmentTable
from raytal.eval.thumos14 import load_thumos14_annotations, load_thumos14_detections




@dataclass
class GroundTruth:
    classes: list[str]
    table: SegmentTable
    ambiguous: SegmentTable | None
    videos: set[str]
    warnings: list[str]


def _database_table(path: Path, db: dict, subset: str | None) -> GroundTruth:
    """Ground truth straight from a ``database`` whose videos lack ``duration`` (e.g. DETAD's files)."""
    rows: list[tuple[str, str, float, float]] = []
    videos: set[str] = set()
    for vid, rec in db.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("annotations"), list):
            raise DataError(f"{where(path, vid, 'annotations')}: expected an object with an 'annotations' list")
        if subset is not None and rec.get("subset") != subset:
            continue
        videos.add(vid)
        for j, ann in enumerate(rec["annotations"]):
            fld = f"annotations[{j}]"
            label, seg = (ann.get("label"), ann.get("segment")) if isinstance(ann, dict) else (None, None)
            if not isinstance(label, str):
                raise DataError(f"{where(path, vid, fld + '.label')}: missing or not a string")
            if (
                not isinstance(seg, list)
                or len(seg) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in seg)
                or not np.all(np.isfinite(seg))
            ):
                raise DataError(f"{where(path, vid, fld + '.segment')}: expected [start, end] numbers, got {seg!r}")
            if seg[1] < seg[0]:
                raise DataError(f"{where(path, vid, fld + '.segment')}: end {seg[1]} < start {seg[0]}")
            rows.append((vid, label, float(seg[0]), float(seg[1])))
    classes = sorted({r[1] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    table = SegmentTable([r[0] for r in rows], [(r[2], r[3]) for r in rows], [index[r[1]] for r in rows])
    return GroundTruth(classes, table, None, videos, [])


def load_ground_truth(path: str | Path, subset: str | None = None) -> GroundTruth:
    """Ground truth from an annotation JSON or a THUMOS14 txt directory (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        classes, table, ambiguous = load_thumos14_annotations(path, subset or "test")
        videos = set(table.video.tolist()) | set(ambiguous.video.tolist())
        return GroundTruth(classes, table, ambiguous, videos, [])
    data = read_json(path, DataError)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise DataError(f"{where(path, None, 'database')}: expected a top-level object with a 'database' mapping")
    if subset is not None and not any(isinstance(r, dict) and r.get("subset") == subset for r in db.values()):
        found = sorted({str(r.get("subset")) for r in db.values() if isinstance(r, dict)})
        raise DataError(f"{where(path, None, 'subset')}: no video in subset '{subset}' (subsets: {found})")
    if not all(isinstance(r, dict) and "duration" in r for r in db.values()):
        return _database_table(path, db, subset)
    # fps only matters for features; official ActivityNet files have none.
    # Every video stays known, annotated or not: predictions on it are false positives, not unknown videos.
    ann = load_annotations(path, default_fps=30.0, drop_unannotated=False)
    vids = ann.subset(subset) if subset is not None else list(ann.videos.values())
    return GroundTruth(ann.classes, SegmentTable.from_videos(vids), None, {v.video_id for v in vids}, ann.warnings)


def load_predictions(path: str | Path, classes: list[str], known_videos: set[str]) -> SegmentTable:
    """Predictions from a results JSON or a THUMOS14 detection txt, labels indexed into ``classes``."""
    path = Path(path)
    if path.suffix == ".txt":
        return load_thumos14_detections(path, classes, known_videos)
    data = read_json(path, DataError)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise DataError(f"{where(path, None, 'results')}: expected a top-level object with a 'results' mapping")
    index = {c: i for i, c in enumerate(classes)}
    videos, fields, segs, labels, scores = [], [], [], [], []
    for vid, items in results.items():
        if vid not in known_videos:
            raise DataError(f"{where(path, vid, 'results')}: unknown video (not in the ground truth)")
        if not isinstance(items, list):
            raise DataError(f"{where(path, vid, 'results')}: expected a list of detections")
        for j, it in enumerate(items):
            fld = f"results[{j}]"
            if not isinstance(it, dict):
                raise DataError(f"{where(path, vid, fld)}: expected an object")
            label, seg, score = it.get("label"), it.get("segment"), it.get("score")
            if not isinstance(label, str) or label not in index:
                raise DataError(f"{where(path, vid, fld + '.label')}: label {clip(repr(label))} is not in the "
                                "ground-truth classes")
            if not (isinstance(seg, list) and len(seg) == 2 and all(_is_number(x) for x in seg)):
                raise DataError(f"{where(path, vid, fld + '.segment')}: expected [start, end] numbers, got "
                                f"{clip(repr(seg))}")
            if not _is_number(score):
                raise DataError(f"{where(path, vid, fld + '.score')}: expected a number, got {clip(repr(score))}")
            videos.append(vid)
            fields.append(fld)
            segs.append((float(seg[0]), float(seg[1])))
            labels.append(index[label])
            scores.append(float(score))
    pred = SegmentTable(videos, segs, labels, scores)  # lists: the table converts and checks them
    check_predictions(pred, path, lambda i, kind: f"{fields[i]}.{kind}")
    return pred


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True, help="annotation JSON or directory of THUMOS14 txt files")
    ap.add_argument("--pred", required=True, help="results JSON or THUMOS14 detection txt")
    ap.add_argument("--subset", default=None, help="JSON: subset to keep; txt: file suffix (default test)")
    ap.add_argument("--tiou", default="0.3:0.1:0.7", help="start:step:stop or comma list (default 0.3:0.1:0.7)")
    ap.add_argument("--protocol", default="activitynet", choices=PROTOCOLS)
    ap.add_argument("--json", action="store_true", help="print one JSON object (fractions)")
    args = ap.parse_args(argv)
    tious = parse_tious(args.tiou)
    gt = load_ground_truth(args.gt, args.subset)
    pred = load_predictions(args.pred, gt.classes, gt.videos)
    res = evaluate_detection(gt.table, pred, tious, protocol=args.protocol, ambiguous=gt.ambiguous)
    for w in gt.warnings + res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_json(gt.classes), indent=1))
    else:
        print(format_map_table({Path(args.pred).name: res}))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
