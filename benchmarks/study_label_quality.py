"""How good must pseudo labels be? A student trained on the unlabeled videos' hidden ground truth, degraded
to a chosen quality, next to the recipes' students (issue 6's "find out why").

The student is trained exactly like a recipe's student (same config, same labeled videos, the pseudo-labeled
videos through the same per-source Parquet files, training stage and trainer) on "oracle" pseudo labels made
from the ground truth: each instance kept with probability ``--recall``, its class replaced by a random other
class with probability ``1 - --class-acc``, each boundary moved by N(0, (jitter x length)^2). Every random
choice comes from ``--seed``. The measured quality of the result (``round_quality``, as in a run's report) and
the student's test mAP (``evaluate_checkpoint``) are printed and written to ``<out>/result.json``.

    python benchmarks/study_label_quality.py --run runs/r6/s0/teacher_plain --out runs/oracle/exact
    python benchmarks/study_label_quality.py --run runs/r6/s0/teacher_plain --out runs/oracle/like_recipes \\
        --recall 0.9 --class-acc 0.62 --jitter 0.3

``--run`` is a selftrain run directory whose split (``index.json``) the student uses; without it the split
is built from the config's data keys, the split a run of that config makes. ``--config`` must describe the
same dataset and labeled ratio (default: the supervised config at 10 %). Only the split's unlabeled videos
get oracle labels: the dataset's pool has no ground truth.
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
from raytal.core.video import Video
from raytal.data.index import RunIndex, build_index, source_videos
from raytal.data.pseudo_io import PSEUDO_SCHEMA, pseudo_row, source_dir
from raytal.selftrain.evaluate import evaluate_checkpoint
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import Rounds, round_quality
from raytal.selftrain.spec import LabelSpec, pseudo_sources


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
    p.add_argument("--run", help="a selftrain run directory: its index.json is the split (default: built from --config)")
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

    out = Path(args.out)
    cfg = load_config(args.config, ["data.labeled_ratio=0.1", *args.set, f"run.dir={out}"])
    index = RunIndex.load(str(Path(args.run) / "index.json")) if args.run else build_index(cfg.data)
    if not index.count("test"):
        p.error(f"{args.run}/index.json has no test part (a run evaluated on val): give a run evaluated on test")
    run = Rounds(cfg, LocalBackend())  # the run directory, made (and checked) before anything is written into it
    rng = np.random.default_rng(args.seed)
    sources = tuple((part, src) for part, src in index.pseudo_sources() if part == "unlabeled")
    label = LabelSpec("oracle", 1, str(out / "pseudo"), index.num_classes, index.setting, sources)
    usable = 0
    for k, (part, src) in enumerate(sources):
        rows = [degrade(v, args.recall, args.class_acc, args.jitter, index.num_classes, rng)
                for v in source_videos(src, part, index.setting)]
        usable += sum(bool(r["instances"]) for r in rows)
        directory = Path(source_dir(label.out_dir, k))
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA), directory / "oracle.parquet")

    # Quality, the student's stage and test mAP by the functions a selftrain round uses.
    q = round_quality(index, label)
    spec = run.train_spec(index, "train", pseudo=pseudo_sources(label), num_pseudo=usable)
    final = run.backend.train(cfg, spec)
    result = {
        "recall": args.recall, "class_acc": args.class_acc, "jitter": args.jitter, "seed": args.seed,
        "num_pseudo": int(q["num_pseudo"]), "num_gt": int(q["num_gt"]),
        "class_accuracy": q["class_accuracy"], "mean_tiou": q["mean_tiou"], "positive_accuracy": q["positive_accuracy"],
        "average_mAP": evaluate_checkpoint(cfg, run.backend, final, index.parts["test"], run.info)["average_mAP"],
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
