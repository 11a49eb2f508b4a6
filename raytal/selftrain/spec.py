"""What one stage of a run is, as a single object that flows from ``rounds.py`` to either back-end.

A ``TrainSpec`` says what to train (the objective and the model's shape), on what (the labeled sources
and the pseudo-labeled ones with their labels), from where (an initial checkpoint) and until when (a
segment's last epoch); a ``LabelSpec`` says which teacher labels which videos, and where the rows go.
Both are plain, picklable data: the Ray back-end ships them to its workers and tasks unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raytal.core import storage
from raytal.data.index import Source
from raytal.data.pseudo_io import source_dir
from raytal.recipes.registry import LabelingContext

OBJECTIVES = ("detection", "acp_pretraining")


@dataclass(frozen=True)
class PseudoSource:
    """A source of pseudo-labeled training videos: the shard rows of ``source`` joined with the pseudo-label
    rows in ``labels`` (one source's directory), and for GauFuse Δ labels the previous generation's."""

    part: str  # "unlabeled" or "pool" (how the videos are viewed: raytal.data.splits.part_view)
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

    def source_dirs(self) -> list[str]:
        return [source_dir(self.out_dir, k) for k in range(len(self.sources))]

    @property
    def videos(self) -> int:
        return sum(s.count for _, s in self.sources)


def pseudo_sources(label: LabelSpec, previous: str | None = None) -> tuple[PseudoSource, ...]:
    """The training sources of a labeling pass's output (with the previous generation for Δ labels)."""
    return tuple(
        PseudoSource(part, src, source_dir(label.out_dir, k), None if previous is None else source_dir(previous, k))
        for k, (part, src) in enumerate(label.sources)
    )


def stage_file(spec: TrainSpec, name: str) -> str:
    return storage.join(spec.stage_dir, name)
