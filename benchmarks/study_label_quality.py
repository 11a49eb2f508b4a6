"""How good must pseudo labels be? A student trained on the unlabeled videos' hidden ground truth, degraded
to a chosen quality, next to the recipes' students (issue 6's "find out why").

The student is trained exactly like a recipe's student (same config, same labeled videos, the pseudo-labeled
videos through the same Parquet files and trainer) on "oracle" pseudo labels made from the ground truth:
each instance kept with probability ``--recall``, its class replaced by a random other class with probability
``1 - --class-acc``, each boundary moved by N(0, (jitter x length)^2). Every random choice comes from ``--seed``.
The measured quality of the result (pseudo_label_quality, as in a run's report) and the student's test mAP
are printed and written to ``<out>/result.json``.

    python benchmarks/study_label_quality.py --split runs/r6/s0/teacher_plain/data --out runs/oracle/exact
    python benchmarks/study_label_quality.py --split runs/r6/s0/teacher_plain/data --out runs/oracle/like_recipes \\
        --recall 0.9 --class-acc 0.62 --jitter 0.3

``--split`` is a selftrain run's ``data/`` directory (its labeled/unlabeled shards); ``--config`` must
describe the same dataset and labeled ratio (default: the supervised config at 10 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raytal.config import load_config
from raytal.data.dataset import load_dataset
from raytal.data.pseudo_io import PSEUDO_SCHEMA, pseudo_row
from raytal.data.shards import read_shards
from raytal.core.video import Video
from raytal.selftrain.rounds import evaluate_checkpoint, round_quality
from raytal.selftrain.train_stage import train_local


def degrade(video: Video, recall: float, class_acc: float, jitter: float, num_classes: int,
            rng: np.random.Generator) -> dict:
    """One PSEUDO_SCHEMA row from ``video``'s hidden ground truth, degraded as the module docstring says."""
    keep = rng.random(len(video.labels)) < recall
    segs, labels = video.segments[keep].astype(np.float64), video.labels[keep].astype(np.int64)
    flip = rng.random(len(labels)) >= class_acc
    other = (labels + rng.integers(1, num_classes, len(labels))) % num_classes  # uniform over the other classes
    labels = np.where(flip, other, labels)
    length = segs[:, 1] - segs[:, 0]
    segs = np.clip(segs + rng.normal(0.0, 1.0, segs.shape) * jitter * length[:, None], 0.0, video.duration)
    ok = segs[:, 1] - segs[:, 0] > 1e-3
    k = int(ok.sum())
    return pseudo_row(video.video_id, 1, "oracle", segs[ok], labels[ok], np.ones(k), np.ones(k), ["oracle"] * k)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", required=True, help="a selftrain run's data/ directory (labeled/, unlabeled/ shards)")
    p.add_argument("--out", required=True, help="output directory (pseudo/, train/, result.json)")
    p.add_argument("--config", default="configs/thumos14_supervised.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable), after data.labeled_ratio=0.1")
    p.add_argument("--recall", type=float, default=1.0, help="fraction of ground-truth instances kept")
    p.add_argument("--class-acc", type=float, default=1.0, help="fraction of kept instances with their true class")
    p.add_argument("--jitter", type=float, default=0.0, help="boundary noise std as a fraction of the length")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (0 <= args.recall <= 1 and 0 <= args.class_acc <= 1 and args.jitter >= 0):
        p.error("--recall and --class-acc must be in [0, 1], --jitter >= 0")

    cfg = load_config(args.config, ["data.labeled_ratio=0.1", *args.set])
    split, out = Path(args.split), Path(args.out)
    ds = load_dataset(cfg.data, load_test=True)
    num_classes, input_dim = ds.num_classes, ds.info.feature_dim
    rng = np.random.default_rng(args.seed)
    rows = [degrade(v, args.recall, args.class_acc, args.jitter, num_classes, rng)
            for v in read_shards(split / "unlabeled")]
    (out / "pseudo").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA), out / "pseudo" / "oracle.parquet")

    # Quality and test mAP by the functions a selftrain round uses for its report.
    q = round_quality(cfg, split, out / "pseudo", num_classes)
    final = train_local(cfg, out / "train", split, out / "pseudo", None, num_classes, input_dim)
    result = {
        "recall": args.recall, "class_acc": args.class_acc, "jitter": args.jitter, "seed": args.seed,
        "num_pseudo": int(q["num_pseudo"]), "num_gt": int(q["num_gt"]),
        "class_accuracy": q["class_accuracy"], "mean_tiou": q["mean_tiou"], "positive_accuracy": q["positive_accuracy"],
        "average_mAP": evaluate_checkpoint(cfg, final, ds.test)["average_mAP"],
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
