"""APL (paper 002): quality-aware selection (ALQA joint score, dynamic thresholds), the ICD
discriminator's EAP/MPP refinement, quality focal classification targets, the tIoU/tND quality loss and
the ACP contrastive loss — as pre-training on all videos without labels, then as an auxiliary loss
(docs/design.md §5 "APL ALQA", "APL ICD", "APL ACP")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from raytal.config import Config
from raytal.core.grid import video_grid
from raytal.core.seeds import SeedStream
from raytal.core.video import Video
from raytal.losses.contrastive import acp_loss
from raytal.losses.quality import locq_loss
from raytal.model.detector import DetectorOutput
from raytal.pseudo.icd import ICDiscriminator, icd_scores, instance_features, refine_with_icd, train_icd
from raytal.pseudo.quality_selection import joint_score, split_by_quality
from raytal.recipes.outputs import quality_terms
from raytal.recipes.registry import Instances, LabelingContext, LossInputs, LossTerm, Recipe, register



@dataclass
class ICDContext:
    """A trained ICD discriminator and the labeled reference instances it compares against.

    Trained once per round on the driver (``fit_icd``) and shipped to every labeling task: its state is a
    plain tensor dict, so it pickles without code and loads with ``weights_only`` semantics.
    """

    state: dict[str, torch.Tensor]
    dim: int
    hidden: int
    ref_feats: np.ndarray  # [N, D] max-pooled labeled instance features
    ref_labels: np.ndarray  # [N]

    def model(self) -> ICDiscriminator:
        m = ICDiscriminator(self.dim, self.hidden)
        m.load_state_dict(self.state)
        return m.eval()


def labeled_instance_features(videos: Iterable[Video]) -> tuple[np.ndarray, np.ndarray]:
    """Max-pooled input features of every ground-truth instance of ``videos`` -> ([N, D], [N])."""
    feats, labels = [], []
    for v in videos:
        if len(v.labels):
            feats.append(instance_features(v.features, video_grid(v, v.segments)))
            labels.append(np.asarray(v.labels, dtype=np.int64))
    if not feats:
        raise ValueError("ICD needs labeled instances, and the labeled videos have none")
    return np.concatenate(feats), np.concatenate(labels)


def fit_icd(cfg: Config, labeled: Iterable[Video]) -> ICDContext:
    """Train the ICD discriminator on labeled same/different-class instance pairs (APL §3.3)."""
    apl = cfg.recipe.apl
    feats, labels = labeled_instance_features(labeled)
    model = ICDiscriminator(feats.shape[1], apl.icd_hidden)
    train_icd(model, feats, labels, steps=apl.icd_steps, lr=apl.icd_lr, seed=cfg.run.seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ICDContext(state, feats.shape[1], apl.icd_hidden, feats, labels)


def acp_term(cfg: Config) -> LossTerm:
    """L_acp on every video of the batch (labels are not used), weighted by λ_acp as an auxiliary loss."""
    apl = cfg.recipe.apl

    def acp(x: LossInputs) -> dict[str, tuple[float, torch.Tensor]]:
        value = acp_loss(x.out.pyramid, x.batch.mask, x.batch.feats, apl.acp_parts, apl.acp_temperature,
                         x.ctx.generator(SeedStream.ACP))
        return {"acp": (apl.lambda_acp, value)}

    return acp


def acp_pretraining_objective(cfg: Config) -> Callable:
    """The objective of ACP pre-training: L_acp alone, on videos whose labels are not read."""
    apl = cfg.recipe.apl

    def objective(model, batch, out: DetectorOutput, ctx) -> dict[str, torch.Tensor]:
        value = acp_loss(out.pyramid, batch.mask, batch.feats, apl.acp_parts, apl.acp_temperature,
                         ctx.generator(SeedStream.ACP))
        return {"loss": value, "acp": value.detach()}

    return objective


@register
class APL(Recipe):
    name = "apl"

    def prepare(self, cfg: Config, labeled: Callable[[], Iterable[Video]]) -> ICDContext | None:
        return fit_icd(cfg, labeled()) if cfg.recipe.apl.icd else None

    def select(self, cfg: Config, video: Video, pred: dict, context: LabelingContext) -> Instances:
        """Joint score P, τ_neg / dynamic τ_pos split, then ICD's EAP and MPP."""
        apl = cfg.recipe.apl
        if "quality" not in pred:
            raise ValueError("recipe apl needs the tIoU/tND quality heads: set model.quality_heads=true")
        q = pred["quality"]
        score = joint_score(pred["scores"], q[:, 0], q[:, 1], apl.eps)
        positive, candidate = split_by_quality(score, apl.tau_neg)
        keep = positive
        origins = np.full(len(score), "apl", dtype=object)
        icd: ICDContext | None = context.prepared.get(self.name)
        if apl.icd and icd is not None and len(score):
            feats = instance_features(video.features, video_grid(video, pred["segments"]))
            s = icd_scores(icd.model(), feats, pred["labels"], icd.ref_feats, icd.ref_labels)
            keep = refine_with_icd(positive, candidate, s, apl.tau_icd, apl.sigma_icd)
            origins[keep & candidate] = "apl_mpp"
        inst = Instances.of(pred["segments"][keep], score[keep], pred["labels"][keep], "apl")
        inst.origins = origins[keep]
        return inst

    def unlabeled_weight(self, cfg: Config) -> float:
        return cfg.recipe.apl.beta

    def cls_targets(self, cfg: Config):
        """The class target at a positive point is max(tIoU − tND, ε), not 1 (quality focal loss)."""
        eps = cfg.recipe.apl.eps

        def fn(out: DetectorOutput, targets: list, select: torch.Tensor) -> torch.Tensor:
            videos = torch.nonzero(select, as_tuple=True)[0]
            soft = torch.zeros_like(out.cls_logits)
            for row, tg in zip(videos.tolist(), targets):
                soft[row] = tg.cls
            rows, pts, _, _, q = quality_terms(out, targets, videos, eps)
            soft[rows, pts] = soft[rows, pts] * q[:, None]
            return soft

        return fn

    def loss_terms(self, cfg: Config) -> list[LossTerm]:
        apl = cfg.recipe.apl

        def locq(x: LossInputs) -> dict[str, tuple[float, torch.Tensor]]:
            terms = {}
            if x.out.quality_logits is None:
                return terms
            for kind in x.kinds.values():
                if not sum(int(t.pos.sum()) for t in kind.targets):
                    continue
                rows, pts, tiou, tnd, _ = quality_terms(x.out, kind.targets, kind.videos, apl.eps)
                terms[f"locq_{kind.suffix}"] = (apl.lambda_locq * kind.weight,
                                                locq_loss(x.out.quality_logits[rows, pts], tiou, tnd))
            return terms

        return [locq, acp_term(cfg)] if apl.acp else [locq]
