"""The videos a training stage reads, as streams both back-ends read alike: shard files in seeded passes,
their rows turned into training rows on the read side, then mixed by a bounded shuffle buffer.

A stage has up to two streams, "labeled" (its labeled sources, trained on their ground truth) and "pseudo"
(each pseudo source's shard file joined with its pseudo labels, ``<pseudo>/shard=<k>``: a few hundred rows,
never the pool's). A ``Stream`` names its distinct shard files, the read side that turns a file's rows into
training rows (``raytal.data.stream.TrainingRows``: the file's share of rows viewed as their part, pseudo
labels joined, error rows and empty labels left out, GauFuse's Δ targets) and its seeds. In this process,
``local_streams`` reads the files with pyarrow, pass after pass, through ``shuffled``; under Ray Train,
``raytal.distributed.ray_train`` hands the same file list to Ray Data's Parquet reader with the same read
side, and the workers use Ray Data's seeded local shuffle. Neither ever holds the set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from raytal.config import Config
from raytal.core.seeds import SeedStream
from raytal.core.video import Video
from raytal.data.shards import rows_to_videos
from raytal.data.stream import FileShare, TrainingRows, endless_passes, held, passes, read_file_rows, shuffled
from raytal.pseudo.delta_labels import delta_labels
from raytal.selftrain.spec import TrainSpec


@dataclass(frozen=True)
class Stream:
    """One of a stage's video streams (see the module docstring)."""

    files: tuple[str, ...]  # distinct shard files, in the index's order
    rows: TrainingRows  # the read side: a file's rows -> training rows
    videos: int  # videos per pass
    seed: tuple[int, ...]  # train.seed, the stage segment's first epoch, the stream's SeedStream

    def passes(self, count: int) -> list[str]:
        """The files of the stream's first ``count`` passes, in order."""
        return passes(self.files, self.seed, count)

    def buffer(self, size: int) -> int:
        """The shuffle buffer of ``train.shuffle_buffer`` = ``size`` videos, at most one pass: a larger one holds
        several copies of a small set, mixes no better, and only delays the first video."""
        return min(size, self.videos)

    def shuffle_seed(self, rank: int = 0) -> list[int]:
        """The shuffle buffer's seed sequence. Each DDP rank draws with its own: the ranks receive disjoint
        rows of the same passes, and with one seed they trained on the same videos at every step."""
        return [*self.seed, SeedStream.SHUFFLE] + ([rank] if rank else [])


def _stream(shares: dict[str, list[FileShare]], spec: TrainSpec, videos: int, seed: tuple[int, ...]) -> Stream:
    delta = delta_labels if spec.delta_targets else None
    return Stream(tuple(shares), TrainingRows(shares, spec.setting, delta), videos, seed)


def stage_streams(cfg: Config, spec: TrainSpec) -> dict[str, Stream]:
    """{"labeled" | "pseudo": Stream} of the stage's non-empty sets."""
    out = {}
    if spec.labeled and spec.num_labeled:
        shares: dict[str, list[FileShare]] = {}
        for part, src in spec.labeled:
            shares.setdefault(src.file, []).append(FileShare(part, src.ids))
        out["labeled"] = _stream(shares, spec, spec.num_labeled,
                                 (cfg.train.seed, spec.start_epoch, SeedStream.LABELED_VIDEOS))
    if spec.pseudo and spec.num_pseudo:
        shares = {}
        for ps in spec.pseudo:
            shares.setdefault(ps.source.file, []).append(FileShare(ps.part, ps.source.ids, ps.labels, ps.previous))
        out["pseudo"] = _stream(shares, spec, spec.num_pseudo,
                                (cfg.train.seed, spec.start_epoch, SeedStream.PSEUDO_VIDEOS))
    return out


def training_videos(tables: Iterable[pa.Table]) -> Iterator[Video]:
    """Training rows -> videos. NaN/Inf features would surface as a NaN loss mid-training, naming neither the
    file nor the video: they are refused here."""
    for table in tables:
        yield from rows_to_videos(table, check_finite=True)


def local_streams(cfg: Config, spec: TrainSpec) -> dict[str, Iterator[Video]]:
    """The stage's endless, shuffled video streams, read in this process (``local_stream``)."""
    return {name: local_stream(stream, cfg.train.shuffle_buffer) for name, stream in stage_streams(cfg, spec).items()}


def local_stream(stream: Stream, buffer: int) -> Iterator[Video]:
    """One stream read in this process: its files pass after pass, through a shuffle buffer of ``buffer`` videos.

    Files whose training rows number at most ``buffer`` in all are kept once read (the buffer holds as many
    videos anyway): a few labeled videos are not read again from their shard at every pass."""
    read = held(lambda f: stream.rows(read_file_rows(f)), lambda t: t.num_rows, buffer)
    tables = (read(f) for f in endless_passes(stream.files, stream.seed))
    return shuffled(training_videos(tables), stream.buffer(buffer), stream.shuffle_seed())


def finite_passes(stream: Stream, needed: int, buffer: int) -> int:
    """How many passes a reader that cannot be endless (a Ray Data dataset) needs to give the first ``needed``
    videos of the endless stream: ``needed``, plus twice a shuffle ``buffer`` (a local shuffle yields from a
    buffer half again its size, and the end of the data changes what it yields last), plus one pass."""
    return math.ceil((needed + 2 * max(buffer, 0)) / max(stream.videos, 1)) + 1
