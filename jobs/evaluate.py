"""Score detections against ground truth: detection mAP per tIoU (docs/design.md §7, issues 3 and 13).

    python jobs/evaluate.py --gt GT.json --pred RESULTS.json [--subset NAME] [--tiou 0.3:0.1:0.7] [--json]
    python jobs/evaluate.py --gt DIR_OF_TXT --pred FILE.txt --protocol thumos14 --tiou 0.5

Ground truth: an ActivityNet-style annotation JSON (either dialect; files whose videos lack
``duration``, such as DETAD's, are read directly), or a directory of THUMOS14 per-class txt files
with ``Ambiguous_<subset>.txt`` (``--subset`` picks the file suffix, default ``test``). With a JSON,
``--subset`` keeps the videos of that subset. Without it, the subset scored is the one the predictions
cover (said on stderr): a file of ``Validation`` predictions is scored on ``Validation``, as a TAL paper
reports it, not on every video of the file, where the other subsets would count as misses. Predictions
naming videos of several subsets are refused, naming the counts: pass ``--subset``, or ``--all-subsets``
to score every video. A subset without annotated segments (ActivityNet's ``testing``) is refused.
Predictions: the ActivityNet results JSON ``{"results": {video_id: [{"label": str, "segment": [s, e],
"score": float}]}}`` or a THUMOS14 detection txt (``video start end class_id score``).
Every JSON input is read within limits (``raytal.core.jsonfile``: size, nesting, absurd numbers).

Predictions, one policy (``raytal.eval.detection``'s, the same for both formats and in-process):

- errors naming the file, video and field: a video named twice in the results JSON (both entries); a
  video or label the ground truth does not have; a segment
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raytal.cli import run_job
from raytal.core import storage
from raytal.data.annotations import load_annotations
from raytal.core.errors import DataError, clip, where
from raytal.core.jsonfile import note_duplicates, read_json
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
    subsets: dict[str, str] = field(default_factory=dict)  # video -> its subset (JSON ground truth)

    def restricted(self, subset: str) -> "GroundTruth":
        """The ground truth of one subset's videos."""
        keep = {v for v, s in self.subsets.items() if s == subset}
        return GroundTruth(self.classes, self.table.select(np.isin(self.table.video, sorted(keep))), self.ambiguous,
                           keep, self.warnings, {v: subset for v in keep})


@dataclass
class Predictions:
    table: SegmentTable
    videos: set[str]  # every video the file names, with or without detections
    unpredicted: dict[str, str]  # a raytal results file's 'errors': videos its job could not predict


def _database_table(path: Path, db: dict, subset: str | None) -> GroundTruth:
    """Ground truth straight from a ``database`` whose videos lack ``duration`` (e.g. DETAD's files)."""
    rows: list[tuple[str, str, float, float]] = []
    videos: set[str] = set()
    subsets: dict[str, str] = {}
    for vid, rec in db.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("annotations"), list):
            raise DataError(f"{where(path, vid, 'annotations')}: expected an object with an 'annotations' list")
        if subset is not None and rec.get("subset") != subset:
            continue
        videos.add(vid)
        subsets[vid] = str(rec.get("subset"))
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
    return GroundTruth(classes, table, None, videos, [], subsets)


def load_ground_truth(path: str | Path, subset: str | None = None) -> GroundTruth:
    """Ground truth from an annotation JSON or a THUMOS14 txt directory (see the module docstring)."""
    path = _local_or_uri(path)
    if isinstance(path, Path) and path.is_dir():
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
    return GroundTruth(ann.classes, SegmentTable.from_videos(vids), None, {v.video_id for v in vids}, ann.warnings,
                       {v.video_id: v.subset for v in vids})


def load_predictions(path: str | Path, classes: list[str], known_videos: set[str]) -> Predictions:
    """Predictions from a results JSON or a THUMOS14 detection txt, labels indexed into ``classes``. A video
    the results JSON names twice is an error naming both entries (a JSON reader keeps the later silently)."""
    path = _local_or_uri(path)
    if isinstance(path, Path) and path.suffix == ".txt":
        table = load_thumos14_detections(path, classes, known_videos)
        return Predictions(table, set(table.video.tolist()), {})
    data = read_json(path, DataError, object_pairs_hook=note_duplicates)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise DataError(f"{where(path, None, 'results')}: expected a top-level object with a 'results' mapping")
    if results.duplicates:
        vid, first, later = results.duplicates[0]
        more = f" ({len(results.duplicates)} videos are)" if len(results.duplicates) > 1 else ""
        raise DataError(f"{where(path, vid, 'results')}: listed twice, as entries {first} and {later} of 'results'"
                        f"{more}: the later would silently replace the earlier; give each video once")
    unpredicted = data.get("errors") if isinstance(data.get("errors"), dict) else {}
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
    return Predictions(pred, set(results), {str(k): str(v) for k, v in unpredicted.items()})


def covered_subset(gt: GroundTruth, pred: Predictions, source: str) -> str | None:
    """The subset to score when none is given: the one subset of the ground truth the predictions name videos
    of (a file of validation predictions is scored on validation, not on every video of the file, where the
    other subsets' videos would all count as misses). None when the ground truth has one subset. Refused,
    naming the counts, when the predictions name videos of several subsets or of none."""
    names = sorted(set(gt.subsets.values()))
    if len(names) < 2:
        return None
    counts = {s: sum(1 for v in pred.videos if gt.subsets.get(v) == s) for s in names}
    covered = [s for s in names if counts[s]]
    sizes = {s: sum(1 for x in gt.subsets.values() if x == s) for s in names}
    listing = ", ".join(f"'{s}': {counts[s]} of {sizes[s]} videos" for s in names)
    if len(covered) != 1:
        what = "videos of several subsets" if covered else "no video of any subset"
        raise DataError(f"{source}: the predictions name {what} of the ground truth ({listing}): pass --subset NAME "
                        "to score one subset, or --all-subsets to score every video of the file")
    return covered[0]


def _local_or_uri(path: str | Path) -> str | Path:
    """A local path as a ``Path``; an ``s3://`` / ``gs://`` JSON file as its URI (``Path`` would fold its '//')."""
    return path if isinstance(path, str) and storage.is_uri(path) else Path(path)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True, help="annotation JSON or directory of THUMOS14 txt files")
    ap.add_argument("--pred", required=True, help="results JSON or THUMOS14 detection txt")
    ap.add_argument("--subset", default=None,
                    help="JSON: the subset to score (default: the one the predictions cover); txt: file suffix "
                         "(default test)")
    ap.add_argument("--all-subsets", action="store_true",
                    help="JSON: score every video of the ground truth, whichever subsets the predictions cover")
    ap.add_argument("--tiou", default="0.3:0.1:0.7", help="start:step:stop or comma list (default 0.3:0.1:0.7)")
    ap.add_argument("--protocol", default="activitynet", choices=PROTOCOLS)
    ap.add_argument("--json", action="store_true", help="print one JSON object (fractions)")
    args = ap.parse_args(argv)
    if args.subset is not None and args.all_subsets:
        ap.error("--subset and --all-subsets exclude each other")
    tious = parse_tious(args.tiou)
    gt = load_ground_truth(args.gt, args.subset)
    pred = load_predictions(args.pred, gt.classes, gt.videos)
    notes = []
    scored = args.subset
    if args.subset is None and not args.all_subsets:
        chosen = scored = covered_subset(gt, pred, args.pred)
        if chosen is not None:
            gt = gt.restricted(chosen)
            outside = {v for v in pred.videos if v not in gt.videos}
            notes.append(f"scoring subset '{chosen}' ({len(gt.videos)} videos), the one the predictions cover "
                         f"(--subset picks another, --all-subsets scores all)")
            pred.table = pred.table.select(~np.isin(pred.table.video, sorted(outside)))
    if not len(gt.table):
        which = f"subset '{scored}'" if scored else "the ground truth"
        raise DataError(f"{args.gt}: {which} has no annotated segment to score against (an official test subset, "
                        "such as ActivityNet's 'testing', has its labels withheld): choose a subset with annotations")
    if pred.unpredicted:
        notes.append(f"{len(pred.unpredicted)} video(s) could not be predicted (listed under 'errors' in {args.pred}, "
                     f"e.g. '{clip(sorted(pred.unpredicted)[0])}'): scored as having no detections")
    res = evaluate_detection(gt.table, pred.table, tious, protocol=args.protocol, ambiguous=gt.ambiguous)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for w in gt.warnings + res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_json(gt.classes), indent=1))
    else:
        print(format_map_table({Path(args.pred).name: res}))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
