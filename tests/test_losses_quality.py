import math

import pytest
import torch

from raytal.losses.quality import locq_loss, quality_focal_loss, quality_target, segment_tiou_tnd


def test_tiou_tnd_hand_values():
    pred = torch.tensor([[2.0, 2.0], [1.0, 1.0], [0.5, 0.5]])
    target = torch.tensor([[1.0, 3.0], [4.0, 0.0], [0.0, 4.0]])
    tiou, tnd = segment_tiou_tnd(pred, target)
    # row 0: pred [-2, 2], target [-1, 3]: inter [-1, 2] = 3, union 4 + 4 - 3 = 5 -> 0.6
    #        enclosing [-2, 3] = 5, centres 0 vs 1 -> rho 1 -> tnd 1/25 = 0.04
    # row 1: pred [-1, 1], target [-4, 0]: inter [-1, 0] = 1, union 2 + 4 - 1 = 5 -> 0.2
    #        enclosing [-4, 1] = 5, centres 0 vs -2 -> tnd 4/25 = 0.16
    # row 2: pred [-0.5, 0.5], target [0, 4]: inter 0.5, union 1 + 4 - 0.5 = 4.5 -> 1/9
    #        enclosing [-0.5, 4] = 4.5, centres 0 vs 2 -> tnd 4/20.25
    torch.testing.assert_close(tiou, torch.tensor([0.6, 0.2, 1 / 9]))
    torch.testing.assert_close(tnd, torch.tensor([0.04, 0.16, 4 / 20.25]))
    # targets: 0.6 - 0.04 = 0.56 ; 0.2 - 0.16 = 0.04 ; 1/9 - 0.1975 < 0 -> eps
    torch.testing.assert_close(quality_target(tiou, tnd, eps=1e-3), torch.tensor([0.56, 0.04, 1e-3]))


def test_tiou_tnd_identical_and_gradient():
    pred = torch.tensor([[1.0, 3.0]], requires_grad=True)
    tiou, tnd = segment_tiou_tnd(pred, torch.tensor([[1.0, 3.0]]))
    torch.testing.assert_close(tiou, torch.tensor([1.0]))
    torch.testing.assert_close(tnd, torch.tensor([0.0]))
    tiou.sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_locq_loss_hand_values_and_detached_targets():
    logits = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    tiou = torch.tensor([0.6], requires_grad=True)
    tnd = torch.tensor([0.04], requires_grad=True)
    loss = locq_loss(logits, tiou, tnd)
    # sigma(ln 3) = 0.75: BCE = -0.6 ln 0.75 - 0.4 ln 0.25 ; sigma(0) = 0.5: BCE = ln 2 for any target
    expected = -0.6 * math.log(0.75) - 0.4 * math.log(0.25) + math.log(2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # d BCE/d logit = sigma - y: 0.75 - 0.6 = 0.15 ; 0.5 - 0.04 = 0.46
    torch.testing.assert_close(logits.grad, torch.tensor([[0.15, 0.46]]))
    assert tiou.grad is None and tnd.grad is None


def test_locq_loss_reductions_and_empty():
    logits = torch.zeros(2, 2)
    y = torch.tensor([0.3, 0.7])
    # logit 0 -> BCE ln 2 per head, 2 ln 2 per point
    torch.testing.assert_close(locq_loss(logits, y, y, reduction="none"), torch.full((2,), 2 * math.log(2.0)))
    assert locq_loss(logits, y, y, reduction="sum").item() == pytest.approx(4 * math.log(2.0))
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = locq_loss(empty, torch.zeros(0), torch.zeros(0))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="reduction"):
        locq_loss(logits, y, y, reduction="avg")


def test_quality_focal_loss_hand_values():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], requires_grad=True)
    y = torch.tensor([[0.56, 0.0], [1.0, 0.0]])
    loss = quality_focal_loss(logits, y, gamma=2.0)
    # [0,0]: |0.56 - 0.5|^2 * ln 2 = 0.0036 ln 2 ; [*,1]: |0 - 0.5|^2 * ln 2 = 0.25 ln 2
    # [1,0]: |1 - 0.75|^2 * (-ln 0.75) = 0.0625 * 0.287682
    ln2 = math.log(2.0)
    expected = torch.tensor([[0.0036 * ln2, 0.25 * ln2], [0.0625 * -math.log(0.75), 0.25 * ln2]])
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        segment_tiou_tnd(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="equal shape"):
        quality_focal_loss(torch.zeros(3, 2), torch.zeros(3, 3))
