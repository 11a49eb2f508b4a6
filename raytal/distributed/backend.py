"""The Ray back-end of the self-training rounds: Ray Train for training stages, Ray Data for pseudo labels."""

from __future__ import annotations

import dataclasses

from raytal.config import Config
from raytal.distributed.pseudo_pipeline import run_pseudolabel_pipeline
from raytal.distributed.ray_train import train_ray
from raytal.distributed.session import ensure_ray
from raytal.selftrain.spec import LabelSpec, TrainSpec
from raytal.selftrain.teacher import labeling_callables


class RayBackend:
    def __init__(self, cfg: Config):
        ensure_ray(cfg.ray.address)

    def train(self, cfg: Config, spec: TrainSpec) -> str:
        return train_ray(cfg, spec)

    def pseudolabel(self, cfg: Config, spec: LabelSpec) -> dict:
        make_infer, label_video = labeling_callables(cfg, spec.teacher, spec.num_classes, spec.context)
        rc = cfg.ray
        summary = run_pseudolabel_pipeline(
            spec, make_infer=make_infer, label_video=label_video, batch_size=rc.infer_batch_size,
            pool_size=rc.actor_pool_size, actor_cpus=rc.actor_cpus, use_gpu=rc.use_gpu,
            feature_dim=cfg.model.input_dim or None,
        )
        return dataclasses.asdict(summary)
