"""NPL pseudo-label ranking and class-adaptive filtering (docs/design.md §5 "NPL ranking/filtering",
paper 000).

Ranking: a candidate from the dense (pre-NMS) predictions is trusted more when the points next to it
on the same pyramid level, which were regressed towards the same instance, agree on its boundaries.
Filtering: per video, each class keeps a share of N_pos proportional to its share of the candidates,
so one over-predicted (often wrong) class cannot dominate the pseudo labels.
"""

from __future__ import annotations

import numpy as np


def _vector(x: np.ndarray, name: str, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr.astype(dtype, copy=False)


def boundary_variance_scores(
    t: np.ndarray,
    level: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    cand: np.ndarray,
    cand_scores: np.ndarray,
    n_adjacent: int = 8,
    eps: float = 1e-6,
) -> np.ndarray:
    """NPL ranking score s_j = c_j / (σ̄_j + ε) for candidate points ``cand`` of one video.

    ``t``, ``level``, ``start``, ``end`` [P] describe every dense point (centre, pyramid level and the
    predicted segment, grid units); ``cand`` [K] are point indices, ``cand_scores`` [K] their scores c_j.
    Adjacent points of j: same level, centre inside [start_j, end_j], at most ``n_adjacent`` on each
    side of j, nearest first. j itself is always part of the set (it is a prediction of the same
    instance, and it keeps the variance defined when no neighbour qualifies). σ_s, σ_e are population
    variances of the set's start / end; σ̄_j = (σ_s + σ_e) / d_j with d_j = end_j − start_j.
    A degenerate candidate (d_j ≤ 0) cannot be a pseudo instance and scores 0.
    """
    t = _vector(t, "t")
    level = _vector(level, "level", np.int64)
    start = _vector(start, "start")
    end = _vector(end, "end")
    cand = _vector(cand, "cand", np.int64)
    cand_scores = _vector(cand_scores, "cand_scores")
    num_points = t.shape[0]
    if not (level.shape[0] == start.shape[0] == end.shape[0] == num_points):
        raise ValueError(
            f"t, level, start, end: expected the same length P, got {t.shape[0]}, {level.shape[0]}, "
            f"{start.shape[0]}, {end.shape[0]}"
        )
    if cand_scores.shape[0] != cand.shape[0]:
        raise ValueError(f"cand_scores: expected length K={cand.shape[0]}, got {cand_scores.shape[0]}")
    if cand.size and (cand.min() < 0 or cand.max() >= num_points):
        raise ValueError(f"cand: expected point indices in [0, {num_points}), got {cand.min()}..{cand.max()}")
    if n_adjacent < 0 or eps < 0:
        raise ValueError(f"n_adjacent, eps: expected >= 0, got {n_adjacent}, {eps}")
    if cand.size == 0:
        return np.zeros(0, dtype=np.float64)

    # Sorting by (level, t) makes a level's points contiguous and ordered in time, so the neighbours of
    # j are a fixed window of positions around j's rank; the segment test then trims each side.
    order = np.lexsort((t, level))
    rank = np.empty(num_points, dtype=np.int64)
    rank[order] = np.arange(num_points)
    window = rank[cand][:, None] + np.arange(-n_adjacent, n_adjacent + 1)[None, :]  # [K, W]
    valid = (window >= 0) & (window < num_points)
    points = order[np.clip(window, 0, num_points - 1)]
    s_j, e_j = start[cand][:, None], end[cand][:, None]
    valid &= level[points] == level[cand][:, None]
    valid &= (t[points] >= s_j) & (t[points] <= e_j)
    valid[:, n_adjacent] = True  # j itself

    count = valid.sum(axis=1)

    def masked_variance(values: np.ndarray) -> np.ndarray:
        v = np.where(valid, values[points], 0.0)
        mean = v.sum(axis=1) / count
        return (np.where(valid, (values[points] - mean[:, None]) ** 2, 0.0)).sum(axis=1) / count

    variance = masked_variance(start) + masked_variance(end)
    duration = (e_j - s_j)[:, 0]
    ok = duration > 0
    sigma_bar = np.divide(variance, duration, out=np.zeros_like(variance), where=ok)
    with np.errstate(divide="ignore"):  # eps = 0 with perfectly agreeing neighbours: +inf, by definition
        return np.where(ok, cand_scores / (sigma_bar + eps), 0.0)


def _k_adp(counts: np.ndarray, num: int, n_pos: float) -> np.ndarray:
    return np.floor(counts * float(n_pos) / max(num, 1) + 0.5 + 1e-9).astype(np.int64)


def adaptive_counts(labels: np.ndarray, n_pos: float = 15.0) -> dict[int, int]:
    """K_adp(c) = round(n_c / N_v · N_pos) for each class c present in ``labels`` (one video).

    Rounding is half-up (2.5 → 3), not numpy's half-to-even: a class with exactly half a slot more
    keeps it. It is computed as n_c·N_pos/N_v with a 1e-9 guard so that a product that should be an
    exact .5 is not pushed below by float error. K_adp may be 0 (a rare class in a crowded video).
    """
    labels = _vector(labels, "labels", np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    return dict(zip(classes.tolist(), _k_adp(counts, labels.shape[0], n_pos).tolist()))


def class_adaptive_filter(labels: np.ndarray, rank_scores: np.ndarray, n_pos: float = 15.0) -> np.ndarray:
    """NPL filtering of one video's K candidates: keep mask [K].

    Per class c keep the top K_adp(c) candidates by ranking score (see ``adaptive_counts`` for the
    rounding). Equal scores keep the earlier candidate (stable order).
    """
    labels = _vector(labels, "labels", np.int64)
    rank_scores = _vector(rank_scores, "rank_scores")
    if labels.shape[0] != rank_scores.shape[0]:
        raise ValueError(
            f"labels / rank_scores: expected the same length, got {labels.shape[0]} and {rank_scores.shape[0]}"
        )
    if n_pos < 0:
        raise ValueError(f"n_pos: expected >= 0, got {n_pos}")
    num = labels.shape[0]
    if num == 0:
        return np.zeros(0, dtype=bool)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    limit = _k_adp(counts, num, n_pos)[inverse]
    # Sort by class, then score descending (lexsort is stable): the rank inside a class is the
    # position minus the position where that class's run starts.
    order = np.lexsort((-rank_scores, labels))
    sorted_labels = labels[order]
    run_start = np.searchsorted(sorted_labels, sorted_labels, side="left")
    within = np.arange(num) - run_start
    keep = np.zeros(num, dtype=bool)
    keep[order] = within < limit[order]
    return keep
