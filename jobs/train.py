"""Train the supervised detector on the labeled part of a dataset split and evaluate it on the test subset.

    python jobs/train.py --config configs/tiny_supervised.yaml
    python jobs/train.py --config configs/thumos14_supervised.yaml --set data.labeled_ratio=0.1 --set train.seed=1

The run directory is ``run.dir``, else ``runs/<run.name>``, else ``runs/<config file stem>``; it holds
config.yaml, checkpoints/last.pt, metrics.json, tb/ (TensorBoard), loss/mAP PNGs and results.md. A
run restarted with the same directory resumes from its last checkpoint unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raytal.config import ConfigError, add_config_args, config_from_args
from raytal.data.dataset import load_dataset
from raytal.data.errors import DataError
from raytal.train.supervised import train_supervised


def run_dir_for(config_path: str, name: str, directory: str) -> Path:
    if directory:
        return Path(directory)
    return Path("runs") / (name or Path(config_path).stem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="resume from <run>/checkpoints/last.pt when it exists (default: yes)")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        ds = load_dataset(cfg.data)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = run_dir_for(args.config, cfg.run.name, cfg.run.dir)
    print(f"run {run}: {len(ds.labeled)} labeled / {len(ds.test)} test videos, {ds.num_classes} classes, "
          f"{cfg.train.epochs} epochs", flush=True)
    metrics = train_supervised(cfg, ds, run, resume=args.resume)
    r = metrics["run"]
    print(f"trained in {r['train_seconds']:.1f} s (from epoch {r['resumed_from_epoch']}), evaluated in {r['eval_seconds']:.1f} s")
    print((run / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
