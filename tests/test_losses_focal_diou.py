import math

import pytest
import torch

from raytal.losses.diou import diou_loss
from raytal.losses.focal import sigmoid_focal_loss

LN2 = math.log(2.0)


def test_focal_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])  # p = 0.5, 0.5, 0.75
    targets = torch.tensor([1.0, 0.0, 1.0])
    got = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    expected = torch.tensor([
        0.25 * 0.5**2 * LN2,  # y=1, p=.5: alpha 0.25, (1-p_t)^2 = 0.25, CE = ln 2
        0.75 * 0.5**2 * LN2,  # y=0, p=.5: alpha_t = 1 - 0.25
        0.25 * 0.25**2 * -math.log(0.75),  # y=1, p=.75: (1-.75)^2, CE = -ln .75
    ])
    assert torch.allclose(got, expected, atol=1e-6)


def test_focal_without_alpha_and_gamma_is_bce():
    # gamma 0 and alpha < 0: plain BCE; y=0.5 (soft) at logit 0 gives ln 2.
    got = sigmoid_focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.5]), alpha=-1, gamma=0.0)
    assert torch.allclose(got, torch.tensor([LN2, LN2]), atol=1e-6)


def test_focal_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(2))


def test_diou_hand_values():
    pred = torch.tensor([[1.0, 1.0], [1.0, 3.0], [0.0, 1.0]])
    gt = torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 0.0]])
    got = diou_loss(pred, gt)
    expected = torch.tensor([
        0.0,  # identical segments
        # [t-1, t+3] vs [t-2, t+2]: inter 1+2 = 3, union 4+4-3 = 5, IoU .6; enclose 2+3 = 5;
        # centres t+1 vs t: rho = 1 -> 1 - .6 + 1/25
        1 - 0.6 + 1 / 25,
        # [t, t+1] vs [t-2, t]: no overlap; enclose 3; centres t+.5 vs t-1: rho 1.5 -> 1 + 2.25/9
        1 + 2.25 / 9,
    ])
    assert torch.allclose(got, expected, atol=1e-6)


def test_diou_gradient_when_disjoint():
    pred = torch.tensor([[0.0, 1.0]], requires_grad=True)
    diou_loss(pred, torch.tensor([[2.0, 0.0]])).sum().backward()
    assert pred.grad.abs().sum() > 0


def test_diou_bad_shape_raises():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        diou_loss(torch.zeros(3), torch.zeros(3))
