"""NoCo online correction in the student's objective (raytal.recipes.noco): teacher predictions from a
detector output, AIC + MIC + HPM on one video's instances, the batch correction, and the loss wiring
(EMA teacher, warm-up, corrected batch handed to the recipe's loss)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raytal.config import Config, NoCoConfig
from raytal.model.batch import Batch
from raytal.model.detector import DetectorOutput
from raytal.engine.trainer import StepContext
from raytal.recipes.noco import NoCo, correct_batch, correct_instances, teacher_predictions

# One pseudo instance q = [0, 10] (class 0, weight 1) and three teacher predictions:
#   p1 = [2, 10] class 0 score 0.6 : IoU(q, p1) = 8 / 10 = 0.8 > θ_aic = 0.5, 0.6 > θ_s = 0.3 -> AIC member
#   p2 = [0, 10] class 1 score 0.9 : other class -> not an AIC member; no class-1 pseudo instance -> MIC adds it
#   p3 = [20, 30] class 0 score 0.9: IoU 0 -> not a member; max IoU with class-0 pseudo = 0 < 0.1 -> MIC adds it
Q_SEG, Q_LAB, Q_W = np.array([[0.0, 10.0]]), np.array([0]), np.array([1.0])
P_SEG = np.array([[2.0, 10.0], [0.0, 10.0], [20.0, 30.0]])
P_LAB, P_SCORE = np.array([0, 1, 0]), np.array([0.6, 0.9, 0.9])
# AIC (γ = 1): q' = (1·1·[0, 10] + 0.6·[2, 10]) / (1 + 0.6) = [1.2, 16] / 1.6 = [0.75, 10];
#              w' = (1 + 0.6) / (1 + 1) = 0.8
AIC_SEG, AIC_W = [0.75, 10.0], 0.8


def _sorted(seg, lab, w):
    order = np.lexsort((seg[:, 0], lab))
    return seg[order], lab[order], w[order]


def test_aic_only_corrects_towards_the_teacher():
    nc = NoCoConfig(enabled=True, aic=True, mic=False, hpm=True)
    seg, lab, w, added = correct_instances(Q_SEG, Q_LAB, Q_W, P_SEG, P_LAB, P_SCORE, nc)
    np.testing.assert_allclose(seg, [AIC_SEG])
    np.testing.assert_allclose(w, [AIC_W])
    np.testing.assert_array_equal(lab, [0])
    assert added == 0


def test_mic_adds_uncovered_confident_predictions_with_their_scores():
    nc = NoCoConfig(enabled=True, aic=True, mic=True, hpm=True)
    seg, lab, w, added = correct_instances(Q_SEG, Q_LAB, Q_W, P_SEG, P_LAB, P_SCORE, nc)
    # p1 overlaps q' = [0.75, 10]: IoU = 8 / 9.25 = 0.865 >= θ_low -> not added; p2, p3 added with w = 0.9.
    assert added == 2
    seg, lab, w = _sorted(seg, lab, w)
    np.testing.assert_allclose(seg, [AIC_SEG, [20.0, 30.0], [0.0, 10.0]])
    np.testing.assert_array_equal(lab, [0, 0, 1])
    np.testing.assert_allclose(w, [AIC_W, 0.9, 0.9])


def test_without_hpm_every_weight_is_one_and_without_aic_mic_nothing_moves():
    nc = NoCoConfig(enabled=True, aic=True, mic=True, hpm=False)
    _, _, w, _ = correct_instances(Q_SEG, Q_LAB, Q_W, P_SEG, P_LAB, P_SCORE, nc)
    np.testing.assert_array_equal(w, [1.0, 1.0, 1.0])
    nc = NoCoConfig(enabled=True, aic=False, mic=False, hpm=True)
    seg, lab, w, added = correct_instances(Q_SEG, Q_LAB, np.array([0.4]), P_SEG, P_LAB, P_SCORE, nc)
    np.testing.assert_allclose(seg, Q_SEG)
    np.testing.assert_allclose(w, [0.4])
    assert added == 0


def _fake_output(logits: list[list[float]], offsets: list[list[float]], t: list[float], mask: list[bool]):
    P = len(t)
    points = torch.tensor([[ti, 0.0, 100.0, 1.0] for ti in t])
    return DetectorOutput(
        cls_logits=torch.tensor([logits], dtype=torch.float32), offsets=torch.tensor([offsets], dtype=torch.float32),
        quality_logits=None, points=points, levels=torch.zeros(P, dtype=torch.int64),
        mask=torch.tensor([mask]), pyramid=[],
    )


def test_teacher_predictions_threshold_decode_and_clip():
    # 4 points, 2 classes. sigmoid(2) = 0.881, sigmoid(0) = 0.5, sigmoid(-2) = 0.119.
    # point 0 (t=1, offsets 2, 1): class 0 logit 2 -> [1-2, 1+1] = [-1, 2] clipped to [0, 2]
    # point 1 (t=3, offsets 1, 1): class 1 logit 0 -> [2, 4]; class 0 logit -2 below 0.3
    # point 2 (t=5): both classes -2 -> nothing; point 3 is padding (mask False) though its logit is 2
    # point 1's end 4 and length 3: clipped to [2, 3]
    out = _fake_output([[2, -2], [-2, 0], [-2, -2], [2, 2]], [[2, 1], [1, 1], [1, 1], [1, 1]],
                       [1, 3, 5, 7], [True, True, True, False])
    seg, score, lab = teacher_predictions(out, 0, length=3, min_score=0.3, topk=10)
    order = np.argsort(lab)
    np.testing.assert_allclose(seg[order], [[0.0, 2.0], [2.0, 3.0]])
    np.testing.assert_array_equal(lab[order], [0, 1])
    np.testing.assert_allclose(score[order], [1 / (1 + np.exp(-2)), 0.5], rtol=1e-6)
    # topk = 1 keeps only the best (point 0, class 0)
    seg, score, lab = teacher_predictions(out, 0, length=3, min_score=0.3, topk=1)
    np.testing.assert_array_equal(lab, [0])


def _batch(labeled: list[bool]) -> Batch:
    B, T = len(labeled), 32
    return Batch(
        feats=torch.zeros(B, 4, T), mask=torch.ones(B, T, dtype=torch.bool),
        segments=[torch.tensor([[0.0, 10.0]]) for _ in labeled], labels=[torch.tensor([0]) for _ in labeled],
        weights=[torch.tensor([1.0]) for _ in labeled], labeled=torch.tensor(labeled), targets=None,
        teacher_scores=None, meta=[{"length": T, "offset": 0} for _ in labeled],
    )


def _teacher_out(B: int) -> DetectorOutput:
    # One point per teacher prediction, offsets chosen so t ± offsets give P_SEG: t = 6 (4, 4) -> [2, 10];
    # t = 5 (5, 5) -> [0, 10]; t = 25 (5, 5) -> [20, 30]. Logits give scores 0.6, 0.9, 0.9 for the
    # classes of P_LAB and a score below every threshold (logit -5) for the other class.
    lg = lambda s: float(np.log(s / (1 - s)))  # noqa: E731 - inverse sigmoid
    logits = [[lg(0.6), -5.0], [-5.0, lg(0.9)], [lg(0.9), -5.0]]
    out = _fake_output(logits, [[4, 4], [5, 5], [5, 5]], [6, 5, 25], [True, True, True])
    return dataclasses.replace(out, cls_logits=out.cls_logits.expand(B, -1, -1), offsets=out.offsets.expand(B, -1, -1),
                               mask=out.mask.expand(B, -1))


def test_correct_batch_changes_only_pseudo_videos():
    batch = _batch([True, False])
    nc = NoCoConfig(enabled=True)
    new, added = correct_batch(batch, _teacher_out(2), nc, topk=100)
    assert added == 2
    np.testing.assert_allclose(new.segments[0].numpy(), [[0.0, 10.0]])  # labeled: ground truth untouched
    seg, lab, w = _sorted(new.segments[1].numpy(), new.labels[1].numpy(), new.weights[1].numpy())
    np.testing.assert_allclose(seg, [AIC_SEG, [20.0, 30.0], [0.0, 10.0]], rtol=1e-5)
    np.testing.assert_array_equal(lab, [0, 0, 1])
    np.testing.assert_allclose(w, [AIC_W, 0.9, 0.9], rtol=1e-5)
    assert new.segments[1].dtype == torch.float32 and new.labels[1].dtype == torch.int64


def _ctx(epoch: int, ema=None) -> StepContext:
    return StepContext(epoch=epoch, step=0, seed=0, ema=ema)


def test_batch_transform_uses_ema_teacher_after_warmup_only():
    cfg = Config()
    cfg.recipe.noco.enabled = True
    cfg.train.warmup_epochs = 2
    calls = []

    def teacher(feats, mask):
        calls.append(feats.shape)
        return _teacher_out(feats.shape[0])

    transform = NoCo().batch_transform(cfg)
    batch = _batch([False])
    seen, extra = transform(None, batch, None, _ctx(1, teacher))
    assert not calls and seen is batch and "mic_added" not in extra  # warm-up: the CALA labels as they are
    seen, extra = transform(None, batch, None, _ctx(2, teacher))
    assert len(calls) == 1 and extra["mic_added"] == 2.0
    assert len(seen.labels[0]) == 3  # q' + two MIC instances reach the recipe's loss


def test_without_hpm_cala_labels_train_at_weight_one():
    cfg = Config()
    cfg.recipe.noco = NoCoConfig(enabled=True, aic=False, mic=False, hpm=False)
    batch = dataclasses.replace(_batch([False]), weights=[torch.tensor([0.3])])
    seen, _ = NoCo().batch_transform(cfg)(None, batch, None, _ctx(10))
    assert seen.weights[0].tolist() == [1.0]


def test_noco_sets_the_ema_momentum():
    cfg = Config()
    cfg.recipe.noco = NoCoConfig(enabled=True, ema_momentum=0.99)
    assert NoCo().ema_momentum(cfg) == 0.99


@pytest.mark.parametrize("bad", [np.array([[1.0, 2.0, 3.0]])])
def test_bad_pseudo_segments_are_rejected(bad):
    with pytest.raises(ValueError, match="segments"):
        correct_instances(bad, Q_LAB, Q_W, P_SEG, P_LAB, P_SCORE, NoCoConfig(enabled=True))
