import math

import numpy as np
import pytest
import torch

from raytal.model.batch import Batch
from raytal.model.detector import DetectorOutput
from raytal.model.inference import candidates, dense_predictions, detect
from raytal.model.points import make_points


def hand_output(quality=False):
    """One video, T=8 (7 real), one level, C=2. Scores: t=2 class 1 p=.5, t=5 class 0 p=.75,
    t=7 (padding) class 0 p=.99 that must never appear; everything else ~0."""
    points, levels = make_points(8, [[0, 100]])
    logits = torch.full((1, 8, 2), -20.0)
    logits[0, 2, 1] = 0.0
    logits[0, 5, 0] = math.log(3.0)
    logits[0, 7, 0] = math.log(99.0)
    offsets = torch.zeros(1, 8, 2)
    offsets[0, 2] = torch.tensor([1.0, 2.0])  # [1, 4]
    offsets[0, 5] = torch.tensor([10.0, 1.0])  # [-5, 6]: seconds [-4.5, 6.5], clipped to [0, 6.5] after NMS
    mask = torch.tensor([[True] * 7 + [False]])
    q = torch.zeros(1, 8, 2) if quality else None
    out = DetectorOutput(logits, offsets, q, points, levels, mask, [])
    # fps 10, stride 10, 10 frames: seconds = (grid * 10 + 5) / 10 = grid + 0.5, clamped to [0, 8]
    meta = [dict(video_id="v", fps=10.0, feat_stride=10, num_frames=10, duration=8.0, offset=0, length=7)]
    batch = Batch(torch.zeros(1, 1, 8), mask, [torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.int64)],
                  [torch.zeros(0)], torch.tensor([True]), None, None, meta)
    return out, batch


def test_detect_decodes_clips_and_converts_to_seconds():
    out, batch = hand_output()
    cand = candidates(out, batch, 0, 0.1, 10, 0.0)  # before NMS: not clipped
    np.testing.assert_allclose(cand["segments"], [[-4.5, 6.5], [1.5, 4.5]])
    np.testing.assert_allclose(cand["scores"], [0.75, 0.5], rtol=1e-6)
    (res,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="none")
    np.testing.assert_allclose(res["segments"], [[0.0, 6.5], [1.5, 4.5]])
    np.testing.assert_allclose(res["scores"], [0.75, 0.5], rtol=1e-6)
    assert res["labels"].tolist() == [0, 1] and res["labels"].dtype == np.int64
    assert "quality" not in res
    # top-1 per level keeps the best; soft-NMS leaves different classes alone
    (top,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=1, nms="soft")
    assert top["labels"].tolist() == [0]
    (soft,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="soft")
    np.testing.assert_allclose(soft["scores"], [0.75, 0.5], rtol=1e-6)
    (one,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="hard", max_segments=1)
    np.testing.assert_allclose(one["segments"], [[0.0, 6.5]])
    # candidates of 3 snippets or less are dropped: [1, 4] is exactly 3 long
    (long,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="none", duration_thresh=3.0)
    assert long["labels"].tolist() == [0]


def test_class_agnostic_soft_nms_and_voting():
    out, batch = hand_output()
    # Seconds [-4.5, 6.5] (.75, class 0) and [1.5, 4.5] (.5, class 1): IoU 3/11. Per class nothing decays;
    # over all classes the second one decays by exp(-(3/11)^2 / .5).
    (per_class,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="soft", sigma=0.5)
    np.testing.assert_allclose(per_class["scores"], [0.75, 0.5], rtol=1e-6)
    (agnostic,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="soft", sigma=0.5, multiclass=False)
    np.testing.assert_allclose(agnostic["scores"], [0.75, 0.5 * math.exp(-((3 / 11) ** 2) / 0.5)], rtol=1e-6)
    assert agnostic["labels"].tolist() == [0, 1]
    # voting at .25: each kept segment averages both candidates (IoU 3/11 >= .25), weights .75 and .5, then
    # the clip: start (.75 * -4.5 + .5 * 1.5) / 1.25 = -2.1 -> 0, end (.75 * 6.5 + .5 * 4.5) / 1.25 = 5.7
    (voted,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="soft", multiclass=False,
                      voting_thresh=0.25)
    np.testing.assert_allclose(voted["segments"], [[0.0, 5.7], [0.0, 5.7]], rtol=1e-6)


def test_detect_quality_and_fusion_hook():
    out, batch = hand_output(quality=True)
    (res,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="hard")
    np.testing.assert_allclose(res["quality"], [[0.5, 0.5], [0.5, 0.5]])  # sigmoid(0)
    calls = []

    def fuse(seg, scores, labels):
        calls.append(seg.copy())
        return seg[:1] + 1.0, scores[:1], labels[:1]

    (fused,) = detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="fusion", fusion_fn=fuse)
    assert len(calls) == 1 and calls[0].shape == (2, 2)  # candidates in seconds
    np.testing.assert_allclose(fused["segments"], np.clip(calls[0][:1] + 1.0, 0.0, 8.0))  # clipped after fusion
    with pytest.raises(ValueError, match="fusion_fn"):
        detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="fusion")
    with pytest.raises(ValueError, match="nms must be one of"):
        detect(out, batch, pre_nms_thresh=0.1, pre_nms_topk=10, nms="greedy")


def test_dense_predictions_real_points_unclipped():
    out, batch = hand_output(quality=True)
    d = dense_predictions(out, batch, 0)
    assert d["t"].tolist() == list(range(7)) and d["level"].tolist() == [0] * 7 and d["stride"].tolist() == [1] * 7
    assert d["scores"].shape == (7, 2) and d["scores"][5, 0] == pytest.approx(0.75)
    assert d["start"][5] == -5.0 and d["end"][5] == 6.0 and d["start"][2] == 1.0 and d["end"][2] == 4.0
    assert d["quality"].shape == (7, 2)
