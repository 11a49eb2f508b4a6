"""GauFuse's Gaussian weighted fusion vs NMS at test time (issue 11; GauFuse Table 3, testing side).

Each weak run's models are evaluated again on the test videos with only the post-processing changed:
the base model (round 0) with hard NMS 0.5 or fusion (T = 0.03), the last round's detector with
Soft-NMS (the detector's default), hard NMS 0.5 or fusion. Average mAP over tIoU 0.1:0.1:0.7 and
0.3:0.1:0.7, in percent.

    .venv/bin/python benchmarks/weak_postprocess.py runs/w/s0/gaufuse [runs/w/s1/gaufuse ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from raytal.config import Config, load_config
from raytal.data.dataset import load_dataset
from raytal.eval.detection import DetectionResult, evaluate_detection
from raytal.eval.table import SegmentTable
from raytal.selftrain.common import evaluate_model, load_detector
from raytal.selftrain.weak import WEAK_TIOUS, fusion_at_test, is_weak_checkpoint, load_weak
from raytal.train.weak import predict_weak


def _averages(res: DetectionResult) -> tuple[float, float]:
    low = res.tious >= 0.3 - 1e-9
    return 100 * float(np.mean(res.mAP)), 100 * float(np.mean(res.mAP[low]))


def _base_model(cfg: Config, ckpt: str, test) -> dict[str, DetectionResult]:
    model = load_weak(ckpt)
    gt = SegmentTable.from_videos(test)
    out = {}
    for name, kwargs in (("hard NMS 0.5", dict(nms="hard", iou_threshold=0.5)),
                         ("fusion T=0.03", dict(nms="fusion", fusion_fn=fusion_at_test(cfg)))):
        preds = predict_weak(model, test, cfg.weak, model.num_classes, max_segments=cfg.infer.max_segments, **kwargs)
        out[name] = evaluate_detection(gt, SegmentTable.from_predictions([v.video_id for v in test], preds), WEAK_TIOUS)
    return out


def _detector(cfg: Config, ckpt: str, test) -> dict[str, DetectionResult]:
    model = load_detector(cfg, ckpt)
    nms_only = dataclasses.replace(cfg, recipe=dataclasses.replace(
        cfg.recipe, gaufuse=dataclasses.replace(cfg.recipe.gaufuse, enabled=False)))
    fused = dataclasses.replace(cfg, recipe=dataclasses.replace(
        cfg.recipe, gaufuse=dataclasses.replace(cfg.recipe.gaufuse, enabled=True)))
    variants = {
        "Soft-NMS": nms_only,
        "hard NMS 0.5": dataclasses.replace(nms_only, infer=dataclasses.replace(cfg.infer, nms="hard", iou_threshold=0.5)),
        "fusion T=0.03": fused,
    }
    return {name: evaluate_model(c, model, test, WEAK_TIOUS) for name, c in variants.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished weak run directories (jobs/selftrain.py run.dir)")
    args = ap.parse_args()
    print("| run | model | post-processing | avg mAP 0.1:0.7 | avg mAP 0.3:0.7 |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        cfg = load_config(run / "config.yaml")
        stages = json.loads((run / "stages.json").read_text())["stages"]
        test = load_dataset(cfg.data).test
        for r in sorted({0, cfg.run.rounds}):
            ckpt = stages[f"round_{r}/train"]["result"]
            results = _base_model(cfg, ckpt, test) if is_weak_checkpoint(ckpt) else _detector(cfg, ckpt, test)
            for name, res in results.items():
                a, b = _averages(res)
                print(f"| {run} | round {r} | {name} | {a:.2f} | {b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
