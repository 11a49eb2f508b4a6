"""The named random streams of a run's seeds: one registry, so no two draws share a stream by accident.

Every random choice takes a seed from the config (``data.split_seed`` for the split, ``train.seed`` for
the rest) and a stream of its own: the stream's number goes into the ``numpy.random.default_rng`` seed
sequence beside the position of the draw (epoch, step, ...), so the draws of one stream never depend on
how many another made, and a resumed stage draws what an uninterrupted one would.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class SeedStream(IntEnum):
    """Seed-sequence entries, one per kind of random choice (values are part of every stored result:
    changing one changes the splits or the training of every config)."""

    VAL_SPLIT = 1  # the held-out validation part (data.split_seed)
    LABELED_SPLIT = 2  # labeled vs unlabeled among the rest (data.split_seed)
    LABELED_VIDEOS = 11  # the order of the labeled stream's shard files, pass by pass
    PSEUDO_VIDEOS = 12  # the order of the pseudo-labeled stream's shard files
    CROP = 13  # a training video's crop, by its position in the global batch
    DROPOUT = 14  # the torch RNG of an epoch on one rank
    SHUFFLE = 15  # a stream's shuffle buffer
    WEAK_VIDEOS = 16  # the weak base model's video order per epoch
    ACP = 21  # APL's ACP frame sampling and k-means, per step


def seed_int(*entries: int) -> int:
    """One 32-bit integer from a seed sequence, for APIs that take a single integer seed (Ray Data's
    ``local_shuffle_seed``)."""
    return int(np.random.SeedSequence([int(e) for e in entries]).generate_state(1)[0])
