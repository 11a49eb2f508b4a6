"""Where a run's stages execute: one ``Backend`` for the whole job, chosen once (``raytal.cli.job_backend``).

Every stage of every job goes through it: training (``TrainSpec`` -> final checkpoint), pseudo-labeling
(``LabelSpec`` -> the pass's summary) and inference (``DetectSpec`` -> detections, which predictions and
every evaluation read). ``raytal.selftrain.local.LocalBackend`` runs them in this process;
``raytal.distributed.backend.RayBackend`` on Ray Train and Ray Data. Both read the same files with the
same read side and write the same rows.
"""

from __future__ import annotations

from typing import Protocol

from raytal.config import Config
from raytal.selftrain.spec import DetectSpec, LabelSpec, TrainSpec


class Backend(Protocol):
    def train(self, cfg: Config, spec: TrainSpec) -> str:
        """Train the stage (resuming from its last epoch checkpoint); the final checkpoint's path."""

    def pseudolabel(self, cfg: Config, spec: LabelSpec) -> dict:
        """Write the pass's pseudo-label rows; its summary (``PipelineSummary`` as a dict)."""

    def detect(self, cfg: Config, spec: DetectSpec) -> None:
        """Write the checkpoint's detections on the spec's inputs."""
