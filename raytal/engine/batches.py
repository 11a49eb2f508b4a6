"""Training batches from two endless video streams: labeled videos and pseudo-labeled ones.

Every global batch holds ``n_l`` labeled then ``n_u`` pseudo-labeled videos (``split_batch``: the share
``train.unlabeled_per_batch`` of pseudo videos when both kinds exist). Under DDP, rank r takes positions
r, r+W, r+2W, ... of each global batch, and reads its own stream of each kind (Ray Train gives every worker
a disjoint split of each dataset). Each video is cropped with its own RNG, seeded by (seed, epoch, step,
position), so a crop does not depend on which worker holds it.

An epoch is ``steps_per_epoch`` global batches: by default one pass over the larger of the two sets (at
least ``min_batches``); with a large unlabeled pool, a fixed number of steps (``train.steps_per_epoch``),
and the streams simply continue into the next epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from raytal.core.seeds import SeedStream
from raytal.core.video import Video
from raytal.model.batch import Batch, collate, concat_batches


def split_batch(batch_size: int, unlabeled_per_batch: float, n_labeled: int, n_pseudo: int) -> tuple[int, int]:
    """(labeled, pseudo) videos per global batch: ``round(B × unlabeled_per_batch)`` pseudo videos when
    both sets are non-empty, the whole batch from the one set otherwise."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if not 0.0 <= unlabeled_per_batch <= 1.0:
        raise ValueError(f"unlabeled_per_batch must be in [0, 1], got {unlabeled_per_batch}")
    if n_labeled == 0 and n_pseudo == 0:
        raise ValueError("no training videos: both the labeled and the pseudo-labeled sets are empty")
    if n_pseudo == 0:
        return batch_size, 0
    if n_labeled == 0:
        return 0, batch_size
    n_u = min(batch_size, int(round(batch_size * unlabeled_per_batch)))
    return batch_size - n_u, n_u


def steps_per_epoch(n_labeled: int, n_pseudo: int, n_l: int, n_u: int, min_batches: int = 0, fixed: int = 0) -> int:
    """``fixed`` when > 0; else enough global batches for the larger stream to be seen once, at least
    ``min_batches`` (the smaller stream repeats)."""
    if fixed > 0:
        return fixed
    return max(math.ceil(n_labeled / n_l) if n_l else 0, math.ceil(n_pseudo / n_u) if n_u else 0, min_batches, 1)


def rank_share(n_l: int, n_u: int, rank: int, world: int) -> tuple[int, int, list[int]]:
    """(labeled count, pseudo count, global positions) of rank ``rank``'s share of a global batch."""
    if world <= 0 or not 0 <= rank < world:
        raise ValueError(f"expected 0 <= rank < world, got rank={rank}, world={world}")
    positions = list(range(rank, n_l + n_u, world))
    k_l = sum(p < n_l for p in positions)
    return k_l, len(positions) - k_l, positions


def rank_batches(
    labeled: Iterator[Video],
    pseudo: Iterator[Video],
    *,
    n_l: int,
    n_u: int,
    rank: int,
    world: int,
    seed: int,
    start_epoch: int,
    steps_per_epoch: int,
    pad_multiple: int,
    max_seq_len: int,
    trunc_thresh: float,
) -> Iterator[tuple[int, int, Batch]]:
    """Endless (epoch, step, batch) for this rank from ``start_epoch`` on: each step takes the rank's
    labeled then pseudo videos from the streams and crops each with its position's RNG. A stream that
    runs dry ends the iteration (streams are meant to be endless passes)."""
    k_l, k_u, positions = rank_share(n_l, n_u, rank, world)
    epoch = start_epoch
    while True:
        for step in range(steps_per_epoch):
            videos = [v for _, v in zip(range(k_l), labeled)] + [v for _, v in zip(range(k_u), pseudo)]
            if len(videos) < k_l + k_u:
                return
            parts = [
                collate([v], pad_multiple=pad_multiple, max_seq_len=max_seq_len, trunc_thresh=trunc_thresh,
                        rng=np.random.default_rng([seed, epoch, step, pos, SeedStream.CROP]))
                for v, pos in zip(videos, positions)
            ]
            yield epoch, step, concat_batches(parts)
        epoch += 1
