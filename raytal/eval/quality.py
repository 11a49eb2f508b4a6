"""Pseudo-label quality against the (normally hidden) ground truth of the unlabeled videos
(docs/design.md §7 "Pseudo-label quality").

The NPL Table 3 / APL Fig. 3c metrics: each pseudo instance is compared with its best-matching ground
truth, the ground-truth segment of the same video with the highest tIoU, of any class (equal tIoU:
the first-listed). An instance whose best tIoU is 0 (no overlap, or no ground truth in its video) has no
match and counts as the wrong class. Per class, NPL Fig. 4's pseudo/ground-truth count ratio.
"""

from __future__ import annotations

import numpy as np

from raytal.core.iou import interval_iou
from raytal.eval.detection import group_pairs
from raytal.core.segments import SegmentTable


def pseudo_label_quality(gt: SegmentTable, pseudo: SegmentTable, num_classes: int) -> dict:
    """Quality of ``pseudo`` instances measured against ``gt`` (both in seconds, same class ids).

    Returns ``class_accuracy`` (fraction whose best-matching ground truth has the same class),
    ``mean_tiou`` (mean tIoU to the best-matching ground truth), ``positive_accuracy`` (right class and
    tIoU >= 0.5), ``count_ratio`` ([C] list: #pseudo / #gt of each class; 0 when both are 0, inf when only
    the ground truth has none), ``num_pseudo``, ``num_gt``. With no pseudo instances the three
    fractions are undefined: None (JSON null), so a report can say so instead of showing 0 %.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    for what, table in (("gt", gt), ("pseudo", pseudo)):
        if len(table) and table.labels.max() >= num_classes:
            raise ValueError(f"{what}: class id {int(table.labels.max())} outside 0..{num_classes - 1}")
    n = len(pseudo)
    n_pseudo = np.bincount(pseudo.labels, minlength=num_classes).astype(np.float64)
    n_gt = np.bincount(gt.labels, minlength=num_classes).astype(np.float64)
    ratio = np.divide(n_pseudo, n_gt, out=np.where(n_pseudo > 0, np.inf, 0.0), where=n_gt > 0)

    best_iou = np.zeros(n)
    best_cls = np.full(n, -1, dtype=np.int64)
    if n and len(gt):
        _, vid = np.unique(np.concatenate([gt.video, pseudo.video]).astype(str), return_inverse=True)
        g_vid, p_vid = vid[: len(gt)], vid[len(gt) :]
        g_order = np.argsort(g_vid, kind="stable")
        g_seg, g_lab = gt.segments[g_order], gt.labels[g_order]

        def overlap(qi: np.ndarray, rj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            iou = interval_iou(pseudo.segments[qi, 0], pseudo.segments[qi, 1], g_seg[rj, 0], g_seg[rj, 1])
            return iou > 0, iou

        qi, rj, iou = group_pairs(p_vid, g_vid[g_order], overlap, len(g_vid) + len(p_vid))
        srt = np.lexsort((rj, -iou, qi))  # per pseudo instance: highest tIoU, then first-listed
        qi, rj, iou = qi[srt], rj[srt], iou[srt]
        first = np.ones(len(qi), dtype=bool)
        first[1:] = qi[1:] != qi[:-1]
        best_iou[qi[first]] = iou[first]
        best_cls[qi[first]] = g_lab[rj[first]]

    right = best_cls == pseudo.labels

    def fraction(hits: np.ndarray) -> float | None:
        return float(hits.sum() / n) if n else None

    return {
        "class_accuracy": fraction(right),
        "mean_tiou": fraction(best_iou),
        "positive_accuracy": fraction(right & (best_iou >= 0.5)),
        "count_ratio": ratio.tolist(),
        "num_pseudo": int(n),
        "num_gt": int(len(gt)),
    }
