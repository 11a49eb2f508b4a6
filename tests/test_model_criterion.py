import math

import pytest
import torch

from raytal.losses.normalizer import LossNormalizer
from raytal.model.batch import Batch
from raytal.model.criterion import detection_loss
from raytal.model.detector import DetectorOutput
from raytal.model.points import make_points

LN2 = math.log(2.0)
POS = 0.25 * 0.25 * LN2  # focal at logit 0 (p = .5), target 1: alpha .25 * (1 - .5)^2 * ln 2
NEG = 0.75 * 0.25 * LN2  # target 0: (1 - alpha) * (1 - .5)^2 * ln 2


def setup(second_segments=torch.zeros(0, 2)):
    """Two videos of T=4, one level (range [0, 100]), C=2, all logits 0, all offsets (0.5, 1.5).

    Video 0: 3 real snippets, instance [0.5, 2.5] class 0 with weight 0.5. Video 1: 4 real snippets.
    """
    points, levels = make_points(4, [[0, 100]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    out = DetectorOutput(
        cls_logits=torch.zeros(2, 4, 2, requires_grad=True),
        offsets=torch.tensor([0.5, 1.5]).repeat(2, 4, 1).requires_grad_(),
        quality_logits=None, points=points, levels=levels, mask=mask, pyramid=[],
    )
    n2 = len(second_segments)
    batch = Batch(
        feats=torch.zeros(2, 1, 4), mask=mask,
        segments=[torch.tensor([[0.5, 2.5]]), second_segments],
        labels=[torch.tensor([0]), torch.ones(n2, dtype=torch.int64)],
        weights=[torch.tensor([0.5]), torch.ones(n2)],
        labeled=torch.tensor([True, False]), targets=None, teacher_scores=None, meta=[{}, {}],
    )
    return out, batch


def test_weighted_focal_and_diou_normalised_by_positives():
    out, batch = setup()
    # Radius 10: the centre region is the whole instance, so t = 1, 2 are positive (t = 0 is on the
    # boundary: not strictly inside). Targets: t=1 (0.5, 1.5), t=2 (1.5, 0.5).
    res = detection_loss(out, batch, select=torch.tensor([True, False]), center_sample_radius=10.0, reg_weight=2.0)
    # cls: positive rows (POS + NEG) * 0.5 each, negative row t=0: 2 NEG; t=3 is padding. / 2 positives
    cls = (2 * 0.5 * (POS + NEG) + 2 * NEG) / 2
    # reg: t=1 exact (0). t=2: pred (.5, 1.5) vs (1.5, .5): inter 1, union 3, IoU 1/3, enclose 3,
    # rho = .5 * ((1.5 - .5) - (.5 - 1.5)) = 1 -> 1 - 1/3 + 1/9 = 7/9; weight .5; / 2 positives
    reg = 0.5 * (7 / 9) / 2
    assert res["num_pos"].item() == 2
    assert res["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert res["reg"].item() == pytest.approx(reg, rel=1e-5)
    assert res["loss"].item() == pytest.approx(cls + 2.0 * reg, rel=1e-5)
    assert len(res["targets"]) == 1 and res["targets"][0].pos.tolist() == [False, True, True, False]
    res["loss"].backward()
    assert out.cls_logits.grad[1].abs().sum() == 0  # the unselected video gets no gradient
    assert out.cls_logits.grad[0, 3].abs().sum() == 0  # nor does padding


def test_select_pseudo_video_without_instances():
    out, batch = setup()
    res = detection_loss(out, batch, select=torch.tensor([False, True]), center_sample_radius=10.0)
    # 4 real negative points * 2 classes * NEG, normaliser max(0, 1) = 1; no regression term
    assert res["cls"].item() == pytest.approx(8 * NEG, rel=1e-5)
    assert res["reg"].item() == 0.0 and res["num_pos"].item() == 0


def test_all_videos_and_empty_selection():
    out, batch = setup(torch.tensor([[0.5, 2.5]]))
    res = detection_loss(out, batch, center_sample_radius=10.0)
    # video 1 has the same instance with weight 1 at class 1, and t = 3 is real there (negative)
    cls = (2 * 0.5 * (POS + NEG) + 2 * NEG + 2 * (POS + NEG) + 4 * NEG) / 4
    reg = (0.5 * 7 / 9 + 7 / 9) / 4
    assert res["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert res["reg"].item() == pytest.approx(reg, rel=1e-5)
    none = detection_loss(out, batch, select=torch.tensor([False, False]))
    assert none["loss"].item() == 0.0 and none["targets"] == []
    none["loss"].backward()  # still part of the graph


def test_cls_target_fn_replaces_targets():
    out, batch = setup()

    def half_targets(o, targets, select):
        return torch.full((2, 4, 2), 0.5)  # whole batch; the loss picks the selected rows

    res = detection_loss(out, batch, select=torch.tensor([True, False]), center_sample_radius=10.0,
                         focal_alpha=-1, focal_gamma=0.0, cls_target_fn=half_targets)
    # BCE(0, .5) = ln 2 everywhere; rows t=1, 2 weighted .5, row t=0 weight 1 -> (2*.5*2 + 2) ln2 / 2
    assert res["cls"].item() == pytest.approx(2 * LN2, rel=1e-5)
    with pytest.raises(ValueError, match="cls_target_fn returned"):
        detection_loss(out, batch, cls_target_fn=lambda o, t, s: torch.zeros(3, 4, 2))


def test_moving_average_normaliser_and_label_smoothing():
    out, batch = setup()
    select = torch.tensor([True, False])
    norm = LossNormalizer(init=10.0, momentum=0.9)
    res = detection_loss(out, batch, select=select, center_sample_radius=10.0, normalizer=norm)
    # 2 positives: the normaliser becomes 0.9 x 10 + 0.1 x 2 = 9.2, and both terms are divided by it
    assert float(norm.value) == pytest.approx(9.2)
    assert res["cls"].item() == pytest.approx((2 * 0.5 * (POS + NEG) + 2 * NEG) / 9.2, rel=1e-5)
    assert res["reg"].item() == pytest.approx(0.5 * (7 / 9) / 9.2, rel=1e-5)
    # the pseudo video has no positive: it counts as 1 (ActionFormer's max(num_pos, 1)) -> 0.9 x 9.2 + 0.1
    detection_loss(out, batch, select=~select, center_sample_radius=10.0, normalizer=norm)
    assert float(norm.value) == pytest.approx(8.38)
    assert norm.state_dict() == pytest.approx({"value": 8.38, "momentum": 0.9})

    # Smoothing 0.3 over C = 2 classes: targets 1 -> 0.7 + 0.1 = 0.8, 0 -> 0.1. At logit 0 (p = .5) every
    # element's focal term is alpha_t (1 - p_t)^2 BCE = (.25 y + .75 (1 - y)) x .25 x ln 2.
    def focal(y: float) -> float:
        return (0.25 * y + 0.75 * (1 - y)) * 0.25 * LN2

    smooth = detection_loss(out, batch, select=select, center_sample_radius=10.0, label_smoothing=0.3)
    rows = 2 * 0.5 * (focal(0.8) + focal(0.1)) + 2 * focal(0.1)  # t = 1, 2 (weight .5), t = 0 (negative)
    assert smooth["cls"].item() == pytest.approx(rows / 2, rel=1e-5)
