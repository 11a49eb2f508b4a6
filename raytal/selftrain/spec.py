"""What one stage of a run is, as a single object that flows from ``rounds.py`` to either back-end.

A ``TrainSpec`` says what to train (the objective and the model's shape), on what (the labeled sources
and the pseudo-labeled ones with their labels), from where (an initial checkpoint) and until when (a
segment's last epoch); a ``LabelSpec`` says which teacher labels which videos, and where the rows go; a
``DetectSpec`` which checkpoint detects actions in which inputs, and where the detections go.
Both are plain, picklable data: the Ray back-end ships them to its workers and tasks unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

from raytal.core.outputs import STAGING_PREFIX
from raytal.data.index import Source
from raytal.data.pseudo_io import source_dir
from raytal.recipes.registry import LabelingContext

OBJECTIVES = ("detection", "acp_pretraining")


@dataclass(frozen=True)
class PseudoSource:
    """A source of pseudo-labeled training videos: the shard rows of ``source`` joined with the pseudo-label
    rows in ``labels`` (one source's directory), and for GauFuse Δ labels the previous generation's."""

    part: str  # "unlabeled" or "pool" (how the videos are viewed: raytal.data.splits.view_rows)
    source: Source
    labels: str
    previous: str | None = None


@dataclass(frozen=True)
class TrainSpec:
    """One training stage (teacher, student, or a segment of a student's schedule)."""

    name: str  # its name in the run's ledger, e.g. "round_1/train"
    stage_dir: str  # checkpoints and TensorBoard scalars (local path or URI)
    num_classes: int
    input_dim: int
    setting: str
    labeled: tuple[tuple[str, Source], ...] = ()  # (part, source): videos trained on their ground truth
    pseudo: tuple[PseudoSource, ...] = ()
    num_labeled: int = 0  # videos in ``labeled`` (an epoch's length by default)
    num_pseudo: int = 0  # pseudo-labeled videos with labels to train on (error rows and empty ones excluded)
    objective: str = "detection"  # or "acp_pretraining" (APL's ACP on videos whose labels are not read)
    init: str | None = None  # start from this checkpoint's weights
    start_epoch: int = 0  # the segment's first epoch: its data streams are seeded by it
    stop_epoch: int | None = None  # end the segment here; the learning-rate schedule spans train.epochs
    delta_targets: bool = False  # the pseudo sources' dense targets become Δ labels against ``previous``

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"TrainSpec.objective must be one of {OBJECTIVES}, got {self.objective!r}")


@dataclass(frozen=True)
class LabelSpec:
    """One pseudo-labeling pass of a round: ``teacher`` labels every video of ``sources``; the rows of the
    k-th source go to ``<out_dir>/shard=<k>`` (``raytal.data.pseudo_io.source_dir``)."""

    teacher: str
    round: int
    out_dir: str
    num_classes: int
    setting: str
    sources: tuple[tuple[str, Source], ...]  # (part, source)
    context: LabelingContext = field(default_factory=LabelingContext)
    # (cfg, teacher, num_classes, context) -> (make_infer, label_video); None: the teacher with the config's
    # recipes (raytal.selftrain.teacher.labeling_callables); jobs/pseudolabel.py --stages names another
    stages: Callable | None = None

    @property
    def name(self) -> str:
        """The pass as its run names it (``round_1/pseudo``): its output directory's last two names (a job's
        staging folder inside it, ``raytal.core.outputs``, is not one of them)."""
        names = self.out_dir.rstrip("/").split("/")
        if names[-1].startswith(STAGING_PREFIX):
            names = names[:-1]
        return "/".join(names[-2:])

    @property
    def videos(self) -> int:
        return sum(s.count for _, s in self.sources)


def pseudo_sources(label: LabelSpec, previous: str | None = None) -> tuple[PseudoSource, ...]:
    """The training sources of a labeling pass's output (with the previous generation for Δ labels)."""
    return tuple(
        PseudoSource(part, src, source_dir(label.out_dir, k), None if previous is None else source_dir(previous, k))
        for k, (part, src) in enumerate(label.sources)
    )


class InferenceInput(NamedTuple):
    """What one read task of an inference pass reads: a shard file (all its rows, or the listed ids), or for
    predictions a group of feature files; its rows go to output ``k`` (a pseudo source's ``shard=<k>``)."""

    k: int
    part: str
    file: str
    ids: tuple[str, ...] | None
    count: int


# read(input, rows per table) -> its rows, tagged with the input's output k and part
ReadFn = Callable[[InferenceInput, int], Iterator[pa.Table]]


@dataclass(frozen=True)
class DetectSpec:
    """A checkpoint's test-time detections on ``inputs`` (read by ``read``), written to ``out_dir`` as
    Parquet files of ``raytal.selftrain.predict.DETECTIONS_SCHEMA``."""

    checkpoint: str
    inputs: tuple[InferenceInput, ...]
    read: ReadFn
    out_dir: str
    num_classes: int
    input_dim: int
