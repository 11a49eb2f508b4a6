"""Train the supervised detector on the labeled part of a dataset split and evaluate it on the test subset.

    python jobs/train.py --config configs/tiny_supervised.yaml
    python jobs/train.py --config configs/thumos14_supervised.yaml --set data.labeled_ratio=0.1 --set train.seed=1
    python jobs/train.py --config configs/thumos14_supervised.yaml --workers 2     # DDP through Ray Train

The run directory is ``run.dir``, else ``runs/<run.name>``, else ``runs/<config file stem>``; it holds
config.yaml, checkpoints/last.pt, metrics.json, tb/ (TensorBoard), loss/mAP PNGs and results.md. A
run restarted with the same directory resumes from its last checkpoint unless ``--no-resume``.

With ``--workers N`` (N >= 1) training runs through Ray Train with N DDP workers (on the cluster named by
``--address`` / ``ray.address`` / ``RAY_ADDRESS``, else a local Ray bound to 127.0.0.1): it is round 0 of
the self-training job (``jobs/selftrain.py`` with ``run.rounds=0``), with its run directory and report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raytal.cli import run_job
from raytal.config import add_config_args, config_from_args
from raytal.data.dataset import load_dataset
from raytal.train.supervised import train_supervised


def run_dir_for(config_path: str, name: str, directory: str) -> Path:
    if directory:
        return Path(directory)
    return Path("runs") / (name or Path(config_path).stem)


def _train_with_ray(args: argparse.Namespace) -> int:
    """Round 0 of the self-training job through Ray Train: same loop, DDP over ``--workers`` workers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import selftrain

    sets = list(args.overrides) + ["run.rounds=0", f"ray.num_workers={args.workers}"]
    if not args.resume:
        print("error: --no-resume is not supported with --workers (use another run.dir)", file=sys.stderr)
        return 2
    argv = ["--config", args.config] + [x for s in sets for x in ("--set", s)]
    return selftrain.main(argv + (["--address", args.address] if args.address else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="resume from <run>/checkpoints/last.pt when it exists (default: yes)")
    parser.add_argument("--workers", type=int, default=0,
                        help="train with N Ray Train (DDP) workers; 0 = in this process (default)")
    parser.add_argument("--address", default=None, help="Ray cluster address (with --workers)")
    args = parser.parse_args(argv)
    if args.workers > 0:
        return _train_with_ray(args)
    cfg = config_from_args(args)
    ds = load_dataset(cfg.data)
    run = run_dir_for(args.config, cfg.run.name, cfg.run.dir)
    print(f"run {run}: {len(ds.labeled)} labeled / {len(ds.test)} test videos, {ds.num_classes} classes, "
          f"{cfg.train.epochs} epochs", flush=True)
    metrics = train_supervised(cfg, ds, run, resume=args.resume)
    r = metrics["run"]
    print(f"trained in {r['train_seconds']:.1f} s (from epoch {r['resumed_from_epoch']}), evaluated in {r['eval_seconds']:.1f} s")
    print((run / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
