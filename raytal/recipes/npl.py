"""NPL (paper 000): boundary-variance ranking and class-adaptive filtering of the teacher's dense
predictions, and the temporal-consistency loss on the pseudo instances (docs/design.md §5 "NPL")."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from raytal.config import Config
from raytal.core.grid import video_seconds
from raytal.core.video import Video
from raytal.losses.consistency import temporal_consistency_loss
from raytal.postprocess.nms import nms
from raytal.pseudo.boundary_ranking import boundary_variance_scores, class_adaptive_filter
from raytal.recipes.outputs import positive_offsets
from raytal.recipes.registry import Instances, LabelingContext, LossInputs, LossTerm, Recipe, register


def instances_per_video(videos: Iterable[Video]) -> float:
    """The mean number of ground-truth instances per video (NPL's N_pos when ``recipe.npl.n_pos`` is 0)."""
    counts = [len(v.labels) for v in videos]
    if not counts:
        raise ValueError("recipe.npl.n_pos = 0 takes N_pos from the labeled videos, and there are none")
    return float(np.mean(counts))


@register
class NPL(Recipe):
    name = "npl"

    def needs_dense(self, cfg: Config) -> bool:
        return True

    def prepare(self, cfg: Config, labeled: Callable[[], Iterable[Video]]) -> float | None:
        """N_pos from the labeled videos when ``recipe.npl.n_pos`` is 0."""
        return instances_per_video(labeled()) if cfg.recipe.npl.n_pos == 0 else None

    def n_pos(self, cfg: Config, context: LabelingContext) -> float:
        if cfg.recipe.npl.n_pos > 0:
            return cfg.recipe.npl.n_pos
        if self.name not in context.prepared:
            raise ValueError("recipe.npl.n_pos = 0 takes N_pos from the labeled videos: label with the context "
                             "raytal.recipes.labeling.prepare_labeling makes")
        return context.prepared[self.name]

    def select(self, cfg: Config, video: Video, pred: dict, context: LabelingContext) -> Instances:
        """Dense (point, class) candidates -> ranking score -> NMS on it -> class-adaptive top-K."""
        npl, dense = cfg.recipe.npl, pred["dense"]
        scores = dense["scores"]  # [P, C]
        point, cls = np.nonzero(scores >= npl.candidate_thresh)
        cand_scores = scores[point, cls]
        if len(cand_scores) > npl.candidate_topk:
            top = np.argsort(-cand_scores, kind="stable")[: npl.candidate_topk]
            point, cls, cand_scores = point[top], cls[top], cand_scores[top]
        rank = boundary_variance_scores(
            dense["t"], dense["level"], dense["start"], dense["end"], point, cand_scores, npl.n_adjacent, npl.eps
        )
        seg = np.stack([dense["start"][point], dense["end"][point]], axis=1)
        keep = nms(seg, rank, cls, npl.nms_iou)
        seg, cls, cand_scores, rank = seg[keep], cls[keep], cand_scores[keep], rank[keep]
        keep = class_adaptive_filter(cls, rank, self.n_pos(cfg, context))
        return Instances.of(video_seconds(video, seg[keep]), cand_scores[keep], cls[keep], "npl")

    def unlabeled_weight(self, cfg: Config) -> float:
        return cfg.recipe.npl.alpha

    def loss_terms(self, cfg: Config) -> list[LossTerm]:
        weight = cfg.recipe.npl.consistency_weight

        def consistency(x: LossInputs) -> dict[str, tuple[float, torch.Tensor]]:
            u = x.kinds.get("pseudo")
            if u is None or not sum(int(t.pos.sum()) for t in u.targets):
                return {}
            rows, pts, off, _, inst = positive_offsets(x.out, u.targets, u.videos)
            t = x.out.points[pts, 0]
            order = torch.argsort(inst * 1e6 + t)  # group by instance, time order within it
            cons = temporal_consistency_loss((t - off[:, 0])[order], (t + off[:, 1])[order], inst[order])
            return {"consistency": (weight, cons)}

        return [consistency]
