"""The Ray back-end of the self-training rounds: Ray Train for training stages, Ray Data for pseudo labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from raytal.config import Config
from raytal.data.shards import list_shards
from raytal.distributed.pseudolabel import run_pseudolabel_pipeline
from raytal.distributed.session import ensure_ray
from raytal.distributed.train import train_ray
from raytal.selftrain.common import pseudolabel_callables
from raytal.selftrain.labeling import ICDContext


class RayBackend:
    def __init__(self, cfg: Config):
        ensure_ray(cfg.ray.address)

    def train(
        self, cfg: Config, stage_dir: Path, split_dir: Path, pseudo_dir: Path | None, init: str | None,
        num_classes: int, input_dim: int, *, prev_pseudo_dir: Path | None = None, stop_epoch: int | None = None,
    ) -> str:
        return train_ray(cfg, stage_dir, split_dir, pseudo_dir, init, num_classes, input_dim,
                         prev_pseudo_dir=prev_pseudo_dir, stop_epoch=stop_epoch)

    def pseudolabel(
        self, cfg: Config, teacher: str, round_index: int, split_dir: Path, out_dir: Path, num_classes: int,
        icd: ICDContext | None,
    ) -> dict:
        make_infer, label_fn = pseudolabel_callables(cfg, teacher, num_classes, icd)
        rc = cfg.ray
        summary = run_pseudolabel_pipeline(
            [str(p) for p in list_shards(split_dir / "unlabeled")], str(out_dir),
            make_infer=make_infer, label_video=label_fn, round=round_index, teacher=teacher,
            batch_size=rc.infer_batch_size, pool_size=rc.actor_pool_size, actor_cpus=rc.actor_cpus,
            use_gpu=rc.use_gpu,
        )
        return dataclasses.asdict(summary)
