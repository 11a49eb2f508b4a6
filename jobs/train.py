"""Train the supervised detector on the labeled part of a dataset split and evaluate it on the test subset.

    python jobs/train.py --config configs/tiny_supervised.yaml
    python jobs/train.py --config configs/thumos14_supervised.yaml --set data.labeled_ratio=0.1 --set train.seed=1
    python jobs/train.py --config configs/thumos14_supervised.yaml --workers 2     # DDP through Ray Train

This is round 0 of the self-training job (``jobs/selftrain.py`` with ``run.rounds=0``): the same stages,
run directory and evaluator. The run directory is ``run.dir``, else ``runs/<run.name>``; it holds
config.yaml, index.json (the split), round_0/train/ (checkpoints, TensorBoard scalars), metrics.json,
report.md and plots. Re-running the same command resumes where it stopped.

Without ``--workers`` training runs in this process; with ``--workers N`` it runs through Ray Train with N
DDP workers (on the cluster named by ``--address`` / ``ray.address`` / ``RAY_ADDRESS``, else a local Ray
bound to 127.0.0.1).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_backend, job_config, job_parser, run_job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, in_process=False)
    parser.add_argument("--workers", type=int, default=0,
                        help="train with N Ray Train (DDP) workers; 0 = in this process (default)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    args.in_process = not args.workers
    if args.workers:  # an override like any other, so the config's rules see it before anything starts
        args.overrides.append(f"ray.num_workers={args.workers}")
    cfg = job_config(args)
    cfg.run.rounds = 0
    from raytal.selftrain.report import round_tables
    from raytal.selftrain.rounds import run_dir_of, run_selftrain

    metrics = run_selftrain(cfg, job_backend(args, cfg), overwrite=args.overwrite)
    print(f"\nrun directory: {run_dir_of(cfg)}\n\n{round_tables(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
