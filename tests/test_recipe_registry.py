"""The recipe registry and what is composed from it: the recipes are registered by name in the order the
papers apply their stages; ``label_video`` runs the selecting recipe (or a plain threshold) and then every
enabled recipe's refinement, in that order; the training objective holds exactly the loss terms of the
enabled recipes, weighted as the config says; and the generic trainer knows no recipe.

Every labeling input here is made by hand and every expected instance worked out in the comments, on a
video whose snippet grid is its seconds minus 0.5 (fps 1, stride 1, 1-frame snippets).
"""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raytal.config import Config, ConfigError, load_config
from raytal.core.video import Video
from raytal.engine.trainer import StepContext
from raytal.model.batch import collate
from raytal.recipes.labeling import label_video, prepare_labeling
from raytal.recipes.objective import make_objective
from raytal.recipes.registry import RECIPES, LabelingContext, Recipe, active_recipes, register
from raytal.selftrain.models import build_detector

REPO = Path(__file__).resolve().parents[1]
T, C, D = 8, 2, 6


def config(*overrides: str) -> Config:
    return load_config(REPO / "configs" / "base" / "tiny.yaml", list(overrides))


def video(**kw) -> Video:
    """T snippets; snippet i is centred at i + 0.5 s (grid position = seconds - 0.5)."""
    return Video("v", "train", duration=float(T), fps=1.0, feat_stride=1, num_frames=1,
                 features=np.zeros((T, D), np.float32), labeled=False, **kw)


# --------------------------------------------------------------------------------- registration


def test_recipes_are_registered_by_name_in_the_papers_order():
    assert list(RECIPES) == ["npl", "apl", "ntc", "noco", "gaufuse"]
    assert all(isinstance(r, Recipe) and r.name == name for name, r in RECIPES.items())
    # only NPL and APL pick pseudo instances from the teacher's outputs; the rest refine them
    assert [name for name, r in RECIPES.items() if r.selects] == ["npl", "apl"]


def test_active_recipes_follow_registration_order_not_the_config():
    cfg = config("recipe.gaufuse.enabled=true", "recipe.ntc.enabled=true", "recipe.npl.enabled=true")
    assert [r.name for r in active_recipes(cfg)] == ["npl", "ntc", "gaufuse"]
    assert active_recipes(config()) == []


def test_a_name_registers_once():
    class Again(Recipe):
        name = "ntc"

    class Nameless(Recipe):
        pass

    for cls in (Again, Nameless):
        with pytest.raises(ValueError, match="empty or already registered"):
            register(cls)
    assert type(RECIPES["ntc"]).__name__ == "NTC"  # the built-in one is still there


# ------------------------------------------------------------------------------------- labeling

# The teacher's detections (seconds): A and B overlap (IoU = 1.5 / 2.5 = 0.6), the low-score one inside
# them would change their fusion if it were kept, C is another class elsewhere.
PRED = {
    "segments": np.array([[1.0, 3.0], [1.5, 3.5], [1.2, 3.2], [5.0, 6.0]]),
    "scores": np.array([0.9, 0.6, 0.1, 0.5]),
    "labels": np.array([0, 0, 0, 1]),
}


def dense_prediction() -> dict:
    """Dense pre-NMS outputs: level-0 points at t = 0..7 in shuffled order, plus one level-0 point on
    padding (t = 8, outside the video) and level-1 points; only the level-0 rows inside the video are the
    teacher's snippet scores."""
    t0 = np.array([3, 0, 6, 1, 7, 2, 5, 4, 8], dtype=np.float64)
    s0 = np.stack([t0 / 10, 1 - t0 / 10], axis=1)  # row for snippet t: (t/10, 1 - t/10)
    t1 = np.array([0.5, 2.5, 4.5, 6.5])
    s1 = np.full((4, C), 0.99)
    return {"t": np.concatenate([t0, t1]), "level": np.array([0] * 9 + [1] * 4),
            "scores": np.concatenate([s0, s1]).astype(np.float32),
            "start": np.zeros(13), "end": np.ones(13)}


def test_plain_threshold_selection_without_recipes():
    # recipe.min_score = 0.2 keeps A (0.9), B (0.6) and C (0.5), drops the 0.1 one, and changes nothing else
    out = label_video(config("recipe.min_score=0.2"), C, video(), PRED)
    np.testing.assert_array_equal(out["segments"], [[1.0, 3.0], [1.5, 3.5], [5.0, 6.0]])
    np.testing.assert_array_equal(out["labels"], [0, 0, 1])
    np.testing.assert_allclose(out["scores"], [0.9, 0.6, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out["weights"], [1.0, 1.0, 1.0])
    assert list(out["origins"]) == ["teacher"] * 3
    assert out["targets"] is None and out["teacher_scores"] is None and out["relaxed"] == 0
    # a stricter threshold keeps only A
    assert label_video(config("recipe.min_score=0.7"), C, video(), PRED)["labels"].tolist() == [0]


def test_npl_n_pos_0_is_the_mean_instance_count_of_the_labeled_videos():
    cfg = config("recipe.npl.enabled=true", "recipe.npl.n_pos=0")
    # 3 instances in one labeled video, 1 in the other: N_pos = (3 + 1) / 2 = 2
    labeled = [video(segments=np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]), labels=np.array([0, 1, 1])),
               video(segments=np.array([[1.0, 2.0]]), labels=np.array([0]))]
    context = prepare_labeling(cfg, lambda: iter(labeled), "detector")
    assert context.prepared["npl"] == 2.0 and RECIPES["npl"].n_pos(cfg, context) == 2.0
    # a set N_pos is used as it is and nothing is counted
    fixed = config("recipe.npl.enabled=true", "recipe.npl.n_pos=5")
    assert "npl" not in prepare_labeling(fixed, lambda: iter(labeled), "detector").prepared
    assert RECIPES["npl"].n_pos(fixed, LabelingContext()) == 5.0
    with pytest.raises(ValueError, match="n_pos = 0 takes N_pos from the labeled videos"):
        RECIPES["npl"].n_pos(cfg, LabelingContext())
    with pytest.raises(ValueError, match="and there are none"):
        prepare_labeling(cfg, lambda: iter([]), "detector")


def test_plain_threshold_of_the_round_from_the_val_videos():
    # min_score_rule val_count: the round's threshold comes with the labeling context (0.55 keeps A and B of
    # A 0.9, B 0.6, C 0.5), and recipe.min_score is not read
    cfg = config("recipe.min_score_rule=val_count", "recipe.min_score=0.0")
    out = label_video(cfg, C, video(), PRED, LabelingContext(min_score=0.55))
    np.testing.assert_allclose(out["scores"], [0.9, 0.6], rtol=1e-6)
    with pytest.raises(ValueError, match="val_count' sets the threshold from the val videos"):
        label_video(cfg, C, video(), PRED, LabelingContext())


def test_ntc_attaches_the_level0_teacher_scores():
    out = label_video(config("recipe.ntc.enabled=true"), C, video(), {**PRED, "dense": dense_prediction()})
    t = np.arange(T)
    np.testing.assert_allclose(out["teacher_scores"], np.stack([t / 10, 1 - t / 10], axis=1), rtol=1e-6)
    # NTC selects nothing itself: the instances are the plain threshold's
    np.testing.assert_array_equal(out["labels"], [0, 0, 1])
    assert out["targets"] is None


def test_gaufuse_fuses_overlapping_instances_after_selection_and_ntc():
    # Selection (min_score 0.2) keeps A, B, C. GauFuse groups A and B (IoU 0.6 > θ_g = 0.25) and fuses them
    # with q = softmax(s / T) at the paper's pseudo-label temperature T = 0.1:
    # q_A = 1 / (1 + e^{(0.6 - 0.9) / 0.1}) = 1 / (1 + e^-3) = 0.952574, q_B = 0.047426;
    # start = 1.0 q_A + 1.5 q_B = 1.0 + 0.5 q_B, end = 3.0 + 0.5 q_B, score = 0.9 q_A + 0.6 q_B = 0.6 + 0.3 q_A.
    # C stays as it is. Had the 0.1 instance been kept, it would have joined the group.
    cfg = config("recipe.gaufuse.enabled=true", "recipe.ntc.enabled=true", "recipe.min_score=0.2")
    assert cfg.recipe.gaufuse.temperature_pseudo == 0.1 and cfg.recipe.gaufuse.iou_group == 0.25
    out = label_video(cfg, C, video(), {**PRED, "dense": dense_prediction()})
    q_a = 1 / (1 + math.exp(-3))
    q_b = 1 - q_a
    order = np.argsort(out["labels"])
    np.testing.assert_array_equal(out["labels"][order], [0, 1])
    np.testing.assert_allclose(out["segments"][order], [[1.0 + 0.5 * q_b, 3.0 + 0.5 * q_b], [5.0, 6.0]], rtol=1e-6)
    fused = 0.6 + 0.3 * q_a  # 0.885772
    np.testing.assert_allclose(out["scores"][order], [fused, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["weights"], out["scores"])  # the fused confidence is the instance's weight
    assert list(out["origins"]) == ["fusion", "fusion"]
    # LinPro, both instances isolated (closed form: the score on the snippets whose centre is inside, 0 around):
    # the fused one covers grid [0.524, 2.524] -> snippets 1 and 2 of class 0; C covers grid [4.5, 5.5] -> snippet 5.
    expected = np.zeros((T, C), np.float32)
    expected[1:3, 0] = fused
    expected[5, 1] = 0.5
    np.testing.assert_allclose(out["targets"], expected, atol=1e-6)
    assert out["relaxed"] == 0
    # NTC (registered before GauFuse) attached the teacher's scores, and the fusion kept them
    t = np.arange(T)
    np.testing.assert_allclose(out["teacher_scores"], np.stack([t / 10, 1 - t / 10], axis=1), rtol=1e-6)


def test_two_selecting_recipes_are_refused():
    both = ("recipe.npl.enabled=true", "recipe.apl.enabled=true", "model.quality_heads=true")
    with pytest.raises(ConfigError, match="one pseudo-label selection method"):
        config(*both)  # the config says so when it is read ...
    cfg = config(both[0], both[2])
    cfg.recipe.apl.enabled = True  # ... and labeling, for a config built in code
    with pytest.raises(ConfigError, match="npl and apl both select"):
        label_video(cfg, C, video(), {**PRED, "dense": dense_prediction()})


# ------------------------------------------------------------------------------------ objective

DETECTION = {"loss", "cls_s", "reg_s", "cls_u", "reg_u"}


def objective_report(cfg: Config, *, delta_targets: bool = False, epoch: int = 0) -> dict[str, float]:
    """The objective of ``cfg`` on one batch of a labeled and a pseudo-labeled video. The pseudo video
    carries everything any recipe reads (instances, LinPro targets, teacher scores), so which terms
    appear depends on the enabled recipes alone."""
    T_ = 32
    rng = np.random.default_rng(0)
    common = dict(subset="train", duration=float(T_), fps=1.0, feat_stride=1, num_frames=1)
    labeled = Video("s", features=rng.normal(size=(T_, D)).astype(np.float32), segments=np.array([[4.5, 10.5]]),
                    labels=np.array([0]), labeled=True, **common)
    targets = np.zeros((T_, C), np.float32)
    targets[16:22, 1] = 0.8
    pseudo = Video("u", features=rng.normal(size=(T_, D)).astype(np.float32),
                   segments=np.array([[16.5, 22.5], [25.5, 28.5]]), labels=np.array([1, 0]),
                   weights=np.array([0.8, 0.6]), labeled=False, targets=targets,
                   teacher_scores=rng.uniform(size=(T_, C)).astype(np.float32), **common)
    torch.manual_seed(0)
    model = build_detector(cfg, C, D)
    batch = collate([labeled, pseudo], pad_multiple=model.pad_multiple)
    out = model(batch.feats, batch.mask)
    ctx = StepContext(epoch=epoch, step=0, seed=0, ema=copy.deepcopy(model))
    report = make_objective(cfg, delta_targets=delta_targets)(model, batch, out, ctx)
    assert set(report) >= DETECTION  # both parts' detection terms, always
    return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in report.items()}


BASE = ("model.quality_heads=true", "train.warmup_epochs=1")  # quality heads on: only APL may use them


@pytest.mark.parametrize("enabled, delta, terms", [
    ((), False, set()),
    (("npl",), False, {"consistency"}),
    (("apl",), False, {"locq_s", "locq_u", "acp"}),
    (("ntc",), False, {"ntc"}),
    (("gaufuse",), False, {"snippet"}),
    (("gaufuse",), True, {"delta"}),  # after a regeneration the dense targets are Δ labels
    (("apl", "ntc", "gaufuse"), False, {"locq_s", "locq_u", "acp", "ntc", "snippet"}),
], ids=["none", "npl", "apl", "ntc", "gaufuse", "gaufuse_delta", "apl_ntc_gaufuse"])
def test_objective_has_exactly_the_enabled_recipes_terms(enabled, delta, terms):
    cfg = config(*BASE, *[f"recipe.{name}.enabled=true" for name in enabled])
    report = objective_report(cfg, delta_targets=delta)
    assert set(report) - DETECTION == terms
    assert all(math.isfinite(v) for v in report.values())


def test_noco_corrects_the_batch_after_the_warmup_and_adds_no_loss_term():
    cfg = config(*BASE, "recipe.noco.enabled=true")
    assert set(objective_report(cfg, epoch=0)) == DETECTION  # warm-up epoch: no online correction
    assert set(objective_report(cfg, epoch=1)) == DETECTION | {"mic_added"}  # the EMA teacher corrects


def test_objective_total_is_the_weighted_sum_of_its_terms():
    # L = (cls_s + r reg_s) + β (cls_u + r reg_u) + λ_locq locq_s + λ_locq β locq_u + λ_acp acp + w_ntc ntc
    #     + w_Δ snippet, with every weight set apart from its default so a swapped one shows.
    cfg = config(*BASE, "recipe.apl.enabled=true", "recipe.ntc.enabled=true", "recipe.gaufuse.enabled=true",
                 "train.reg_weight=1.7", "recipe.apl.beta=0.5", "recipe.apl.lambda_locq=2.0",
                 "recipe.apl.lambda_acp=0.3", "recipe.ntc.weight=0.7", "recipe.gaufuse.delta_weight=1.5")
    r = objective_report(cfg)
    expected = ((r["cls_s"] + 1.7 * r["reg_s"]) + 0.5 * (r["cls_u"] + 1.7 * r["reg_u"]) + 2.0 * r["locq_s"]
                + 2.0 * 0.5 * r["locq_u"] + 0.3 * r["acp"] + 0.7 * r["ntc"] + 1.5 * r["snippet"])
    assert r["loss"] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------- layering


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (``import a.b`` and ``from a.b import c`` give ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_the_trainer_imports_nothing_from_recipes():
    trainer = imported_modules(REPO / "raytal" / "engine" / "trainer.py")
    assert "raytal.model.batch" in trainer  # the parse does see its raytal imports
    assert not {m for m in trainer if m == "raytal.recipes" or m.startswith("raytal.recipes.")}
    # nor does any module of the engine layer, which the recipes build on
    for path in sorted((REPO / "raytal" / "engine").glob("*.py")):
        assert not any(m.startswith("raytal.recipes") for m in imported_modules(path)), path.name


def test_labeling_and_objective_name_no_recipe():
    # they compose whatever is registered: the only recipe module they import is the registry
    for name in ("labeling.py", "objective.py"):
        recipes = {m for m in imported_modules(REPO / "raytal" / "recipes" / name) if m.startswith("raytal.recipes")}
        assert recipes == {"raytal.recipes.registry"}, name
