"""Turn an ActionFormer checkpoint into a raytal detector checkpoint (a teacher, or a model to predict with).

    python jobs/import_checkpoint.py --config configs/thumos14_i3d_supervised.yaml \\
        --checkpoint ckpt/thumos_i3d_reproduce/epoch_034.pth.tar --out imported.pt
    python jobs/selftrain.py --config configs/thumos14_i3d_apl_ntc.yaml --set model.quality_heads=false \\
        --set recipe.apl.enabled=false --set run.teacher=imported.pt       # round 1 starts from it
    python jobs/predict.py --config configs/thumos14_i3d_supervised.yaml --checkpoint imported.pt \\
        --features data/thumos/i3d_features --out results.json

Input: a checkpoint saved by ActionFormer's train.py (happyharrycn/actionformer_release: for example ``epoch_035.pth.tar``,
``state_dict`` and ``state_dict_ema`` of its convTransformer model, with or without DataParallel's ``module.``
prefix), read with ``torch.load(weights_only=True)``. ``--ema`` (the default, as ActionFormer's eval.py) takes
the EMA weights, ``--no-ema`` the trained ones. The class count and feature width are read off the weights; the
other sizes come from the config's ``model.*`` (and ``data.max_seq_len``), which must match ActionFormer's
config of that model: a tensor that does not fit is an error naming the key, the shape expected and the one
found. APL's quality heads are raytal's: an ActionFormer model has none (import with a config without them).

Output: a raytal detector checkpoint (``kind: detector``, weights under ``model``), written atomically; it is
what ``run.teacher``, jobs/predict.py and the evaluation of a run load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_config, job_parser, run_job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = job_parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="ActionFormer train.py checkpoint (epoch_035.pth.tar, for example)")
    p.add_argument("--out", required=True, help="the raytal checkpoint to write (local path or storage URI)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="use the EMA weights (state_dict_ema, default) or the trained ones (--no-ema: state_dict)")
    args = p.parse_args(argv)
    cfg = job_config(args)
    from raytal.engine.checkpoint import save_checkpoint
    from raytal.selftrain.models import import_actionformer

    state = import_actionformer(cfg, args.checkpoint, ema=args.ema)
    save_checkpoint(args.out, state)
    params = sum(v.numel() for v in state["model"].values())
    print(f"{args.out}: {state['imported_from']} -> raytal detector, {state['num_classes']} classes, "
          f"D = {state['input_dim']}, {params:,} parameters, after epoch {state['epoch']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
