"""The main job: pseudo-label self-training rounds (teacher → pseudo labels → student → evaluation).

Examples:
  python jobs/selftrain.py --config configs/tiny_npl.yaml
  python jobs/selftrain.py --config configs/thumos14_apl.yaml --set data.labeled_ratio=0.2 --set run.rounds=2
  ray job submit --working-dir . -- python jobs/selftrain.py --config configs/thumos14_ntc.yaml

Training runs through Ray Train and pseudo-labeling through Ray Data: on the cluster named by
``--address`` / ``ray.address`` / ``RAY_ADDRESS``, else on a local Ray bound to 127.0.0.1. ``--in-process``
runs the same stages without Ray (debugging, notebooks). Re-running the same command resumes at the
last completed stage; a finished run says so and prints its table.

Every round is evaluated on the validation part of the training videos (data.val_ratio) and on the test
subset; the run's model, <run>/final/model.pt, is the round best on val, and the run stops once val mAP
stops improving (run.patience). A config without run.rounds is the supervised detector alone (round 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_backend, job_config, job_parser, run_job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)
    cfg = job_config(args)
    from raytal.selftrain.report import quality_table, round_tables, selection_text
    from raytal.selftrain.rounds import run_dir_of, run_selftrain

    metrics = run_selftrain(cfg, job_backend(args, cfg), overwrite=args.overwrite)
    print(f"\nrun directory: {run_dir_of(cfg)}\n\n{round_tables(metrics)}\n")
    print(f"Pseudo-label quality (%):\n{quality_table(metrics)}\n")
    print(selection_text(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
