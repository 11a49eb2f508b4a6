import numpy as np
import pytest

from raytal.core.video import Video
from raytal.model.batch import collate


def video(vid, t, segs, labels, *, d=3, weights=None, targets=None, labeled=True):
    feats = np.arange(t * d, dtype=np.float32).reshape(t, d)
    # fps 10, feat_stride 10, num_frames 10: grid = (s * 10 - 5) / 10 = s - 0.5
    return Video(vid, "train", float(t), 10.0, 10, 10, features=feats, segments=np.array(segs, float).reshape(-1, 2),
                 labels=np.array(labels, np.int64), weights=weights, targets=targets, labeled=labeled)


def test_inference_collate_pads_and_converts_to_grid():
    a = video("a", 37, [[5.0, 15.0]], [2], weights=np.array([0.5]), targets=np.ones((37, 4), np.float32))
    b = video("b", 20, [], [], labeled=False)
    batch = collate([a, b], pad_multiple=8)
    # longest 37 -> padded to 40 (next multiple of 8)
    assert batch.feats.shape == (2, 3, 40) and batch.mask.shape == (2, 40)
    assert batch.mask[0].sum() == 37 and batch.mask[1].sum() == 20
    np.testing.assert_array_equal(batch.feats[0, :, :37].numpy(), a.features.T)
    assert batch.feats[1, :, 20:].abs().sum() == 0
    assert batch.segments[0].tolist() == [[4.5, 14.5]]  # 5 s -> 4.5, 15 s -> 14.5
    assert batch.segments[1].shape == (0, 2)
    assert batch.labels[0].tolist() == [2] and batch.weights[0].tolist() == [0.5]
    assert batch.labeled.tolist() == [True, False]
    # targets: real rows copied, padding 0, the video without targets all NaN
    assert batch.targets.shape == (2, 40, 4)
    assert (batch.targets[0, :37] == 1).all() and (batch.targets[0, 37:] == 0).all()
    assert batch.targets[1].isnan().all()
    assert batch.teacher_scores is None
    assert batch.meta[0] == dict(video_id="a", fps=10.0, feat_stride=10, num_frames=10, duration=37.0,
                                 offset=0, length=37)


def test_training_crop_keeps_instances_mostly_inside():
    # Grid segments [4.5, 14.5] (length 10) and [29.5, 31.5] (length 2) in a 40-snippet video, crop 16.
    v = video("a", 40, [[5.0, 15.0], [30.0, 32.0]], [0, 1])
    for seed in range(20):
        batch = collate([v], pad_multiple=4, max_seq_len=16, rng=np.random.default_rng(seed), trunc_thresh=0.5)
        off = batch.meta[0]["offset"]
        assert 0 <= off <= 24 and batch.meta[0]["length"] == 16 and batch.feats.shape[-1] == 16
        np.testing.assert_array_equal(batch.feats[0].numpy(), v.features[off : off + 16].T)
        expected = []
        for (s, e), lab in [((4.5, 14.5), 0), ((29.5, 31.5), 1)]:
            cs, ce = min(max(s - off, 0), 16), min(max(e - off, 0), 16)
            if ce - cs >= 0.5 * (e - s) and ce > cs:
                expected.append((cs, ce, lab))
        got = [(*seg, lab) for seg, lab in zip(batch.segments[0].tolist(), batch.labels[0].tolist())]
        assert got == expected  # halves are exact in float32


def test_short_video_is_not_cropped():
    v = video("a", 10, [[2.0, 4.0]], [0])
    batch = collate([v], pad_multiple=4, max_seq_len=16, rng=np.random.default_rng(0))
    assert batch.meta[0]["offset"] == 0 and batch.feats.shape[-1] == 12 and batch.mask.sum() == 10


def test_bad_input():
    v = video("a", 10, [[2.0, 4.0]], [0])
    with pytest.raises(ValueError, match="empty list"):
        collate([], pad_multiple=4)
    with pytest.raises(ValueError, match="both max_seq_len and rng"):
        collate([v], pad_multiple=4, max_seq_len=8)
    w = video("w", 10, [], [], d=5)
    with pytest.raises(ValueError, match="video 'w': field 'features': expected D=3"):
        collate([v, w], pad_multiple=4)
    v.features = None
    with pytest.raises(ValueError, match="video 'a': field 'features'"):
        collate([v], pad_multiple=4)
