"""The Ray back-end: Ray Train for training stages, Ray Data for pseudo labels and detections."""

from __future__ import annotations

import dataclasses
import functools

import ray

from raytal.config import Config
from raytal.distributed.pseudo_pipeline import run_predict_pipeline, run_pseudolabel_pipeline
from raytal.distributed.ray_train import train_ray
from raytal.distributed.session import ensure_ray, quiet_console
from raytal.selftrain.spec import DetectSpec, LabelSpec, TrainSpec
from raytal.selftrain.teacher import Predictor, pass_callables


class RayBackend:
    """Joins (or starts) Ray when made: ``ray.address``, else ``RAY_ADDRESS``, else a private local Ray.
    ``verbose`` keeps Ray's own console output (progress bars, worker logs) on the console; else it goes to
    Ray's session log files only (``raytal.distributed.session``)."""

    def __init__(self, cfg: Config, verbose: bool = False):
        if not verbose and not ray.is_initialized():
            quiet_console()
        ensure_ray(cfg.ray.address, verbose=verbose)

    def train(self, cfg: Config, spec: TrainSpec) -> str:
        return train_ray(cfg, spec)

    def pseudolabel(self, cfg: Config, spec: LabelSpec) -> dict:
        make_infer, label_video = pass_callables(cfg, spec)
        rc = cfg.ray
        summary = run_pseudolabel_pipeline(
            spec, make_infer=make_infer, label_video=label_video, batch_size=rc.infer_batch_size,
            pool_size=rc.actor_pool_size, actor_cpus=rc.actor_cpus, use_gpu=rc.use_gpu,
            feature_dim=cfg.model.input_dim or None,
        )
        return dataclasses.asdict(summary)

    def detect(self, cfg: Config, spec: DetectSpec) -> None:
        rc = cfg.ray
        run_predict_pipeline(
            list(spec.inputs), spec.read, spec.out_dir,
            make_infer=functools.partial(Predictor, cfg, spec.checkpoint, spec.num_classes, spec.input_dim),
            feature_dim=spec.input_dim, batch_size=rc.infer_batch_size, pool_size=rc.actor_pool_size,
            actor_cpus=rc.actor_cpus, use_gpu=rc.use_gpu)
