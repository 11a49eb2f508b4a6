"""Seeded streams over sources too large to list: passes in shuffled unit order, a shuffle buffer.

Training never holds a set of videos: it reads a stream of *units* (shard files, in a seeded order per pass)
and mixes their rows through a bounded shuffle buffer. Both are pure functions of their seeds, so the
in-process back-end and a 1-worker Ray Train run see the same sequence of videos, and a resumed stage can
replay it. Memory is the buffer's ``size`` items, whatever the length of the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
U = TypeVar("U")


def _one_pass(units: Sequence[U], seed: Sequence[int], p: int) -> list[tuple[int, U]]:
    order = np.random.default_rng([*seed, p]).permutation(len(units))
    return [(p, units[i]) for i in order]


def unit_passes(units: Sequence[U], seed: Sequence[int], passes: int) -> list[tuple[int, U]]:
    """``passes`` back-to-back permutations of ``units`` as (pass, unit); pass p is permuted by the
    seed sequence ``[*seed, p]``."""
    return [x for p in range(passes) for x in _one_pass(units, seed, p)]


def endless_passes(units: Sequence[U], seed: Sequence[int]) -> Iterator[tuple[int, U]]:
    """``unit_passes`` without an end: the same sequence, for as many passes as are read."""
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


def flat_map(units: Iterable[tuple[int, U]], read: Callable[[U], Iterable[T]]) -> Iterator[T]:
    """The items of every unit, in unit order."""
    for _, unit in units:
        yield from read(unit)


def held(read: Callable[[U], Iterable[T]], limit: int) -> Callable[[U], list[T]]:
    """``read`` with each unit's items kept once read, while all kept items number at most ``limit``: the
    units of a set that small are read once, not at every pass; the others are read anew. Reads must be
    deterministic (a kept unit gives what a new read would)."""
    kept: dict[U, list[T]] = {}
    count = 0

    def read_held(unit: U) -> list[T]:
        nonlocal count
        if unit in kept:
            return kept[unit]
        items = list(read(unit))
        if count + len(items) <= limit:
            kept[unit] = items
            count += len(items)
        return items

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
