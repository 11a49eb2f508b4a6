"""Weak base model: padding-invariant forward, seeded training, and localization on the tiny preset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raytal.config import WeakConfig
from raytal.data.splits import video_level_labels
from raytal.data.synthetic import class_sets_of, generate, make_world, tiny_timelines
from raytal.model.wtal import WTALModel
from raytal.core.iou import pairwise_iou
from raytal.engine.mil import predict_weak, train_weak

NUM_CLASSES = 5


def _epochs(videos, seed):
    """Epoch e's videos: a permutation of ``videos`` seeded by (seed, e)."""
    return lambda e: [videos[i] for i in np.random.default_rng([seed, e]).permutation(len(videos))]


def _dim(videos) -> int:
    return 1 if videos[0].features is None else int(videos[0].features.shape[1])


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset in memory (as jobs/make_dataset.py --preset tiny builds it), video-level labels set."""
    classes, timelines = tiny_timelines(0)
    train = [v for v in timelines if v.subset == "train"]
    world = make_world(len(classes), 32, class_sets_of(train), 0)
    videos = [dataclasses.replace(v, video_labels=video_level_labels(v)) for v in generate(world, timelines, 0)]
    return [v for v in videos if v.subset == "train"], [v for v in videos if v.subset == "test"]


@pytest.fixture(scope="module")
def trained(tiny):
    torch.set_num_threads(1)
    return train_weak(_epochs(tiny[0], 0), NUM_CLASSES, _dim(tiny[0]), WeakConfig(epochs=40), seed=0, progress=False)


def test_forward_on_padded_batch_matches_single_video():
    torch.manual_seed(0)
    model = WTALModel(input_dim=6, num_classes=3, hidden=8).eval()
    long, short = torch.randn(1, 6, 10), torch.randn(1, 6, 7)
    feats = torch.cat([long, torch.cat([short, torch.full((1, 6, 3), 9.0)], dim=2)])  # junk in the padding
    mask = torch.tensor([[True] * 10, [True] * 7 + [False] * 3])
    out = model(feats, mask)
    alone = model(short, torch.ones(1, 7, dtype=torch.bool))
    assert out.tcam_logits.shape == (2, 10, 4) and out.attention.shape == (2, 10)
    assert torch.allclose(out.tcam_logits[1, :7], alone.tcam_logits[0], atol=1e-6)
    assert torch.allclose(out.suppressed_logits[1, :7], alone.suppressed_logits[0], atol=1e-6)
    assert torch.allclose(out.attention[1, :7], alone.attention[0], atol=1e-6)
    assert (out.tcam_logits[1, 7:] == 0).all() and (out.attention[1, 7:] == 0).all()
    assert ((out.attention >= 0) & (out.attention <= 1)).all()


def test_training_is_seeded_and_leaves_global_rng_alone(tiny):
    cfg = WeakConfig(epochs=1, hidden=16)
    state = torch.get_rng_state()
    a = train_weak(_epochs(tiny[0][:8], 3), NUM_CLASSES, _dim(tiny[0][:8]), cfg, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_weak(_epochs(tiny[0][:8], 3), NUM_CLASSES, _dim(tiny[0][:8]), cfg, seed=3, progress=False)
    c = train_weak(_epochs(tiny[0][:8], 4), NUM_CLASSES, _dim(tiny[0][:8]), cfg, seed=4, progress=False)
    wa, wb, wc = (m.classifier.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_empty_video_labels_fall_back_to_segment_classes(tiny):
    cfg = WeakConfig(epochs=1, hidden=16)
    vids = tiny[0][:8]
    bare = [dataclasses.replace(v, video_labels=np.zeros(0, dtype=np.int64)) for v in vids]
    a = train_weak(_epochs(vids, 1), NUM_CLASSES, _dim(vids), cfg, seed=1, progress=False)
    b = train_weak(_epochs(bare, 1), NUM_CLASSES, _dim(bare), cfg, seed=1, progress=False)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    # and a wrong label set gives a different model: the labels are really used
    wrong = [dataclasses.replace(v, video_labels=(video_level_labels(v) + 1) % NUM_CLASSES) for v in vids]
    c = train_weak(_epochs(wrong, 1), NUM_CLASSES, _dim(wrong), cfg, seed=1, progress=False)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_base_model_classifies_and_localizes_test_videos(tiny, trained):
    test = tiny[1]
    cfg = WeakConfig(epochs=40)
    preds = predict_weak(trained, test, cfg, NUM_CLASSES, nms="hard", iou_threshold=0.5)
    assert len(preds) == len(test)
    # Video classification: the top video score is one of the video's classes (chance: ~1/5).
    top1 = np.mean([int(p["video_scores"].argmax()) in set(v.video_labels.tolist()) for v, p in zip(test, preds)])
    assert top1 > 0.8
    # Localization: for each ground-truth instance, the best IoU among the 5 highest-scored predictions
    # of its class. Five random segments of ground-truth-like lengths (1.5-6 s) reach ~0.32 here;
    # an untrained model 0.0.
    best = []
    for v, p in zip(test, preds):
        for seg, lab in zip(v.segments, v.labels):
            top = p["segments"][p["labels"] == lab][:5]
            best.append(pairwise_iou(seg[None], top).max() if len(top) else 0.0)
    assert np.mean(best) > 0.5


def test_prediction_format_hard_nms_and_fusion_hook(tiny, trained):
    test = tiny[1][:4]
    cfg = WeakConfig()
    preds = predict_weak(trained, test, cfg, NUM_CLASSES, nms="hard", iou_threshold=0.5, max_segments=3)
    for v, p in zip(test, preds):
        T = len(v.features)
        assert p["cas"].shape == (T, NUM_CLASSES) and p["video_scores"].shape == (NUM_CLASSES,)
        seg, scores, labels = p["segments"], p["scores"], p["labels"]
        assert 1 <= len(scores) <= 3 and labels.dtype == np.int64
        assert (seg[:, 0] >= 0).all() and (seg[:, 1] <= v.duration).all() and (seg[:, 1] > seg[:, 0]).all()
        assert (np.diff(scores) <= 0).all()
        for c in np.unique(labels):  # per-class hard NMS: no two kept same-class segments overlap > 0.5
            s = seg[labels == c]
            iou = pairwise_iou(s, s) - np.eye(len(s))
            assert (iou <= 0.5 + 1e-9).all()

    calls = []

    def keep_best(seg, scores, labels):
        calls.append(len(scores))
        i = int(np.argmax(scores))
        return seg[i : i + 1], scores[i : i + 1], labels[i : i + 1]

    fused = predict_weak(trained, test, cfg, NUM_CLASSES, nms="fusion", fusion_fn=keep_best)
    assert len(calls) == len(test) and all(len(p["scores"]) == 1 for p in fused)
    assert np.allclose([p["scores"][0] for p in fused], [p["scores"][0] for p in preds])


def test_predict_bad_input(trained, tiny):
    cfg = WeakConfig()
    with pytest.raises(ValueError, match="fusion_fn"):
        predict_weak(trained, tiny[1][:1], cfg, NUM_CLASSES, nms="fusion")
    with pytest.raises(ValueError, match="nms"):
        predict_weak(trained, tiny[1][:1], cfg, NUM_CLASSES, nms="soft")
    with pytest.raises(ValueError, match="classes"):
        predict_weak(trained, tiny[1][:1], cfg, NUM_CLASSES + 1, nms="hard")
    with pytest.raises(ValueError, match="features"):
        train_weak(lambda e: [dataclasses.replace(tiny[0][0], features=None)], NUM_CLASSES, 4, cfg, seed=0, progress=False)


def test_no_cas_above_threshold_gives_empty_predictions(trained, tiny):
    # cas = softmax * attention <= 1 and runs need cas > threshold, so threshold 1.0 yields nothing
    preds = predict_weak(trained, tiny[1][:2], WeakConfig(thresholds=[1.0]), NUM_CLASSES, nms="hard")
    for p in preds:
        assert p["segments"].shape == (0, 2) and p["scores"].shape == (0,) and p["labels"].shape == (0,)
