"""The one evaluator of a run: a checkpoint of either kind on a part of the run -> mAP per tIoU, and its
detections as an ActivityNet results file.

Round evaluations, the supervised job, Tune's trials and its final test of the best trial all call
``evaluate_checkpoint``, at the run's protocol (``eval_tious``: ``eval.tious``, else the dataset's). The
detections come from the back-end's inference pass (``Backend.detect``: in this process, or Ray Data's
actor pool), so only they are held; the ground truth is read from the shards' small columns.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc

from raytal.config import Config
from raytal.core import storage
from raytal.core.errors import DataError
from raytal.core.segments import SegmentTable
from raytal.data.dataset import DatasetInfo
from raytal.data.index import Source
from raytal.data.shards import read_shard_tables
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.pseudo.count_threshold import count_threshold
from raytal.selftrain.backend import Backend
from raytal.selftrain.predict import detections_of, read_detections, results_json
from raytal.selftrain.pseudo_stage import input_blocks
from raytal.selftrain.spec import DetectSpec, InferenceInput


def eval_tious(cfg: Config, info: DatasetInfo) -> tuple[float, ...]:
    """The run's tIoU thresholds: ``eval.tious``, else the dataset's protocol."""
    return tuple(cfg.eval.tious or info.tious)


def ground_truth(sources: Sequence[Source]) -> tuple[SegmentTable, list[str]]:
    """(ground truth, video ids) of the sources' videos, from the shards' small columns (no feature read)."""
    tables, ids = [], []
    for src in sources:
        for t in read_shard_tables(src.file, src.ids, columns=["video_id", "annotations"]):
            tables.append(SegmentTable.from_arrow(t.column("video_id"), t.column("annotations"), with_scores=False))
            ids += t.column("video_id").to_pylist()
    return SegmentTable.concat(tables), ids


def eval_json(result: DetectionResult, class_names: list[str] | None = None) -> dict:
    """``result.to_json()`` plus the average over 0.3:0.1:0.7 when the thresholds start lower (the weak
    papers report THUMOS14 at 0.1:0.1:0.7; 0.3:0.1:0.7 is derived from it)."""
    out = result.to_json(class_names)
    sel = (result.tious >= 0.3 - 1e-9) & (result.tious <= 0.7 + 1e-9)
    if not sel.all() and sel.any():
        out["average_mAP_0.3_0.7"] = float(np.mean(result.mAP[sel]))
    return out


def detect_on(cfg: Config, backend: Backend, checkpoint: str, sources: Sequence[Source], info: DatasetInfo,
              part: str) -> tuple[SegmentTable, SegmentTable, list[str]]:
    """(ground truth, test-time detections, video ids) of ``checkpoint`` on the videos of ``sources`` (members
    of ``part``). A video the pass could not read or predict is an error naming it."""
    gt, ids = ground_truth(sources)
    inputs = tuple(InferenceInput(k, part, s.file, s.ids, s.count) for k, s in enumerate(sources))
    with tempfile.TemporaryDirectory(prefix="raytal-detections-") as out:
        backend.detect(cfg, DetectSpec(checkpoint, inputs, input_blocks, out, len(info.classes), info.feature_dim))
        table = read_detections(out)
    failed = table.filter(pc.is_valid(table.column("error")))
    if failed.num_rows:
        raise DataError(f"{failed.num_rows} {part} video(s) could not be evaluated; "
                        f"{failed.column('video_id')[0]}: {failed.column('error')[0]}")
    return gt, detections_of(table), ids


def count_threshold_on(cfg: Config, backend: Backend, checkpoint: str, sources: Sequence[Source],
                       info: DatasetInfo) -> float:
    """``recipe.min_score_rule: val_count``: the score of the checkpoint's N-th best detection on the videos of
    ``sources`` (the validation part), N their number of ground-truth instances (``raytal.pseudo.count_threshold``).
    The detections are the evaluation's (``infer.*``), which for a plain threshold are the ones it labels from."""
    gt, pred, _ = detect_on(cfg, backend, checkpoint, sources, info, "val")
    return count_threshold(pred.scores, len(gt))


def evaluate_checkpoint(cfg: Config, backend: Backend, checkpoint: str, sources: Sequence[Source],
                        info: DatasetInfo, predictions: str | None = None, part: str = "test") -> dict:
    """mAP of ``checkpoint`` on the videos of ``sources`` (members of ``part``) at the run's thresholds
    (JSON-able, fractions); with ``predictions`` (a path or URI) its detections are written there as an
    ActivityNet results file. A video the pass could not read or predict is an error naming it."""
    gt, pred, ids = detect_on(cfg, backend, checkpoint, sources, info, part)
    if predictions is not None:
        storage.write_text(predictions, json.dumps(results_json(pred, ids, info.classes)))
    return eval_json(evaluate_detection(gt, pred, eval_tious(cfg, info)))
