"""The in-process back-end: the same stages as the Ray back-end, run one after another in this process.

For debugging, notebooks and ``--in-process`` runs. Training reads the stage's streams itself
(``raytal.selftrain.training_data``); pseudo-labeling runs the Ray pipeline's own stage (inference +
labeling, ``InferLabelStage``) one unit at a time, so the rows it writes — error rows included — are the
ones the Ray pipeline writes.
"""

from __future__ import annotations

import dataclasses

from raytal.config import Config
from raytal.selftrain.pseudo_stage import label_in_process
from raytal.selftrain.spec import LabelSpec, TrainSpec
from raytal.selftrain.teacher import labeling_callables
from raytal.selftrain.train_stage import train_local


class LocalBackend:
    def train(self, cfg: Config, spec: TrainSpec) -> str:
        return train_local(cfg, spec)

    def pseudolabel(self, cfg: Config, spec: LabelSpec) -> dict:
        make_infer, label_video = labeling_callables(cfg, spec.teacher, spec.num_classes, spec.context)
        summary = label_in_process(spec, make_infer, label_video, cfg.ray.infer_batch_size, cfg.train.torch_threads,
                                   feature_dim=cfg.model.input_dim or None)
        return dataclasses.asdict(summary)
