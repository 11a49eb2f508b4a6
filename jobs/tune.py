"""Ray Tune sweep of self-training hyper-parameters (N_pos, λ, τ_icd/ς_icd, temperatures, any config key).

Examples:
  python jobs/tune.py --config configs/tune_npl.yaml
  python jobs/tune.py --config configs/tune_ntc.yaml --set tune.max_concurrent=2 --set run.dir=runs/ntc_sweep
  python jobs/tune.py --config configs/tune_npl.yaml --set tune.reuse_teacher=false   # time without reuse

The config's ``tune`` section names the search space over dotted config keys, e.g.
  tune: {space: {recipe.npl.n_pos: {grid: [5, 10, 15]}, recipe.ntc.lam: {uniform: [0.5, 0.95]}},
         num_samples: 1, max_concurrent: 1, grace_period: 1, metric: val_average_mAP}
(kinds: grid, uniform, loguniform, choice). Each trial is one self-training run (the same stages as
jobs/selftrain.py; training through Ray Train, pseudo-labels through Ray Data) evaluated after every round
on a seeded validation split of the *training* videos (data.val_ratio > 0); ASHA stops weak trials early.
The test subset is not read during the sweep. When the swept keys cannot change the round-0 teacher, the
teacher is trained once and shared by all trials (tune.reuse_teacher).

Output in the sweep directory (run.dir, default runs/<run.name>): results.md / results.csv (one row per
trial: swept values, val mAP, state), val_map.png (val mAP against each swept key), best_config.yaml (a
ready-to-run jobs/selftrain.py config with run.eval_test=true), best_test.json (the best trial's final
model evaluated once on test) and summary.json (best trial, timings). Re-running the same command resumes
an interrupted sweep (Tuner.restore) without re-running finished trials.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_config, job_parser, run_job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, in_process=False)
    parser.add_argument("--no-test", action="store_true", help="skip the final test evaluation of the best trial")
    args = parser.parse_args(argv)
    cfg = job_config(args)
    from raytal.distributed.sweep import SweepInterrupted, run_sweep, write_table

    try:
        result = run_sweep(cfg, evaluate_test=not args.no_test, overwrite=args.overwrite, verbose=args.verbose)
    except SweepInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    print(f"\nsweep directory: {result.sweep_dir}\n")
    print(write_table(result.rows, list(cfg.tune.space), cfg.tune.metric, result.sweep_dir))
    if result.best is not None:
        print(f"best: {result.best['overrides']} val {cfg.tune.metric} {100 * result.best[cfg.tune.metric]:.2f} %")
        print(f"best config: {result.best_config}")
    if result.test is not None:
        print(f"test average mAP of the best trial's model: {100 * result.test['average_mAP']:.2f} %")
    print(f"timings: {result.timings}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
