"""The in-process back-end: the same stages as the Ray back-end, run one after another in this process.

For debugging, notebooks and ``--in-process`` runs. Training reads the stage's streams itself
(``raytal.selftrain.training_data``); inference runs the Ray pipeline's own stages (inference + labeling,
``InferLabelStage``; detections, ``DetectStage``) one input at a time and writes with the same writer, so
the rows it writes — error rows included — are the ones the Ray pipeline writes.
"""

from __future__ import annotations

import dataclasses
import functools

from raytal.config import Config
from raytal.core import storage
from raytal.selftrain.predict import DetectStage
from raytal.selftrain.pseudo_stage import clean_output, label_in_process, run_in_process, write_table
from raytal.selftrain.spec import DetectSpec, LabelSpec, TrainSpec
from raytal.selftrain.teacher import Predictor, pass_callables
from raytal.selftrain.train_stage import train_local


class LocalBackend:
    def train(self, cfg: Config, spec: TrainSpec) -> str:
        return train_local(cfg, spec)

    def pseudolabel(self, cfg: Config, spec: LabelSpec) -> dict:
        make_infer, label_video = pass_callables(cfg, spec)
        summary = label_in_process(spec, make_infer, label_video, cfg.ray.infer_batch_size, cfg.train.torch_threads,
                                   feature_dim=cfg.model.input_dim or None)
        return dataclasses.asdict(summary)

    def detect(self, cfg: Config, spec: DetectSpec) -> None:
        clean_output(spec.out_dir)
        make_infer = functools.partial(Predictor, cfg, spec.checkpoint, spec.num_classes, spec.input_dim)
        stage = DetectStage(make_infer, spec.input_dim, cfg.train.torch_threads, "semi")
        run_in_process(list(spec.inputs), stage, lambda table, name: write_table(storage.join(spec.out_dir, name), table),
                       cfg.ray.infer_batch_size, "detections", spec.read)
