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

from raytal.config import Config, load_config
from raytal.data.dataset import load_dataset
from raytal.eval.detection import DetectionResult
from raytal.selftrain.common import evaluate_model, load_detector
from raytal.selftrain.weak import WEAK_TIOUS, eval_json, evaluate_weak, is_weak_checkpoint, load_weak


def _averages(res: DetectionResult) -> tuple[float, float]:
    j = eval_json(res)
    return 100 * j["average_mAP"], 100 * j["average_mAP_0.3_0.7"]


def _base_model(cfg: Config, ckpt: str, test) -> dict[str, DetectionResult]:
    model = load_weak(ckpt)
    return {"hard NMS 0.5": evaluate_weak(cfg, model, test, nms="hard"), "fusion T=0.03": evaluate_weak(cfg, model, test)}


def _detector(cfg: Config, ckpt: str, test) -> dict[str, DetectionResult]:
    model = load_detector(cfg, ckpt)

    def with_gaufuse(enabled: bool) -> Config:  # evaluate_model fuses at test time exactly when GauFuse is on
        return dataclasses.replace(cfg, recipe=dataclasses.replace(
            cfg.recipe, gaufuse=dataclasses.replace(cfg.recipe.gaufuse, enabled=enabled)))

    nms_only, fused = with_gaufuse(False), with_gaufuse(True)
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
