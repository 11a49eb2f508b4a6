"""The videos a training stage reads, as streams: shard rows joined with their pseudo labels, in seeded
passes over the sources, through a bounded shuffle buffer. Nothing holds the set.

Both back-ends read the same units with the same functions: in-process, ``stage_streams`` chains them
here; under Ray Train, each unit is read by a Ray Data task (``read_unit``) and the worker applies the same
shuffle buffer to the rows it receives (``shuffled_rows``). With one worker the two see the same videos in
the same order.

A pseudo-labeled unit is one shard file (or its listed ids) joined with the pseudo-label rows of that file
(``<pseudo>/shard=<k>``: a few hundred rows, never the pool's): videos whose row is an error row, or whose
labels are empty, are skipped; with GauFuse regeneration the dense targets become Δ labels against the
previous generation's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Union

from raytal.config import Config
from raytal.core.video import Video
from raytal.data.index import Source, source_videos
from raytal.data.pseudo_io import apply_pseudo_labels, read_pseudo_labels
from raytal.data.shards import read_shard_tables, rows_to_videos
from raytal.data.splits import part_view
from raytal.data.stream import endless_passes, flat_map, held, shuffled, unit_passes
from raytal.pseudo.delta_labels import delta_labels
from raytal.selftrain.spec import PseudoSource, TrainSpec

# Seed-sequence entries of the streams (with train.seed and the segment's start epoch).
LABELED_STREAM, PSEUDO_STREAM, BUFFER_STREAM = 11, 12, 15

Unit = Union[tuple[str, Source], PseudoSource]


def has_labels(v: Video) -> bool:
    """Whether a pseudo-labeled video has anything to train on."""
    return bool(len(v.labels)) or v.targets is not None or v.teacher_scores is not None


def pseudo_videos(ps: PseudoSource, setting: str, delta_targets: bool = False) -> Iterator[Video]:
    """The videos of one pseudo source with their pseudo labels (see the module docstring)."""
    records = read_pseudo_labels(ps.labels)
    previous = read_pseudo_labels(ps.previous) if delta_targets and ps.previous else {}
    for table in read_shard_tables(ps.source.file, ps.source.ids):
        videos = [part_view(v, ps.part, setting) for v in rows_to_videos(table, ps.source.file, check_finite=True)]
        for v in apply_pseudo_labels(videos, records):
            if delta_targets and v.targets is not None:
                prev = previous.get(v.video_id)
                v = dataclasses.replace(v, targets=delta_labels(None if prev is None else prev.targets, v.targets))
            if has_labels(v):
                yield v


def read_unit(unit: Unit, setting: str, delta_targets: bool = False) -> Iterator[Video]:
    """The training videos of one unit: a (part, source) of labeled videos, or a pseudo source."""
    if isinstance(unit, PseudoSource):
        return pseudo_videos(unit, setting, delta_targets)
    part, src = unit
    # NaN/Inf features would surface as a NaN loss mid-training, naming neither the file nor the video.
    return source_videos(src, part, setting, check_finite=True)


def stream_seed(cfg: Config, spec: TrainSpec, kind: int) -> list[int]:
    return [cfg.train.seed, spec.start_epoch, kind]


def stage_units(spec: TrainSpec) -> dict[str, tuple[list[Unit], int, int]]:
    """{"labeled" | "pseudo": (units, videos per pass, seed-sequence kind)} of the stage's non-empty sets."""
    out = {}
    if spec.labeled and spec.num_labeled:
        out["labeled"] = (list(spec.labeled), spec.num_labeled, LABELED_STREAM)
    if spec.pseudo and spec.num_pseudo:
        out["pseudo"] = (list(spec.pseudo), spec.num_pseudo, PSEUDO_STREAM)
    return out


def shuffled_rows(videos: Iterable[Video], cfg: Config, spec: TrainSpec, kind: int, rank: int = 0) -> Iterator[Video]:
    """The stage's shuffle buffer over a stream of videos (``train.shuffle_buffer`` of them in memory).

    Each DDP rank draws with its own seed: the ranks receive disjoint rows of the same seeded passes, often
    the same videos in the same order (one shard file: every pass reads it in file order), and with one
    seed they trained on the same videos at every step. Rank 0 draws as the in-process stream does."""
    seed = [*stream_seed(cfg, spec, kind), BUFFER_STREAM] + ([rank] if rank else [])
    return shuffled(videos, cfg.train.shuffle_buffer, seed)


def stage_streams(
    cfg: Config, spec: TrainSpec, read: Callable[[Unit, str, bool], Iterable[Video]] = read_unit,
) -> dict[str, Iterator[Video]]:
    """Endless, shuffled video streams of the stage, read in this process (by ``read``: the units' videos).

    Up to ``train.shuffle_buffer`` videos of a stream are kept once read (the buffer holds as many): a few
    labeled videos, read again at every pass, decoded their shard's whole row group each time."""
    streams = {}
    for name, (units, _, kind) in stage_units(spec).items():
        passes = endless_passes(units, stream_seed(cfg, spec, kind))
        videos = flat_map(passes, held(lambda u: read(u, spec.setting, spec.delta_targets), cfg.train.shuffle_buffer))
        streams[name] = shuffled_rows(videos, cfg, spec, kind)
    return streams


def finite_passes(units: list[Unit], per_pass: int, needed: int, buffer: int, seed: list[int]) -> list[tuple[int, Unit]]:
    """Enough passes of ``units`` for a reader that cannot be endless (a Ray Data dataset) to give the
    first ``needed`` videos of the endless stream: ``needed`` plus a shuffle ``buffer`` (the buffer's
    final flush would reorder the tail), plus one pass."""
    passes = math.ceil((needed + max(buffer, 0)) / max(per_pass, 1)) + 1
    return unit_passes(units, seed, passes)
