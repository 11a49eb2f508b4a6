"""Action proposals from a temporal class activation map (docs/design.md §4 "Weak base model"), scored by
outer-inner contrast.

For every (class, threshold) pair, each maximal run of consecutive snippets whose CAS value is strictly
above the threshold is a proposal. A run over snippets s..e-1 becomes the segment [s - 0.5, e - 0.5] in
grid units: snippet i is centred on grid index i and covers [i - 0.5, i + 0.5] (raytal/core/grid.py).

Score (outer-inner contrast, as in BaS-Net / RSKP, the base models GauFuse and NoCo build on):
    inner = mean CAS over the run
    m     = ceil(margin * length) snippets; outer margins [s - m, s) and [e, e + m), clipped to the video
    outer = mean CAS over both margins together (0 when both are empty: the run spans the video)
    score = inner - outer + gamma * video_score[class]
The video-score term (BaS-Net's γ = 0.2) ranks proposals of confidently present classes first; pass
video_scores=None (or gamma=0) for pure contrast. ceil makes every proposal have a margin of at least one
snippet on each side that lies inside the video.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tcam_proposals(
    cas: np.ndarray,
    classes: np.ndarray | Sequence[int],
    thresholds: Sequence[float] | np.ndarray,
    margin: float = 0.25,
    video_scores: np.ndarray | None = None,
    gamma: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cas [T, C] probabilities, classes [K] to search, thresholds [H] ->
    (segments [N, 2] float64 grid units, scores [N] float64, labels [N] int64), N <= K·H·T/2.
    """
    cas = np.asarray(cas, dtype=np.float64)
    if cas.ndim != 2 or cas.shape[0] < 1:
        raise ValueError(f"cas must be [T, C] with T >= 1, got shape {cas.shape}")
    T, C = cas.shape
    classes = np.asarray(classes).reshape(-1)
    if classes.size and (not np.issubdtype(classes.dtype, np.integer) or classes.min() < 0 or classes.max() >= C):
        raise ValueError(f"classes must be integer ids in [0, {C}), got {classes}")
    classes = classes.astype(np.int64)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if video_scores is not None:
        video_scores = np.asarray(video_scores, dtype=np.float64).reshape(-1)
        if video_scores.shape != (C,):
            raise ValueError(f"video_scores must be [C={C}], got shape {video_scores.shape}")
    K, H = len(classes), len(thr)
    if K == 0 or H == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)

    cols = cas[:, classes]  # [T, K]
    above = (cols[:, :, None] > thr[None, None, :]).reshape(T, K * H)  # column j = (class j // H, thr j % H)
    padded = np.zeros((K * H, T + 2), dtype=np.int8)
    padded[:, 1:-1] = above.T
    step = np.diff(padded, axis=1)  # [K*H, T+1]: +1 at a run's first snippet, -1 one past its last
    # Row-major nonzero lists each column's starts (and ends) in time order, so they pair up by position.
    col, start = np.nonzero(step == 1)
    end = np.nonzero(step == -1)[1]
    k = col // H

    csum = np.concatenate([np.zeros((1, K)), np.cumsum(cols, axis=0)], axis=0)  # [T+1, K]
    length = end - start
    inner = (csum[end, k] - csum[start, k]) / length
    m = np.ceil(margin * length - 1e-9).astype(np.int64)
    lo = np.maximum(start - m, 0)
    hi = np.minimum(end + m, T)
    outer_sum = (csum[start, k] - csum[lo, k]) + (csum[hi, k] - csum[end, k])
    outer_n = (start - lo) + (hi - end)
    outer = np.where(outer_n > 0, outer_sum / np.maximum(outer_n, 1), 0.0)

    labels = classes[k]
    scores = inner - outer
    if video_scores is not None:
        scores = scores + gamma * video_scores[labels]
    segments = np.stack([start - 0.5, end - 0.5], axis=1).astype(np.float64)
    return segments, scores, labels
