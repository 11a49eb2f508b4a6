"""Training streams over sources too large to list: the read side both back-ends share, seeded passes over
shard files, and the in-process shuffle buffer.

A training stream never holds its set of videos: it reads shard files, pass after pass in a seeded order,
and turns their rows into training rows with ``TrainingRows`` — the same function whether Ray Data's
Parquet reader hands it a block (``raytal.distributed.ray_train``) or this process read the file with
pyarrow (``raytal.selftrain.training_data``). Rows are then mixed by a bounded shuffle buffer: Ray Data's
local shuffle on a Train worker, ``shuffled`` in this process. Memory is the buffer's size, whatever the
length of the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raytal.data.pseudo_io import DenseFn, join_pseudo_labels, read_pseudo_table
from raytal.data.shards import SCHEMA, read_shard_tables
from raytal.data.splits import view_rows

T = TypeVar("T")
U = TypeVar("U")
PATH_COLUMN = "path"  # the file of each row, as Ray Data's Parquet reader names it (include_paths=True)


@dataclass(frozen=True)
class FileShare:
    """What a training stream takes from one shard file: its rows (all, or the listed ids) as members of
    ``part``, joined with the pseudo labels of ``labels`` (one pseudo source's directory; with Δ targets,
    ``previous`` is the previous generation's) when the stream is pseudo-labeled."""

    part: str
    ids: tuple[str, ...] | None = None
    labels: str | None = None
    previous: str | None = None


def path_key(path: str) -> str:
    """A file's path without its URI scheme: Ray Data names ``s3://b/k`` as ``b/k``."""
    return path.split("://", 1)[-1]


class TrainingRows:
    """The read side of a training stream: shard rows, with a ``path`` column naming each row's file ->
    training rows (``raytal.data.shards``): the file's share of them (``FileShare``), viewed as its part, with
    their pseudo labels joined; the ``path`` column stays, so a bad row's error names its file. Picklable and
    Ray-free: Ray Data runs it in its read tasks."""

    def __init__(self, shares: Mapping[str, Sequence[FileShare]], setting: str, delta: DenseFn | None = None):
        self.shares = {path_key(f): tuple(s) for f, s in shares.items()}
        self.setting, self.delta = setting, delta

    def __call__(self, table: pa.Table) -> pa.Table:
        paths = table.column(PATH_COLUMN)
        out = []
        for path in dict.fromkeys(paths.to_pylist()):  # the files of the block, in order
            rows = table.filter(pc.equal(paths, path))
            out += [self.share_rows(rows, share, path) for share in self.shares[path_key(path)]]
        return pa.concat_tables(out) if out else table.slice(0, 0)

    def share_rows(self, rows: pa.Table, share: FileShare, path: str) -> pa.Table:
        if share.ids is not None:
            rows = rows.filter(pc.is_in(rows.column("video_id"), value_set=pa.array(share.ids, pa.string())))
        rows = view_rows(rows, share.part, self.setting)
        if share.labels is None:
            return rows
        previous = read_pseudo_table(share.previous) if self.delta is not None and share.previous else None
        return join_pseudo_labels(rows, read_pseudo_table(share.labels), previous, self.delta, source=path)


def read_file_rows(path: str) -> pa.Table:
    """Every row of one shard file, with its ``path`` column: what Ray Data's reader gives, read here."""
    tables = list(read_shard_tables(path))
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return table.append_column(PATH_COLUMN, pa.array([path] * table.num_rows, pa.string()))


def _one_pass(units: Sequence[U], seed: Sequence[int], p: int) -> list[U]:
    order = np.random.default_rng([*seed, p]).permutation(len(units))
    return [units[i] for i in order]


def passes(units: Sequence[U], seed: Sequence[int], count: int, first: int = 0) -> list[U]:
    """Passes ``first .. first + count - 1`` over ``units``, back to back; pass p is the permutation drawn
    from the seed sequence ``[*seed, p]``."""
    return [u for p in range(first, first + count) for u in _one_pass(units, seed, p)]


def endless_passes(units: Sequence[U], seed: Sequence[int]) -> Iterator[U]:
    """``passes`` without an end: the same sequence, for as many passes as are read."""
    p = 0
    while units:
        yield from _one_pass(units, seed, p)
        p += 1


def shuffled(items: Iterable[T], size: int, seed: Sequence[int]) -> Iterator[T]:
    """``items`` through a shuffle buffer of ``size``: the buffer fills, then each new item replaces a
    uniformly drawn buffered one, which is yielded; the rest is flushed in random order at the end.
    ``size <= 1`` keeps the order. Memory: ``size`` items."""
    if size <= 1:
        yield from items
        return
    rng = np.random.default_rng(list(seed))
    buf: list[T] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        out, buf[j] = buf[j], item
        yield out
    for j in rng.permutation(len(buf)):
        yield buf[int(j)]


def held(read: Callable[[U], T], size: Callable[[T], int], limit: int) -> Callable[[U], T]:
    """``read`` with each unit's result kept once read, while all kept results hold at most ``limit`` items
    (``size``): the files of a set that small are read once, not at every pass; the others are read anew.
    Reads must be deterministic (a kept unit gives what a new read would)."""
    kept: dict[U, T] = {}
    count = 0

    def read_held(unit: U) -> T:
        nonlocal count
        if unit in kept:
            return kept[unit]
        out = read(unit)
        if count + size(out) <= limit:
            kept[unit] = out
            count += size(out)
        return out

    return read_held


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), holding one list at a time."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
