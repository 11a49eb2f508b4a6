"""GauFuse's Gaussian weighted fusion vs NMS at test time (issue 11; GauFuse Table 3, testing side).

Each weak run's models are evaluated again on the test videos with only the post-processing changed:
the base model (round 0) with hard NMS 0.5 or fusion (T = ``infer.fusion_temperature``, 0.03), the last
round's detector with Soft-NMS (the detector's default), hard NMS 0.5 or fusion (``infer.fusion_temperature``). Average mAP over tIoU 0.1:0.1:0.7 and 0.3:0.1:0.7, in percent.
Detections come from the run's own ``Predictor`` (the evaluator of every round) under config variants;
only the base model's hard NMS calls ``predict_weak`` directly, since a run never evaluates it that way.

    .venv/bin/python benchmarks/weak_postprocess.py runs/w/s0/gaufuse [runs/w/s1/gaufuse ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from raytal.config import Config, load_config
from raytal.core.protocols import WEAK_THUMOS14
from raytal.core.segments import SegmentTable
from raytal.core.video import Video
from raytal.data.index import RunIndex
from raytal.engine.mil import predict_weak
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.selftrain.evaluate import eval_json
from raytal.selftrain.models import WEAK_BASE, load_weak_base
from raytal.selftrain.teacher import Predictor, teacher_kind

Predict = Callable[[list[Video]], list[dict]]


def _evaluate(predict: Predict, test: list[Video]) -> DetectionResult:
    preds = SegmentTable.from_predictions([v.video_id for v in test], predict(test))
    return evaluate_detection(SegmentTable.from_videos(test), preds, WEAK_THUMOS14)


def _averages(res: DetectionResult) -> tuple[float, float]:
    j = eval_json(res)
    return 100 * j["average_mAP"], 100 * j["average_mAP_0.3_0.7"]


def with_nms(cfg: Config, nms: str, **infer) -> Config:
    """``cfg`` with another test-time post-processing (``infer.nms`` and any other ``infer`` keys)."""
    return dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, nms=nms, **infer))


def _base_model(cfg: Config, ckpt: str, test: list[Video]) -> dict[str, DetectionResult]:
    model = load_weak_base(ckpt)

    def hard(videos: list[Video]) -> list[dict]:
        return predict_weak(model, videos, cfg.weak, model.num_classes, nms="hard", iou_threshold=0.5,
                            max_segments=cfg.infer.max_segments)

    return {"hard NMS 0.5": _evaluate(hard, test),
            f"fusion T={cfg.infer.fusion_temperature:g}": _evaluate(Predictor(cfg, ckpt), test)}


def _detector(cfg: Config, ckpt: str, test: list[Video]) -> dict[str, DetectionResult]:
    variants = {
        "Soft-NMS": with_nms(cfg, "soft"),
        "hard NMS 0.5": with_nms(cfg, "hard", iou_threshold=0.5),
        f"fusion T={cfg.infer.fusion_temperature:g}": with_nms(cfg, "fusion"),
    }
    return {name: _evaluate(Predictor(c, ckpt), test) for name, c in variants.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished weak run directories (jobs/selftrain.py run.dir)")
    args = ap.parse_args()
    print("| run | model | post-processing | avg mAP 0.1:0.7 | avg mAP 0.3:0.7 |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        cfg = load_config(run / "config.yaml")
        stages = json.loads((run / "stages.json").read_text())["stages"]
        index = RunIndex.load(str(run / "index.json"))
        if not index.count("test"):
            raise SystemExit(f"{run}: its index has no test part (a run evaluated on val)")
        test = list(index.videos("test"))
        for r in sorted({0, cfg.run.rounds}):
            ckpt = stages[f"round_{r}/train"]["result"]
            evaluate = _base_model if teacher_kind(ckpt) == WEAK_BASE else _detector
            for name, res in evaluate(cfg, ckpt, test).items():
                a, b = _averages(res)
                print(f"| {run} | round {r} | {name} | {a:.2f} | {b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
