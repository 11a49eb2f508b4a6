"""Class-wise hard NMS and Gaussian Soft-NMS on 1-D segments (numpy).

Greedy NMS is sequential in the picks, so each function loops over *kept* segments only, and every
step is one vectorized pass over the remaining candidates. Classes never suppress each other: the
IoU of a pick is only applied to candidates of its own label, which handles all classes in one pass
(class-agnostic NMS: give every candidate the same label).
"""

from __future__ import annotations

import numpy as np

from raytal.core.iou import interval_iou, pairwise_iou


def _check(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    segments = np.asarray(segments, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if segments.ndim != 2 or segments.shape[1] != 2 or not len(segments) == len(scores) == len(labels):
        raise ValueError(
            "nms: expected segments [N, 2], scores [N], labels [N], "
            f"got {segments.shape}, {scores.shape}, {labels.shape}"
        )
    return segments, scores, labels


def _iou_one(seg: np.ndarray, others: np.ndarray) -> np.ndarray:
    return interval_iou(seg[0], seg[1], others[:, 0], others[:, 1])


def nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Indices kept by per-class greedy NMS (IoU > ``iou_threshold`` suppresses), best score first."""
    segments, scores, labels = _check(segments, scores, labels)
    order = np.argsort(-scores, kind="stable")
    seg, lab = segments[order], labels[order]
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    limit = len(order) if max_keep is None else max_keep
    while len(keep) < limit:
        i = int(np.argmax(alive))
        if not alive[i]:
            break
        keep.append(i)
        alive[i] = False
        same = np.flatnonzero(alive & (lab == lab[i]))
        alive[same[_iou_one(seg[i], seg[same]) > iou_threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def soft_nms_index(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, sigma: float = 0.5,
                   min_score: float = 0.001, max_segments: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS per class, as ActionFormer's: (indices of kept candidates, their decayed scores),
    best first.

    Repeatedly take the highest current score; every remaining candidate of the same class has its score
    multiplied by exp(−IoU²/σ) (every overlap decays: ActionFormer's Gaussian has no IoU threshold) and is
    dropped once below ``min_score``. Picked scores never increase, so stopping after ``max_segments``
    picks gives exactly the top ``max_segments`` of the full per-class Soft-NMS.
    """
    segments, scores, labels = _check(segments, scores, labels)
    if sigma <= 0:
        raise ValueError(f"soft_nms: expected sigma > 0, got {sigma}")
    cur = scores.copy()
    alive = np.ones(len(cur), dtype=bool)
    keep: list[int] = []
    kept_scores: list[float] = []
    while len(keep) < max_segments and alive.any():
        i = int(np.argmax(np.where(alive, cur, -np.inf)))
        keep.append(i)
        kept_scores.append(cur[i])
        alive[i] = False
        same = np.flatnonzero(alive & (labels == labels[i]))
        cur[same] *= np.exp(-(_iou_one(segments[i], segments[same]) ** 2) / sigma)
        alive[same] = cur[same] >= min_score
    return np.asarray(keep, dtype=np.int64), np.asarray(kept_scores, dtype=np.float64)


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, sigma: float = 0.5,
             min_score: float = 0.001, max_segments: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS per class -> (segments [K, 2], decayed scores [K], labels [K]), best first."""
    keep, new_scores = soft_nms_index(segments, scores, labels, sigma, min_score, max_segments)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    return segments[keep], new_scores, np.asarray(labels).reshape(-1)[keep]


def vote(kept: np.ndarray, segments: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Boundary voting (ActionFormer's ``seg_voting``): each kept segment [K, 2] becomes the mean of the
    candidates ``segments`` [N, 2] whose IoU with it is >= ``iou_threshold``, weighted by their ``scores``."""
    kept = np.asarray(kept, dtype=np.float64).reshape(-1, 2)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    weights = (pairwise_iou(kept, segments) >= iou_threshold) * np.asarray(scores, dtype=np.float64)[None, :]
    total = weights.sum(1, keepdims=True)
    # A kept segment always overlaps itself among the candidates; with no weight at all it stays as it is.
    return np.where(total > 0, (weights @ segments) / np.where(total > 0, total, 1.0), kept)
