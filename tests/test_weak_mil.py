"""MIL loss of the weak base model (raytal/losses/mil.py) on hand-made TCAMs."""

from __future__ import annotations

import math

import pytest
import torch

from raytal.losses.mil import mil_loss, topk_pool


def test_topk_pool_uses_k_from_real_length_and_ignores_padding():
    # Video 0: 4 real snippets + 1 padded one holding huge values; ratio 2 -> k = floor(4/2) = 2.
    #   class 0 real values 1, 4, 2, 3 -> top-2 = 4, 3 -> 3.5 ; class 1: 0, -1, -2, 5 -> 5, 0 -> 2.5
    # Video 1: 5 real snippets; ratio 2 -> k = floor(5/2) = 2.
    #   class 0: 1, 4, 2, 3, 100 -> 100, 4 -> 52 ; class 1: 0, -1, -2, 5, 50 -> 50, 5 -> 27.5
    col0 = [1.0, 4.0, 2.0, 3.0, 100.0]
    col1 = [0.0, -1.0, -2.0, 5.0, 50.0]
    x = torch.tensor([col0, col1]).T[None].repeat(2, 1, 1)  # [2, 5, 2]
    mask = torch.tensor([[True] * 4 + [False], [True] * 5])
    got = topk_pool(x, mask, topk_ratio=2.0)
    assert torch.allclose(got, torch.tensor([[3.5, 2.5], [52.0, 27.5]]))
    # ratio 8: k = max(1, floor(4/8)) = 1 -> the max of the real snippets: 4 and 5 for video 0.
    assert torch.allclose(topk_pool(x, mask, 8.0)[0], torch.tensor([4.0, 5.0]))


def test_base_suppression_and_norm_terms():
    # C = 1 (+ background), T = 2, ratio 2 -> k = 1: pooling is the max over time.
    # Base TCAM: t0 = [ln 3, 0], t1 = [0, 0] -> video logits [ln 3, 0] -> softmax [3/4, 1/4].
    # Target [label, background] = [1, 1] / 2 -> L_base = -(ln(3/4) + ln(1/4)) / 2 = ln 4 - ln(3) / 2.
    base = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    # Suppressed TCAM: t0 = [0, 0], t1 = [ln 3, ln 3] -> video logits [ln 3, ln 3] -> softmax [1/2, 1/2].
    # Target [1, 0] -> L_supp = -ln(1/2) = ln 2.
    supp = torch.tensor([[[0.0, 0.0], [math.log(3.0), math.log(3.0)]]])
    attention = torch.tensor([[0.5, 0.25]])  # L_norm = 0.5 + 0.25 = 0.75
    mask = torch.ones(1, 2, dtype=torch.bool)
    labels = torch.tensor([[1.0]])
    out = mil_loss(base, mask, labels, topk_ratio=2.0, bg_weight=2.0, suppressed_logits=supp,
                   attention=attention, norm_weight=0.1)
    l_base = math.log(4.0) - 0.5 * math.log(3.0)
    l_supp = math.log(2.0)
    assert out["base"].item() == pytest.approx(l_base, rel=1e-6)
    assert out["supp"].item() == pytest.approx(l_supp, rel=1e-6)
    assert out["norm"].item() == pytest.approx(0.75, rel=1e-6)
    # total = L_base + 2 * L_supp + 0.1 * 0.75
    assert out["loss"].item() == pytest.approx(l_base + 2 * l_supp + 0.075, rel=1e-6)
    assert torch.allclose(out["video_probs"], torch.tensor([[0.75, 0.25]]))


def test_base_only_when_no_suppressed_branch():
    base = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    out = mil_loss(base, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1.0]]), topk_ratio=2.0)
    # same base as above; no suppression and no norm term
    assert out["loss"].item() == pytest.approx(math.log(4.0) - 0.5 * math.log(3.0), rel=1e-6)
    assert out["supp"].item() == 0.0


def test_padding_does_not_change_the_loss_and_multi_label_target():
    # C = 2, one real snippet t0 = [0, 0, 0] (softmax 1/3 each) and a padded snippet with extreme values.
    # Labels {0, 1}: target [1, 1, 1] / 3 -> L_base = -3 * (1/3) * ln(1/3) = ln 3.
    x = torch.tensor([[[0.0, 0.0, 0.0], [100.0, -100.0, 100.0]]])
    mask = torch.tensor([[True, False]])
    out = mil_loss(x, mask, torch.tensor([[1.0, 1.0]]), topk_ratio=8.0)
    assert out["loss"].item() == pytest.approx(math.log(3.0), rel=1e-6)


def test_pure_background_video_is_left_out_of_the_suppression_term():
    # Video 0 (label {0}): suppressed video logits [ln 3, ln 3] -> L = ln 2 (as above).
    # Video 1 (no label): excluded, so L_supp = ln 2, not (ln 2 + anything) / 2.
    # Base of video 1: logits [0, 0] -> softmax [1/2, 1/2], target [0, 1] -> ln 2.
    # Base of video 0: logits [ln 3, 0] -> ln 4 - ln(3)/2.  L_base = mean of the two.
    base = torch.tensor([[[math.log(3.0), 0.0]], [[0.0, 0.0]]])
    supp = torch.tensor([[[math.log(3.0), math.log(3.0)]], [[5.0, -5.0]]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    out = mil_loss(base, mask, torch.tensor([[1.0], [0.0]]), suppressed_logits=supp)
    assert out["supp"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    expect_base = 0.5 * ((math.log(4.0) - 0.5 * math.log(3.0)) + math.log(2.0))
    assert out["base"].item() == pytest.approx(expect_base, rel=1e-6)


def test_gradient_raises_the_labelled_class_on_its_top_snippet():
    x = torch.zeros(1, 4, 3, requires_grad=True)
    out = mil_loss(x, torch.ones(1, 4, dtype=torch.bool), torch.tensor([[0.0, 1.0]]), topk_ratio=4.0)
    out["loss"].backward()
    # the target class 1 is under-predicted (1/3 < 1/2): descent raises its logit, lowers absent class 0
    assert x.grad[0, :, 1].sum() < 0
    assert x.grad[0, :, 0].sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(video_labels=torch.ones(1, 3)), "video_labels"),
        (dict(video_labels=torch.tensor([[0.5, 1.0]])), "multi-hot"),
        (dict(mask=torch.zeros(1, 4, dtype=torch.bool)), "real snippet"),
        (dict(mask=torch.ones(1, 3, dtype=torch.bool)), "mask"),
        (dict(topk_ratio=0.0), "topk_ratio"),
        (dict(suppressed_logits=torch.zeros(1, 4, 2)), "suppressed_logits"),
        (dict(attention=torch.zeros(1, 3)), "attention"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(tcam_logits=torch.zeros(1, 4, 3), mask=torch.ones(1, 4, dtype=torch.bool),
                video_labels=torch.tensor([[1.0, 0.0]]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mil_loss(**args)
