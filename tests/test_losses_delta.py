import math

import pytest
import torch

from raytal.losses.delta_loss import delta_label_loss


def test_hand_values_and_gradient_direction():
    probs = torch.tensor([[0.5, 0.25], [0.8, 0.2]], requires_grad=True)
    delta = torch.tensor([[0.5, -0.5], [0.0, 1.0]])
    loss = delta_label_loss(probs, delta)
    # row 0: -(0.5 ln 0.5 - 0.5 ln 0.25) = -0.5 ln 2 ; row 1: -(1 * ln 0.2) = ln 5
    expected = (-0.5 * math.log(2.0) + math.log(5.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # d/dp = -delta / p / N: row 0: [-0.5/0.5/2, +0.5/0.25/2] = [-0.5, 1.0]
    # (the label that grew is pushed up, the one that shrank pushed down)
    torch.testing.assert_close(probs.grad[0], torch.tensor([-0.5, 1.0]))
    # row 1: [0, -1/0.2/2] = [0, -2.5]
    torch.testing.assert_close(probs.grad[1], torch.tensor([0.0, -2.5]))


def test_valid_mask_with_nan_rows():
    probs = torch.tensor([[0.5, 0.25], [0.8, 0.2]], requires_grad=True)
    delta = torch.tensor([[0.5, -0.5], [float("nan"), float("nan")]])
    loss = delta_label_loss(probs, delta, valid=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(-0.5 * math.log(2.0), rel=1e-5)  # row 0 only
    loss.backward()
    assert torch.isfinite(probs.grad).all()


def test_zero_prob_is_clamped_and_empty_is_zero():
    probs = torch.tensor([[0.0, 1.0]])
    # -(-1) * ln(1e-6) = ln(1e-6): negative delta on a zero probability is bounded, not -inf
    loss = delta_label_loss(probs, torch.tensor([[-1.0, 0.0]]), eps=1e-6)
    assert loss.item() == pytest.approx(math.log(1e-6), rel=1e-5)
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = delta_label_loss(empty, torch.zeros(0, 2))
    assert loss.item() == 0.0
    loss.backward()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="equal shape"):
        delta_label_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        delta_label_loss(torch.full((1, 2), 0.5), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="bool mask"):
        delta_label_loss(torch.full((1, 2), 0.5), torch.zeros(1, 2), valid=torch.ones(1))
