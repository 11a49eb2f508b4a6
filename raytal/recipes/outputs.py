"""Views of a detector's output that several recipes' loss terms and labeling stages read."""

from __future__ import annotations

import numpy as np
import torch

from raytal.losses.quality import quality_target, segment_tiou_tnd
from raytal.model.detector import DetectorOutput


def positive_offsets(out: DetectorOutput, targets: list, videos: torch.Tensor):
    """(video row, point, predicted offsets, target offsets, instance id) over the positive points of the
    ``videos`` rows (``targets`` in the same order)."""
    rows, pts, inst = [], [], []
    for row, tg in zip(videos.tolist(), targets):
        p = torch.nonzero(tg.pos, as_tuple=True)[0]
        rows.append(torch.full_like(p, row))
        pts.append(p)
        inst.append(tg.gt_index[p] + 100_000 * row)  # unique instance id across the batch
    rows, pts, inst = torch.cat(rows), torch.cat(pts), torch.cat(inst)
    reg_t = torch.cat([tg.reg[tg.pos] for tg in targets])
    return rows, pts, out.offsets[rows, pts], reg_t, inst


def quality_terms(out: DetectorOutput, targets: list, videos: torch.Tensor, eps: float):
    """tIoU/tND of the current regression vs its target on positive points, and the quality target
    max(tIoU − tND, ε): (rows, points, tIoU, tND, target)."""
    rows, pts, pred, tgt, _ = positive_offsets(out, targets, videos)
    tiou, tnd = segment_tiou_tnd(pred.detach(), tgt)
    return rows, pts, tiou, tnd, quality_target(tiou, tnd, eps)


def level0_points(out: DetectorOutput, T: int) -> torch.Tensor:
    """Indices of the level-0 points: one per input snippet, in time order."""
    return torch.nonzero(out.levels == 0, as_tuple=True)[0][:T]


def level0_scores(dense: dict[str, np.ndarray], num_snippets: int) -> np.ndarray:
    """Teacher class scores of the level-0 dense predictions, one row per input snippet: [T, C] float32."""
    at0 = dense["level"] == 0
    idx = np.rint(dense["t"][at0]).astype(np.int64)
    out = np.zeros((num_snippets, dense["scores"].shape[1]), dtype=np.float32)
    ok = (idx >= 0) & (idx < num_snippets)
    out[idx[ok]] = dense["scores"][at0][ok]
    return out
