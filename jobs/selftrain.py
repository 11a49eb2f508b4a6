"""The main job: pseudo-label self-training rounds (teacher → pseudo labels → student → evaluation).

Examples:
  python jobs/selftrain.py --config configs/tiny_npl.yaml
  python jobs/selftrain.py --config configs/thumos14_apl.yaml --set data.labeled_ratio=0.2 --set run.rounds=2
  ray job submit --working-dir . -- python jobs/selftrain.py --config configs/thumos14_ntc.yaml

Training runs through Ray Train and pseudo-labeling through Ray Data: on the cluster named by
``--address`` / ``ray.address`` / ``RAY_ADDRESS``, else on a local Ray bound to 127.0.0.1. ``--in-process``
runs the same stages without Ray (debugging, notebooks). Re-running the same command resumes at the
last completed stage; a finished run says so and prints its table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.config import ConfigError, add_config_args, config_from_args  # noqa: E402
from raytal.data.errors import DataError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--address", default=None, help="Ray cluster address (overrides ray.address / RAY_ADDRESS)")
    parser.add_argument("--in-process", action="store_true", help="run every stage in this process, without Ray")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = config_from_args(args)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.address is not None:
        cfg.ray.address = args.address
    from raytal.selftrain.report import map_table, quality_table
    from raytal.selftrain.rounds import run_dir_of, run_selftrain

    if args.in_process:
        from raytal.selftrain.local import LocalBackend

        backend = LocalBackend()
    else:
        from raytal.distributed.backend import RayBackend

        backend = RayBackend(cfg)
    try:
        metrics = run_selftrain(cfg, backend)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nrun directory: {run_dir_of(cfg)}\n\nTest mAP (%):\n{map_table(metrics)}\n")
    print(f"Pseudo-label quality (%):\n{quality_table(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
