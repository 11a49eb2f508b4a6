"""Torch's intra-op thread count, set in one place.

Ray sets ``OMP_NUM_THREADS=1`` in every worker it starts, and an unset count on a busy 2-core machine
oversubscribes: each process is given the threads its config (``train.torch_threads``) pays for.
"""

from __future__ import annotations

import torch


def set_torch_threads(threads: int, default: int | None = None) -> None:
    """Use ``threads`` intra-op threads; ``threads <= 0`` means ``default`` (None: leave torch's own choice)."""
    n = threads if threads > 0 else default
    if n is not None and n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
