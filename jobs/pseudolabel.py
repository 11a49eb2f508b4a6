"""Make one round's pseudo labels with the Ray Data pipeline (raytal/distributed/pseudolabel.py).

    python jobs/pseudolabel.py --config configs/tiny_apl.yaml --checkpoint runs/x/round_0/teacher.pt \
        --round 1 --stages MODULE:FUNCTION [--shards DIR_OR_FILE ...] [--out DIR] [--set key=value ...]

``--stages`` names ``FUNCTION(cfg, checkpoint) -> (make_infer, label_video)``: the teacher loader and
the recipe's labeling stages (see ``run_pseudolabel_pipeline``). Shards default to the run's
``<run>/data/unlabeled/`` and the output to ``<run>/round_<r>/pseudo/`` (overwritten). Uses the
cluster of ``ray.address`` / RAY_ADDRESS, else a local Ray on 127.0.0.1.

Exit status: 0 when every video has a row (error rows included: they are listed in the summary),
1 when a shard file was unreadable (its videos have no rows), 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from raytal.cli import run_job
from raytal.config import add_config_args, config_from_args
from raytal.core.errors import DataError, InputError
from raytal.distributed.pseudolabel import list_shard_files, run_pseudolabel_pipeline
from raytal.distributed.session import ensure_ray


def load_stages(spec: str):
    """'package.module:function' -> the function (imported, not evaluated from text)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise InputError(f"--stages must look like 'package.module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ImportError as e:
        raise InputError(f"--stages: cannot import {module}: {e}") from e
    if not callable(fn):
        raise InputError(f"--stages: {module} has no function {name!r}")
    return fn


def run_dir(cfg) -> Path:
    return Path(cfg.run.dir or Path("runs") / (cfg.run.name or "default"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="teacher checkpoint (its path is the teacher id)")
    p.add_argument("--round", type=int, required=True, help="self-training round r (output round_<r>/pseudo)")
    p.add_argument("--stages", required=True, help="MODULE:FUNCTION building (make_infer, label_video)")
    p.add_argument(
        "--shards", nargs="+", default=None, help="unlabeled shard dirs/files, local or s3:// (default <run>/data/unlabeled)"
    )
    p.add_argument("--out", default=None, help="output dir (default <run>/round_<r>/pseudo)")
    args = p.parse_args(argv)
    if args.round < 0:
        p.error("--round must be >= 0")
    cfg = config_from_args(args)
    build = load_stages(args.stages)
    sources = args.shards or [str(run_dir(cfg) / "data" / "unlabeled")]
    files = [f for s in sources for f in list_shard_files(s)]
    if not files:
        raise DataError(f"no shard files under {sources}")
    out = args.out or str(run_dir(cfg) / f"round_{args.round}" / "pseudo")
    make_infer, label_video = build(cfg, args.checkpoint)
    ensure_ray(cfg.ray.address)
    summary = run_pseudolabel_pipeline(
        files,
        out,
        make_infer=make_infer,
        label_video=label_video,
        round=args.round,
        teacher=args.checkpoint,
        batch_size=cfg.ray.infer_batch_size,
        pool_size=cfg.ray.actor_pool_size,
        actor_cpus=cfg.ray.actor_cpus,
        use_gpu=cfg.ray.use_gpu,
        feature_dim=cfg.model.input_dim or None,
    )
    print(summary.format())
    if summary.file_errors:
        print(f"error: {len(summary.file_errors)} shard file(s) unreadable; their videos have no rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
