"""One unlabeled video's teacher outputs -> its pseudo labels, by the config's recipes.

The per-video stage both back-ends run (the in-process round in a loop, the Ray Data pipeline in its
actors or map tasks). The selecting recipe (NPL or APL) picks instances from the teacher's outputs — a
plain score threshold (``recipe.min_score_rule``) when neither is enabled — then every enabled recipe refines
them in registration order (NTC's teacher scores, NoCo's CALA, GauFuse's fusion and LinPro). Nothing here
names a recipe.

The teacher's predictions are in seconds (``segments``) and grid units (``dense``); the output is seconds.
"""

from __future__ import annotations

import numpy as np

from raytal.config import Config, ConfigError, InferConfig
from raytal.core.video import Video
from raytal.recipes.registry import LabelingContext, Recipe, active_recipes, threshold_select


def selector(recipes: list[Recipe]) -> Recipe | None:
    chosen = [r for r in recipes if r.selects]
    if len(chosen) > 1:
        raise ConfigError(f"recipes {' and '.join(r.name for r in chosen)} both select pseudo labels; enable one")
    return chosen[0] if chosen else None


def label_video(cfg: Config, num_classes: int, video: Video, pred: dict,
                context: LabelingContext | None = None) -> dict[str, object]:
    """Pseudo labels of one video from its teacher outputs (``predict_videos(..., dense=needs_dense(cfg))``).

    Returns seconds-based ``segments`` [K, 2], ``labels``, ``scores``, ``weights`` (1 unless a recipe sets
    them), ``origins``, optional ``targets`` and ``teacher_scores`` [T, C], and ``relaxed`` (LinPro
    problems solved in elastic form).
    """
    context = context or LabelingContext()
    recipes = active_recipes(cfg)
    chooser = selector(recipes)
    inst = chooser.select(cfg, video, pred, context) if chooser else threshold_select(cfg, pred, context)
    for recipe in recipes:
        inst = recipe.refine(cfg, video, inst, pred, context, num_classes)
    weights = np.ones(len(inst.scores), np.float32) if inst.weights is None else inst.weights
    return {
        "segments": np.asarray(inst.segments, dtype=np.float64).reshape(-1, 2),
        "labels": np.asarray(inst.labels, dtype=np.int64),
        "scores": np.asarray(inst.scores, dtype=np.float32),
        "weights": np.asarray(weights, dtype=np.float32),
        "origins": np.asarray(inst.origins, dtype=object),
        "targets": inst.targets,
        "teacher_scores": inst.teacher_scores,
        "relaxed": inst.relaxed,
    }


def labeling_infer(cfg: Config) -> InferConfig:
    """The teacher's inference settings for pseudo labels (e.g. GauFuse fuses raw candidates, not NMS output)."""
    infer = cfg.infer
    for recipe in active_recipes(cfg):
        infer = recipe.labeling_infer(cfg, infer)
    return infer


def needs_dense(cfg: Config) -> bool:
    """Whether the teacher must also return dense pre-NMS predictions (NPL ranking, NTC scores)."""
    return any(r.needs_dense(cfg) for r in active_recipes(cfg))


def prepare_labeling(cfg: Config, labeled, teacher_kind: str) -> LabelingContext:
    """What the recipes prepare once per round from the labeled videos (``labeled()`` streams them)."""
    prepared = {r.name: r.prepare(cfg, labeled) for r in active_recipes(cfg)}
    return LabelingContext(teacher_kind, {k: v for k, v in prepared.items() if v is not None})
