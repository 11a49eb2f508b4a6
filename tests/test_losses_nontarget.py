import math

import pytest
import torch

from raytal.losses.nontarget import nontarget_loss

F_, T_ = False, True


def _case():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1]])
    target = torch.tensor([0, 2])
    pos = torch.tensor([[F_, T_, F_, F_], [F_, F_, F_, F_]])
    neg = torch.tensor([[F_, F_, T_, T_], [T_, F_, F_, T_]])
    return probs, target, pos, neg


def test_hand_values_with_and_without_target():
    probs, target, pos, neg = _case()
    # row 0: target -ln 0.5, pos -ln 0.3, neg -ln(1-0.1) twice
    row0 = -math.log(0.5) - math.log(0.3) - 2 * math.log(0.9)
    # row 1: target -ln 0.6, no pos, neg classes 0 and 3: -ln 0.9 twice
    row1 = -math.log(0.6) - 2 * math.log(0.9)
    assert nontarget_loss(probs, target, pos, neg).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    no_tgt = ((-math.log(0.3) - 2 * math.log(0.9)) + (-2 * math.log(0.9))) / 2
    assert nontarget_loss(probs, target, pos, neg, with_target=False).item() == pytest.approx(no_tgt, rel=1e-5)


def test_valid_mask_and_nan_in_invalid_rows():
    probs, target, pos, neg = _case()
    probs = probs.clone()
    probs[1] = float("nan")
    probs.requires_grad_(True)
    loss = nontarget_loss(probs, target, pos, neg, valid=torch.tensor([T_, F_]))
    # only row 0 counts: -ln 0.5 - ln 0.3 - 2 ln 0.9
    assert loss.item() == pytest.approx(-math.log(0.5) - math.log(0.3) - 2 * math.log(0.9), rel=1e-5)
    loss.backward()
    assert torch.isfinite(probs.grad).all()
    # d/dp for row 0: target -1/0.5 = -2 ; pos -1/0.3 ; neg +1/(1-0.1) ; invalid row gets 0
    torch.testing.assert_close(probs.grad[0], torch.tensor([-2.0, -1 / 0.3, 1 / 0.9, 1 / 0.9]))
    torch.testing.assert_close(probs.grad[1], torch.zeros(4))


def test_target_column_in_masks_is_ignored():
    probs, target, pos, neg = _case()
    neg2 = neg.clone()
    neg2[0, 0] = True  # the target class also marked negative: must not add -ln(1 - 0.5)
    assert nontarget_loss(probs, target, pos, neg2).item() == pytest.approx(
        nontarget_loss(probs, target, pos, neg).item()
    )


def test_clamped_logs_stay_finite():
    probs = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    loss = nontarget_loss(probs, torch.tensor([0]), torch.tensor([[F_, T_, F_]]), torch.tensor([[F_, F_, T_]]))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(probs.grad).all()


def test_empty_is_zero_with_grad():
    probs = torch.zeros(0, 3, requires_grad=True)
    empty = torch.zeros(0, 3, dtype=torch.bool)
    loss = nontarget_loss(probs, torch.zeros(0, dtype=torch.int64), empty, empty)
    assert loss.item() == 0.0
    loss.backward()


def test_bad_input_raises():
    probs, target, pos, neg = _case()
    with pytest.raises(ValueError, match="both positive"):
        nontarget_loss(probs, target, pos, pos | neg)
    with pytest.raises(ValueError, match="bool mask"):
        nontarget_loss(probs, target, pos.float(), neg)
    with pytest.raises(ValueError, match="target class ids"):
        nontarget_loss(probs, torch.tensor([0, 4]), pos, neg)


