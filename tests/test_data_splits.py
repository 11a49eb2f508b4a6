import numpy as np
import pytest

from raytal.data.shards import rows_to_videos, videos_to_table
from raytal.data.splits import split_train, stratified_split, video_level_labels, view_rows
from raytal.core.video import Video


def one_class_sets(num_classes=5, per_class=4):
    return [[c] for c in range(num_classes) for _ in range(per_class)]


def test_one_video_per_class_at_quarter():
    sets = one_class_sets()
    for seed in range(5):
        mask = stratified_split(sets, 0.25, seed)
        # k = round(0.25 * 20) = 5 and 5 classes: the coverage rule takes exactly one of each
        assert mask.sum() == 5
        assert sorted(c for (c,), m in zip(sets, mask) if m) == [0, 1, 2, 3, 4]


def test_half_split_is_exactly_proportional():
    # Each class has 4 videos and wants 0.5 * 4 = 2 labeled; per class the walk gives
    # 1st -> labeled (coverage), 2nd -> rest (demand 1 < 2), 3rd -> tie 1 = 1 and equal room -> labeled,
    # 4th -> rest (demand 0 < 1): 2 per class, 10 in all.
    sets = one_class_sets()
    mask = stratified_split(sets, 0.5, 3)
    assert mask.sum() == 10
    counts = np.bincount([c for (c,), m in zip(sets, mask) if m], minlength=5)
    np.testing.assert_array_equal(counts, [2, 2, 2, 2, 2])


def test_rare_class_goes_to_labeled_first():
    sets = [[0]] * 10 + [[1]] * 10 + [[2]] * 9 + [[2, 3]]
    mask = stratified_split(sets, 0.1, 0)
    assert mask.sum() == 3  # round(0.1 * 30)
    assert mask[-1]  # the only video of class 3 (rarest) is labeled


def test_seeded_reproducible_and_seed_matters():
    rng = np.random.default_rng(0)
    sets = [list(rng.choice(6, size=rng.integers(1, 3), replace=False)) for _ in range(60)]
    a = stratified_split(sets, 0.2, 7)
    np.testing.assert_array_equal(a, stratified_split(sets, 0.2, 7))
    assert not np.array_equal(a, stratified_split(sets, 0.2, 8))
    assert a.sum() == 12  # round(0.2 * 60)
    labeled_classes = set(np.concatenate([np.asarray(s) for s, m in zip(sets, a) if m]).tolist())
    assert labeled_classes == set(range(6))


def test_edge_ratios_and_empty_videos():
    sets = [[], [0], [], [1], []]
    assert stratified_split(sets, 1.0, 0).all()
    assert not stratified_split(sets, 0.0, 0).any()
    m = stratified_split(sets, 0.01, 0)  # round(0.05) = 0, but at least one video when ratio > 0
    assert m.sum() == 1
    m = stratified_split(sets, 0.4, 0)  # k = 2: the two classes are covered first
    assert m.sum() == 2 and m[1] and m[3]
    assert stratified_split([], 0.5, 0).shape == (0,)
    with pytest.raises(ValueError, match="ratio"):
        stratified_split(sets, 1.5, 0)


def vids(n=40, num_classes=4):
    return [
        Video(f"v{i:02d}", "train", 10.0, 10.0, 4, 8, segments=np.array([[1.0, 2.0], [3.0, 4.0]]),
              labels=np.array([i % num_classes, (i * 7) % num_classes]))
        for i in range(n)
    ]


def _ids_and_sets(videos):
    return [v.video_id for v in videos], [video_level_labels(v) for v in videos]


def test_split_train_parts():
    videos = vids()
    sp = split_train(*_ids_and_sets(videos), labeled_ratio=0.1, val_ratio=0.25, seed=1)
    # val: round(0.25 * 40) = 10; labeled: round(0.1 * 30) = 3; unlabeled: 27
    assert (len(sp.val), len(sp.labeled), len(sp.unlabeled)) == (10, 3, 27)
    assert sorted(sp.val + sp.labeled + sp.unlabeled) == [v.video_id for v in videos]
    assert sp == split_train(*_ids_and_sets(videos), 0.1, 0.25, 1)
    with pytest.raises(ValueError, match="labeled_ratio"):
        split_train(*_ids_and_sets(videos), 0.0, 0.0, 1)


def test_view_rows_semi_and_weak():
    v = Video("a", "train", 4.0, 1.0, 1, 1, features=np.zeros((4, 2), np.float32),
              segments=np.array([[0.0, 1.0], [2.0, 3.0], [1.0, 2.0]]), labels=np.array([3, 1, 3]),
              video_labels=np.array([4]))
    rows = videos_to_table([v])

    def view(part: str, setting: str = "semi") -> Video:
        return rows_to_videos(view_rows(rows, part, setting))[0]

    lab = view("labeled")  # the distinct classes of its annotations, [3, 1, 3] -> [1, 3]
    assert lab.labeled and lab.video_labels.tolist() == [1, 3]
    # unlabeled: flag off, no video-level labels, ground truth kept for quality metrics
    unl = view("unlabeled")
    assert not unl.labeled and len(unl.video_labels) == 0 and unl.labels.tolist() == [3, 1, 3]
    weak = view("unlabeled", "weak")  # the weak setting's supervision: video-level labels
    assert not weak.labeled and weak.video_labels.tolist() == [1, 3]
    test = view("test")
    assert test.labeled and len(test.video_labels) == 0
    pool = view("pool")  # an unlabeled pool video keeps the labels its shard carries
    assert not pool.labeled and pool.video_labels.tolist() == [4]
    assert rows.column("labeled").to_pylist() == [True]  # the input is not modified
    with pytest.raises(ValueError, match="setting"):
        view_rows(rows, "labeled", "full")
    with pytest.raises(ValueError, match="part"):
        view_rows(rows, "extra", "semi")


def test_video_level_labels():
    v = Video("x", "s", 1.0, 1.0, 1, 1, segments=np.zeros((3, 2)), labels=np.array([2, 0, 2]))
    np.testing.assert_array_equal(video_level_labels(v), [0, 2])
