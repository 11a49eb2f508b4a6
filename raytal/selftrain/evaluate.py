"""The one evaluator of a run: a checkpoint of either kind on a stream of videos -> mAP per tIoU, and its
detections as an ActivityNet results file.

Round evaluations, the supervised job, Tune's trials and its final test of the best trial all call
``evaluate_checkpoint``, at the run's protocol (``eval_tious``: ``eval.tious``, else the dataset's); test
videos are read in chunks, so only the detections are held.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from raytal.config import Config
from raytal.core import storage
from raytal.core.segments import SegmentTable
from raytal.core.video import Video
from raytal.data.dataset import DatasetInfo
from raytal.data.stream import chunks
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.selftrain.teacher import Predictor

EVAL_CHUNK = 64  # videos predicted at a time


def eval_tious(cfg: Config, info: DatasetInfo) -> tuple[float, ...]:
    """The run's tIoU thresholds: ``eval.tious``, else the dataset's protocol."""
    return tuple(cfg.eval.tious or info.tious)




def predict_all(cfg: Config, checkpoint: str, videos: Iterable[Video], num_classes: int | None = None
                ) -> tuple[SegmentTable, SegmentTable, list[str]]:
    """(ground truth, detections, video ids) of ``checkpoint`` on ``videos``, read in chunks."""
    predictor = Predictor(cfg, checkpoint, num_classes)
    gts, preds, ids = [], [], []
    for chunk in chunks(videos, EVAL_CHUNK):
        gts.append(SegmentTable.from_videos(chunk))
        preds.append(SegmentTable.from_predictions([v.video_id for v in chunk], predictor(chunk)))
        ids += [v.video_id for v in chunk]
    return SegmentTable.concat(gts), SegmentTable.concat(preds), ids


def eval_json(result: DetectionResult, class_names: list[str] | None = None) -> dict:
    """``result.to_json()`` plus the average over 0.3:0.1:0.7 when the thresholds start lower (the weak
    papers report THUMOS14 at 0.1:0.1:0.7; 0.3:0.1:0.7 is derived from it)."""
    out = result.to_json(class_names)
    sel = (result.tious >= 0.3 - 1e-9) & (result.tious <= 0.7 + 1e-9)
    if not sel.all() and sel.any():
        out["average_mAP_0.3_0.7"] = float(np.mean(result.mAP[sel]))
    return out


def results_json(pred: SegmentTable, ids: list[str], classes: list[str]) -> dict:
    """Detections in the ActivityNet results format (seconds, labels by name): what ``jobs/evaluate.py``
    and the official evaluation kits read. Every video predicted on has an entry, possibly empty."""
    results: dict[str, list] = {vid: [] for vid in ids}
    for vid, (s, e), lab, score in zip(pred.video, pred.segments, pred.labels, pred.scores):
        results[vid].append({"label": classes[int(lab)], "segment": [float(s), float(e)], "score": float(score)})
    return {"version": "VERSION 1.3", "results": results, "external_data": {"used": False}}


def evaluate_checkpoint(cfg: Config, checkpoint: str, videos: Iterable[Video], info: DatasetInfo,
                        predictions: str | None = None) -> dict:
    """mAP of ``checkpoint`` on ``videos`` at the run's thresholds (JSON-able, fractions); with
    ``predictions`` (a path or URI) its detections are written there as an ActivityNet results file."""
    gt, pred, ids = predict_all(cfg, checkpoint, videos, len(info.classes))
    if predictions is not None:
        storage.write_text(predictions, json.dumps(results_json(pred, ids, info.classes)))
    return eval_json(evaluate_detection(gt, pred, eval_tious(cfg, info)))
