"""The one evaluator of a run: a checkpoint of either kind on a stream of videos -> mAP per tIoU.

Round evaluations, the supervised job, Tune's trials and its final test of the best trial all call
``evaluate_checkpoint``; test videos are read in chunks, so only the detections are held.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from raytal.config import Config
from raytal.core.segments import SegmentTable
from raytal.core.video import Video
from raytal.data.stream import chunks
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.selftrain.teacher import Predictor

THUMOS14_TIOUS = (0.3, 0.4, 0.5, 0.6, 0.7)
# The weak papers (GauFuse, NoCo) report THUMOS14 mAP at 0.1:0.1:0.7; 0.3:0.1:0.7 is derived from it.
WEAK_TIOUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
EVAL_CHUNK = 64  # videos predicted at a time


def tious_of(cfg: Config) -> tuple[float, ...]:
    return WEAK_TIOUS if cfg.data.setting == "weak" else THUMOS14_TIOUS




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
    """``result.to_json()`` plus the average over 0.3:0.1:0.7 when the thresholds start lower (weak runs)."""
    out = result.to_json(class_names)
    sel = (result.tious >= 0.3 - 1e-9) & (result.tious <= 0.7 + 1e-9)
    if not sel.all() and sel.any():
        out["average_mAP_0.3_0.7"] = float(np.mean(result.mAP[sel]))
    return out


def evaluate_checkpoint(cfg: Config, checkpoint: str, videos: Iterable[Video], num_classes: int | None = None) -> dict:
    """mAP of ``checkpoint`` on ``videos`` at the run's tIoU thresholds (JSON-able, fractions)."""
    gt, pred, _ = predict_all(cfg, checkpoint, videos, num_classes)
    return eval_json(evaluate_detection(gt, pred, tious_of(cfg)))
