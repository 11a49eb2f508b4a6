"""Temporal IoU of segments (start, end), vectorized with numpy: the one formula every module uses.

``interval_iou`` is elementwise over broadcast arrays of starts and ends; ``pairwise_iou`` builds the
[N, M] matrix from it. A zero union gives IoU 0, never NaN. The arithmetic is symmetric bit for bit
(min, max and + commute in IEEE arithmetic), so IoU(a, b) == IoU(b, a) exactly, which greedy
suppression and fusion rely on to make the same decision in either orientation of a pair.
"""

from __future__ import annotations

import numpy as np


def interval_iou(a_start: np.ndarray | float, a_end: np.ndarray | float, b_start: np.ndarray | float,
                 b_end: np.ndarray | float) -> np.ndarray:
    """IoU of (a_start, a_end) and (b_start, b_end), elementwise after numpy broadcasting."""
    inter = np.clip(np.minimum(a_end, b_end) - np.maximum(a_start, b_start), 0.0, None)
    union = (np.asarray(a_end) - a_start) + (np.asarray(b_end) - b_start) - inter
    inter, union = np.broadcast_arrays(np.asarray(inter, dtype=np.float64), np.asarray(union, dtype=np.float64))
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every segment in ``a`` [N, 2] with every segment in ``b`` [M, 2] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    return interval_iou(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])
