"""NTC (paper 003): positive and negative learning on the non-target classes of pseudo-labeled snippets,
from the teacher's level-0 snippet scores, which ride along with the pseudo labels (docs/design.md §5 "NTC")."""

from __future__ import annotations

import torch

from raytal.config import Config
from raytal.core.video import Video
from raytal.losses.nontarget import nontarget_loss
from raytal.pseudo.nontarget_partition import partition_nontarget, scores_to_distribution
from raytal.recipes.outputs import level0_points, level0_scores
from raytal.recipes.registry import Instances, LabelingContext, LossInputs, LossTerm, Recipe, register


@register
class NTC(Recipe):
    name = "ntc"

    def needs_dense(self, cfg: Config) -> bool:
        return True

    def refine(self, cfg: Config, video: Video, inst: Instances, pred: dict, context: LabelingContext,
               num_classes: int) -> Instances:
        inst.teacher_scores = level0_scores(pred["dense"], video.num_snippets)
        return inst

    def loss_terms(self, cfg: Config) -> list[LossTerm]:
        ntc = cfg.recipe.ntc

        def nontarget(x: LossInputs) -> dict[str, tuple[float, torch.Tensor]]:
            batch, pseudo = x.batch, ~x.batch.labeled
            if batch.teacher_scores is None or not bool(pseudo.any()):
                return {}
            T = batch.teacher_scores.shape[1]
            teacher = batch.teacher_scores[pseudo]  # [b, T, C]
            valid = (batch.mask[pseudo] & torch.isfinite(teacher).all(-1)).reshape(-1)
            C = teacher.shape[-1]
            # Teacher and student distributions are built the same way: normalised class scores with
            # background = 1 − max (docs/design.md §5 "NTC"); the partition comes from the teacher's.
            dist = scores_to_distribution(torch.nan_to_num(teacher).reshape(-1, C).detach().cpu().numpy())
            target, pos, neg = (torch.as_tensor(a, device=teacher.device) for a in partition_nontarget(dist, ntc.lam))
            probs = scores_to_distribution(
                torch.sigmoid(x.out.cls_logits[pseudo][:, level0_points(x.out, T)]).reshape(-1, C))
            return {"ntc": (ntc.weight, nontarget_loss(probs, target, pos, neg, valid, with_target=False))}

        return [nontarget]
