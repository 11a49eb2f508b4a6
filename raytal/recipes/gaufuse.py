"""GauFuse (paper 004): Gaussian weighted fusion instead of NMS for pseudo labels (temperature T = 0.1; at
test time it is ``infer.nms: fusion`` at ``infer.fusion_temperature`` 0.03, set by GauFuse's configs), LinPro
dense snippet labels, and the snippet loss on them — or, after a regeneration of the labels by the student, the
Δ-label loss on their change (docs/design.md §5 "GauFuse")."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from raytal.config import Config, InferConfig
from raytal.core.grid import video_grid
from raytal.core.video import Video
from raytal.losses.delta_loss import delta_label_loss
from raytal.postprocess.fusion import gaussian_fusion
from raytal.pseudo.linpro import dense_labels
from raytal.recipes.outputs import level0_points
from raytal.recipes.registry import Instances, LabelingContext, LossInputs, LossTerm, Recipe, register


@register
class GauFuse(Recipe):
    name = "gaufuse"

    def labeling_infer(self, cfg: Config, infer: InferConfig) -> InferConfig:
        """The teacher's raw candidates, not its NMS output: fusion replaces NMS."""
        return dataclasses.replace(infer, nms="none")

    def refine(self, cfg: Config, video: Video, inst: Instances, pred: dict, context: LabelingContext,
               num_classes: int) -> Instances:
        gf = cfg.recipe.gaufuse
        seg, score, lab = gaussian_fusion(inst.segments, inst.scores, inst.labels, gf.iou_group, gf.temperature_pseudo)
        out = Instances.of(seg, score, lab, "fusion")
        out.weights = np.asarray(score, dtype=np.float32)  # the fused confidence is the label's strength
        out.teacher_scores = inst.teacher_scores
        out.targets, relaxed = dense_labels(video_grid(video, out.segments), out.scores, out.labels,
                                            video.num_snippets, num_classes, gf.margin, gf.penalty)
        out.relaxed = int(relaxed)
        return out

    def loss_terms(self, cfg: Config) -> list[LossTerm]:
        weight = cfg.recipe.gaufuse.delta_weight

        def snippet(x: LossInputs) -> dict[str, tuple[float, torch.Tensor]]:
            batch, pseudo = x.batch, ~x.batch.labeled
            if batch.targets is None or not bool(pseudo.any()):
                return {}
            T = batch.targets.shape[1]
            dense = batch.targets[pseudo]
            valid = batch.mask[pseudo][..., None] & torch.isfinite(dense)
            logits = x.out.cls_logits[pseudo][:, level0_points(x.out, T)]
            if x.delta_targets:
                C = dense.shape[-1]
                rows = valid.all(-1).reshape(-1)
                return {"delta": (weight, delta_label_loss(torch.sigmoid(logits).reshape(-1, C), dense.reshape(-1, C), rows))}
            bce = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(dense), reduction="none")
            return {"snippet": (weight, (bce * valid).sum() / valid.sum().clamp(min=1))}

        return [snippet]
