"""The training objective composed from the config's recipes: L = L_s + w_u·L_u + Σ recipe terms.

Labeled videos give the supervised detection loss L_s; pseudo-labeled videos give L_u, the same loss on
their pseudo instances (per-instance weights scale the positive terms), weighted by the selecting
recipe's w_u (NPL's α, APL's β; 1 otherwise). A recipe may change the classification targets (APL's
quality focal loss), transform the batch first (NoCo's online correction by the EMA teacher), and add
loss terms (NPL consistency, APL quality/ACP, NTC, GauFuse snippet/Δ). The result is an
``raytal.engine.trainer.Objective``; neither it nor the trainer names a recipe.
"""

from __future__ import annotations

import torch

from raytal.config import Config
from raytal.engine.trainer import Objective, StepContext
from raytal.model.batch import Batch
from raytal.model.criterion import detection_loss
from raytal.model.detector import DetectorOutput
from raytal.recipes.registry import KindLoss, LossInputs, Recipe, active_recipes, first_opinion


def make_objective(cfg: Config, *, delta_targets: bool = False, recipes: list[Recipe] | None = None) -> Objective:
    """The objective of ``cfg``'s recipes. ``delta_targets``: the pseudo videos' dense targets are GauFuse Δ
    labels (Y^(g) − Y^(g−1), signed)."""
    recipes = active_recipes(cfg) if recipes is None else recipes
    tr = cfg.train
    det_args = dict(
        focal_alpha=tr.focal_alpha, focal_gamma=tr.focal_gamma, reg_weight=tr.reg_weight,
        center_sample_radius=cfg.model.center_sample_radius, label_smoothing=tr.label_smoothing,
        cls_target_fn=first_opinion([r.cls_targets(cfg) for r in recipes], None),
    )
    unlabeled_weight = first_opinion([r.unlabeled_weight(cfg) for r in recipes], 1.0)
    transforms = [t for t in (r.batch_transform(cfg) for r in recipes) if t is not None]
    terms = [t for r in recipes for t in r.loss_terms(cfg)]

    def objective(model, batch: Batch, out: DetectorOutput, ctx: StepContext) -> dict[str, torch.Tensor]:
        report: dict = {}
        for transform in transforms:
            batch, extra = transform(model, batch, out, ctx)
            report.update(extra)
        total = out.cls_logits.sum() * 0.0
        kinds: dict[str, KindLoss] = {}
        for kind, suffix, select, weight in (("labeled", "s", batch.labeled, 1.0),
                                             ("pseudo", "u", ~batch.labeled, unlabeled_weight)):
            if not bool(select.any()):
                continue
            norm = ctx.loss_norm(suffix) if ctx.loss_norm is not None else None
            det = detection_loss(out, batch, select=select, normalizer=norm, **det_args)
            total = total + weight * det["loss"]
            report[f"cls_{suffix}"], report[f"reg_{suffix}"] = det["cls"].detach(), det["reg"].detach()
            kinds[kind] = KindLoss(suffix, select, torch.nonzero(select, as_tuple=True)[0], det["targets"], weight)
        inputs = LossInputs(batch, out, kinds, ctx, delta_targets)
        for term in terms:
            for key, (weight, value) in term(inputs).items():
                total = total + weight * value
                report[key] = value.detach()
        report["loss"] = total
        return report

    return objective
