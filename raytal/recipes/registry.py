"""Recipes plug in by name: each paper's method is a ``Recipe`` registered here, with hooks for the
places a method acts — labeling (select, refine) and training (loss terms, batch transform, EMA); test-time
post-processing is the config's (``infer.nms``: GauFuse's configs set ``fusion``). ``raytal.recipes.labeling``
and ``raytal.recipes.objective`` compose the hooks of the config's enabled recipes in registration order;
neither they nor the trainer name a recipe.

A recipe is enabled by ``cfg.recipe.<name>.enabled``. Registration order is the order the papers apply
their stages in: selection (NPL or APL, one of them) → NTC's teacher scores → NoCo's CALA → GauFuse's
fusion and LinPro.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from raytal.config import Config, InferConfig
from raytal.core.video import Video
from raytal.engine.trainer import StepContext
from raytal.model.batch import Batch
from raytal.model.criterion import ClsTargetFn
from raytal.model.detector import DetectorOutput

@dataclass
class Instances:
    """One video's pseudo instances while its labeling stages run (segments in seconds)."""

    segments: np.ndarray  # [K, 2]
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] int64
    origins: np.ndarray  # [K] str: which stage made each instance
    weights: np.ndarray | None = None  # [K] loss weights; None = 1
    targets: np.ndarray | None = None  # [T, C] dense snippet labels (LinPro)
    teacher_scores: np.ndarray | None = None  # [T, C] the teacher's snippet class scores (NTC)
    relaxed: int = 0  # LinPro problems solved in elastic form

    @staticmethod
    def of(segments: Any, scores: Any, labels: Any, origin: str) -> "Instances":
        seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
        return Instances(seg, np.asarray(scores, dtype=np.float32).reshape(-1),
                         np.asarray(labels, dtype=np.int64).reshape(-1), np.full(len(seg), origin, dtype=object))


@dataclass
class KindLoss:
    """The detection loss of one kind of video in a batch, "labeled" or "pseudo" (pseudo-labeled)."""

    suffix: str  # of its reported terms: the papers' L_s ("s", labeled) and L_u ("u", pseudo-labeled)
    select: torch.Tensor  # [B] bool
    videos: torch.Tensor  # batch rows of the selected videos
    targets: list  # per selected video, raytal.model.assign.Targets
    weight: float  # of this kind's terms in the total (1 for labeled videos, the recipe's unlabeled weight)


@dataclass
class LossInputs:
    """What a loss term may read: the batch, the model output, the detection loss of each kind of video,
    the step."""

    batch: Batch
    out: DetectorOutput
    kinds: dict[str, KindLoss]  # "labeled" / "pseudo", when the batch holds such videos
    ctx: StepContext
    delta_targets: bool  # the pseudo videos' dense targets are GauFuse Δ labels


# term(inputs) -> {name: (weight, value)}: the loss gains weight * value; the value is reported as name
LossTerm = Callable[[LossInputs], dict[str, tuple[float, torch.Tensor]]]
# transform(model, batch, out, ctx) -> (the batch the loss sees, extra scalar metrics)
BatchTransform = Callable[[torch.nn.Module, Batch, DetectorOutput, StepContext], tuple[Batch, dict[str, float]]]


@dataclass
class LabelingContext:
    """Per round, shipped to every labeling task: what each recipe prepared (``Recipe.prepare``) and
    which kind of teacher labels ("detector" or "weak_base")."""

    teacher_kind: str = "detector"
    prepared: dict[str, Any] = field(default_factory=dict)
    min_score: float | None = None  # the round's plain threshold when set from the val videos (min_score_rule)


def threshold_select(cfg: Config, pred: dict, context: LabelingContext) -> Instances:
    """The teacher's detections scoring at least the round's threshold (``recipe.min_score_rule``)."""
    if cfg.recipe.min_score_rule == "fixed":
        threshold = cfg.recipe.min_score
    elif context.min_score is None:
        raise ValueError("recipe.min_score_rule = 'val_count' sets the threshold from the val videos: label with "
                         "the context of the round (raytal.selftrain.rounds)")
    else:
        threshold = context.min_score
    keep = pred["scores"] >= threshold
    return Instances.of(pred["segments"][keep], pred["scores"][keep], pred["labels"][keep], "teacher")


class Recipe:
    """Base recipe: every hook does nothing. Subclasses set ``name`` and override what they use."""

    name: ClassVar[str] = ""

    def enabled(self, cfg: Config) -> bool:
        return bool(getattr(cfg.recipe, self.name).enabled)

    # ---- labeling ----
    def needs_dense(self, cfg: Config) -> bool:
        """Whether labeling needs the teacher's dense pre-NMS predictions."""
        return False

    def labeling_infer(self, cfg: Config, infer: InferConfig) -> InferConfig:
        """The teacher's inference settings when it makes pseudo labels."""
        return infer

    def prepare(self, cfg: Config, labeled: Callable[[], Any]) -> Any:
        """Once per round on the driver, from the labeled videos (``labeled()`` streams them)."""
        return None

    @property
    def selects(self) -> bool:
        """Whether this recipe picks the pseudo instances itself (overrides ``select``; one recipe at most)."""
        return type(self).select is not Recipe.select

    def select(self, cfg: Config, video: Video, pred: dict, context: LabelingContext) -> Instances:
        """The pseudo instances from the teacher's outputs; without a selecting recipe, its detections
        scoring at least the round's threshold (``threshold_select``)."""
        return threshold_select(cfg, pred, context)

    def refine(self, cfg: Config, video: Video, inst: Instances, pred: dict, context: LabelingContext,
               num_classes: int) -> Instances:
        return inst

    # ---- training ----
    def unlabeled_weight(self, cfg: Config) -> float | None:
        """The weight of the pseudo-labeled videos' detection loss (NPL's α, APL's β); None = no opinion."""
        return None

    def cls_targets(self, cfg: Config) -> ClsTargetFn | None:
        """Soft classification targets replacing the one-hot ones (APL's quality focal loss)."""
        return None

    def loss_terms(self, cfg: Config) -> list[LossTerm]:
        return []

    def batch_transform(self, cfg: Config) -> BatchTransform | None:
        return None

    def ema_momentum(self, cfg: Config) -> float | None:
        """The EMA's momentum when the recipe's method depends on it (NoCo's teacher)."""
        return None


RECIPES: dict[str, Recipe] = {}


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make ``cls`` available under ``cls.name`` (unique)."""
    if not cls.name or cls.name in RECIPES:
        raise ValueError(f"recipe name {cls.name!r} is empty or already registered")
    RECIPES[cls.name] = cls()
    return cls


def active_recipes(cfg: Config) -> list[Recipe]:
    """The enabled recipes of ``cfg``, in registration order."""
    return [r for r in RECIPES.values() if r.enabled(cfg)]


def first_opinion(values: list[Any], default: Any) -> Any:
    """The first non-None hook result, else ``default``."""
    return next((v for v in values if v is not None), default)
