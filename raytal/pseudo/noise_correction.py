"""NoCo pseudo-label correction: CALA, AIC and MIC (docs/design.md §5 "NoCo", paper 001).

CALA replaces each confident base-model instance by a weighted mean of its same-class context, so
boundaries use every overlapping proposal instead of the single NMS survivor. During teacher-student
training AIC pulls each online pseudo instance towards confident overlapping teacher predictions, and
MIC adds confident teacher predictions that no pseudo instance covers. All arrays are in one consistent
time unit (seconds or grid); "same class" is required for every association.
"""

from __future__ import annotations

import numpy as np

from raytal.core.iou import pairwise_iou
from raytal.postprocess.nms import nms


def _instances(
    segments: np.ndarray, labels: np.ndarray, values: np.ndarray | None, names: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (segments float64 [N, 2], labels int64 [N], scores/weights float64 [N]; zeros if None)."""
    segments = np.asarray(segments, dtype=np.float64)
    labels = np.asarray(labels)
    values = np.zeros(segments.shape[:1]) if values is None else np.asarray(values, dtype=np.float64)
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"{names}: expected segments [N, 2], got shape {segments.shape}")
    n = segments.shape[0]
    if labels.shape != (n,) or values.shape != (n,):
        raise ValueError(f"{names}: expected labels [{n}] and scores/weights [{n}], got {labels.shape}, {values.shape}")
    if not (np.all(np.isfinite(segments)) and np.all(np.isfinite(values))):
        raise ValueError(f"{names}: expected finite segments and scores/weights")
    return segments, labels.astype(np.int64, copy=False), values


def cala(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    theta_c: float = 0.5,
    nms_iou: float = 0.5,
    theta_a: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context-aware label augmentation of one video's base-model instances [N].

    Anchors: instances with score > θ_c that survive class-wise hard NMS at ``nms_iou`` (thresholding
    before or after NMS gives the same set: a lower score never suppresses a higher one). For anchor
    a, A = every input instance of a's class with IoU(·, a) > θ_a (a itself included), weights
    w_p = s_p·IoU(p, a); the augmented start, end and score are the w-weighted means over A.
    Returns (segments [A, 2], scores [A], labels [A]), anchors by descending score.
    """
    segments, labels, scores = _instances(segments, labels, scores, "cala")
    confident = np.flatnonzero(scores > theta_c)
    anchors = confident[nms(segments[confident], scores[confident], labels[confident], nms_iou)]
    iou = pairwise_iou(segments[anchors], segments)
    weight = np.where((iou > theta_a) & (labels[anchors][:, None] == labels[None, :]), scores[None, :] * iou, 0.0)
    total = weight.sum(axis=1)
    # An anchor with no positive-weight context (zero length, or zero score) is kept as it is.
    has = total > 0
    denom = np.where(has, total, 1.0)
    new_seg = np.where(has[:, None], weight @ segments / denom[:, None], segments[anchors])
    new_score = np.where(has, weight @ scores / denom, scores[anchors])
    return new_seg, new_score, labels[anchors]


def aic(
    q_seg: np.ndarray,
    q_lab: np.ndarray,
    q_w: np.ndarray,
    p_seg: np.ndarray,
    p_lab: np.ndarray,
    p_score: np.ndarray,
    theta_aic: float = 0.5,
    theta_s: float = 0.3,
    gamma: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Ambiguous instance correction of the online pseudo instances q [N] by teacher predictions p [M].

    A_q = teacher predictions of q's class with IoU(q, p) > θ_aic and score > θ_s; the weight of a
    teacher prediction is its score. q' = (γ·w_q·q + Σ_A w_p·p) / (γ·w_q + Σ_A w_p);
    w_q' = mean of w_q and the weights in A = (w_q + Σ_A w_p) / (1 + |A|). Empty A (or a zero
    denominator) leaves q and w_q unchanged. Returns (segments [N, 2], weights [N]).
    """
    q_seg, q_lab, q_w = _instances(q_seg, q_lab, q_w, "aic pseudo instances")
    p_seg, p_lab, p_score = _instances(p_seg, p_lab, p_score, "aic teacher predictions")
    iou = pairwise_iou(q_seg, p_seg)
    member = (iou > theta_aic) & (p_score[None, :] > theta_s) & (q_lab[:, None] == p_lab[None, :])
    weight = np.where(member, p_score[None, :], 0.0)  # [N, M]
    num = gamma * q_w[:, None] * q_seg + weight @ p_seg
    den = gamma * q_w + weight.sum(axis=1)
    ok = den > 0
    new_seg = np.where(ok[:, None], num / np.where(ok, den, 1.0)[:, None], q_seg)
    new_w = (q_w + weight.sum(axis=1)) / (1.0 + member.sum(axis=1))
    return new_seg, new_w


def mic(
    q_seg: np.ndarray,
    q_lab: np.ndarray,
    p_seg: np.ndarray,
    p_lab: np.ndarray,
    p_score: np.ndarray,
    theta_m: float = 0.5,
    theta_low: float = 0.1,
    nms_iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Missing instance compensation: the teacher predictions to add to the online pseudo set.

    Teacher predictions with score > θ_m that survive class-wise hard NMS at ``nms_iou`` and whose
    maximum IoU with every online pseudo instance of the same class is < θ_low (0 when the class has
    none) are returned as (segments [A, 2], labels [A], weights [A] = their scores).
    """
    q_seg, q_lab, _ = _instances(q_seg, q_lab, None, "mic pseudo instances")
    p_seg, p_lab, p_score = _instances(p_seg, p_lab, p_score, "mic teacher predictions")
    confident = np.flatnonzero(p_score > theta_m)
    kept = confident[nms(p_seg[confident], p_score[confident], p_lab[confident], nms_iou)]
    iou = np.where(p_lab[kept][:, None] == q_lab[None, :], pairwise_iou(p_seg[kept], q_seg), 0.0)
    max_iou = iou.max(axis=1, initial=0.0)
    added = kept[max_iou < theta_low]
    return p_seg[added], p_lab[added], p_score[added]
