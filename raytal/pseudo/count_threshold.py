"""A pseudo-label score threshold at the teacher's own score scale: as many detections as there are actions.

On the validation videos (labeled, never trained on) a teacher's detections are ranked by score; the threshold
is the score of the N-th best, N the number of ground-truth instances there, so that at the same scale the
unlabeled videos get about as many pseudo labels as they hold actions. A fixed score (``recipe.min_score``)
means a different share of a teacher's detections on every dataset and round: its scores are calibrated to
nothing (measured: 0.2 kept 151 % as many labels as actions on hapt).
"""

from __future__ import annotations

import numpy as np


def count_threshold(scores: np.ndarray, count: int) -> float:
    """The ``count``-th highest of ``scores`` [N] (the lowest when there are fewer; +inf when there are none or
    ``count`` is 0: no detection is kept)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if count < 0:
        raise ValueError(f"count: expected >= 0, got {count}")
    if not np.isfinite(scores).all():
        raise ValueError("scores: expected finite values")
    if count == 0 or scores.size == 0:
        return float("inf")
    k = min(count, scores.size)
    return float(np.partition(scores, scores.size - k)[scores.size - k])
