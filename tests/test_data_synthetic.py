import json
import sys
from pathlib import Path

import numpy as np
import pytest

from raytal.cli import run_job
from raytal.data.annotations import load_annotations
from raytal.data.features import load_features
from raytal.data.shards import read_shards
from raytal.data.synthetic import (
    feature_statistics,
    make_world,
    num_snippets,
    synthesize_video,
    tiny_timelines,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import make_dataset  # noqa: E402


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_tiny_is_byte_identical_per_seed(tmp_path, capsys):
    assert make_dataset.main(["--preset", "tiny", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert make_dataset.main(["--preset", "tiny", "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert make_dataset.main(["--preset", "tiny", "--out", str(tmp_path / "c"), "--seed", "4"]) == 0
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a["features/tiny_train_000.npy"] != c.get("features/tiny_train_000.npy")
    out = capsys.readouterr().out
    assert "nearest-class-mean snippet accuracy" in out and "Jump" in out
    # layout: 48 videos = 32 train + 16 test (test_fraction 1/3), shards per subset, dataset.yaml
    assert sum(k.startswith("features/") for k in a) == 48
    ann = load_annotations(tmp_path / "a" / "annotations.json")
    assert sorted(ann.subsets()) == ["test", "train"] and len(ann.subset("test")) == 16
    assert len(list(read_shards(tmp_path / "a" / "shards" / "train"))) == 32


def test_tiny_num_videos_sizes_both_subsets(tmp_path, capsys):
    # 12 videos: round(12 / 3) = 4 test, 8 train (the demo's 144: 48 test, 96 train)
    assert make_dataset.main(["--preset", "tiny", "--out", str(tmp_path / "t"), "--num-videos", "12"]) == 0
    ann = load_annotations(tmp_path / "t" / "annotations.json")
    assert len(ann.subset("test")) == 4 and len(ann.subset("train")) == 8
    with pytest.raises(SystemExit) as e:
        make_dataset.main(["--preset", "tiny", "--out", str(tmp_path / "u"), "--num-videos", "2"])
    assert e.value.code == 2 and "--num-videos must be >= 3" in capsys.readouterr().err


def test_tiny_timelines_are_valid():
    classes, vids = tiny_timelines(0)
    assert len(classes) == 5 and len(vids) == 48
    for v in vids:
        assert 20 <= v.duration <= 60
        assert np.all(v.segments[:, 1] > v.segments[:, 0])
        assert v.segments.min() >= 0 and v.segments.max() <= v.duration
        order = np.argsort(v.segments[:, 0])
        assert np.all(v.segments[order][1:, 0] >= v.segments[order][:-1, 1])  # no overlaps
    # main classes are balanced: 48 videos / 5 classes -> each class leads 9 or 10 videos
    mains = [np.bincount(v.labels).argmax() for v in vids]
    assert set(np.bincount(mains, minlength=5)) <= {9, 10, 11}


def test_real_timelines_kept(tmp_path, shared_data):
    db = json.loads(shared_data("thumos14.json").read_text())["database"]
    keep = ["video_test_0000004"] + [k for k in db if k.startswith("video_validation")][:2]
    sub = {"database": {k: db[k] for k in keep}}
    src = tmp_path / "sub.json"
    src.write_text(json.dumps(sub))
    out = tmp_path / "d"
    assert make_dataset.main(["--preset", "synth", "--annotations", str(src), "--out", str(out),
                              "--feature-dim", "16"]) == 0
    got = load_annotations(out / "annotations.json")
    want = load_annotations(src)
    assert got.classes == want.classes
    for k in sub["database"]:
        np.testing.assert_array_equal(got.videos[k].segments, want.videos[k].segments)
        np.testing.assert_array_equal(got.videos[k].labels, want.videos[k].labels)
        assert got.videos[k].duration == want.videos[k].duration
    # video_test_0000004: 33.83 s at 30 fps = 1014.9 frames; floor((1014.9 - 16)/16) + 1 = 63 snippets
    v = got.videos["video_test_0000004"]
    v.feat_stride, v.num_frames = 16, 16
    assert load_features(out / "features", v, feature_dim=16).shape == (63, 16)


def test_num_snippets_by_hand():
    assert num_snippets(33.83, 30.0, 16, 16) == 63
    assert num_snippets(10.0, 10.0, 4, 8) == 24  # floor((100 - 8)/4) + 1 = 23 + 1
    assert num_snippets(0.1, 10.0, 4, 8) == 1  # shorter than one clip: still one snippet


def test_video_features_independent_of_other_videos():
    classes, vids = tiny_timelines(1)
    world = make_world(len(classes), 8, [v.labels for v in vids], seed=5)
    a, _ = synthesize_video(world, vids[3], seed=5, index=3)
    b, _ = synthesize_video(world, vids[3], seed=5, index=3)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.features.dtype == np.float32 and np.isfinite(a.features).all()
    assert a.features.shape == (num_snippets(vids[3].duration, 30.0, 16, 16), 8)


def test_confusion_and_spread_grow_with_difficulty():
    classes, vids = tiny_timelines(2)
    sets = [v.labels for v in vids]
    # share = 1 - 0.4**difficulty: 0 at 0, 0.6 at 1, 1 - 0.16 = 0.84 at 2
    assert make_world(5, 16, sets, 0, difficulty=0.0).share == 0.0
    assert make_world(5, 16, sets, 0, difficulty=1.0).share == pytest.approx(0.6)
    assert make_world(5, 16, sets, 0, difficulty=2.0).share == pytest.approx(0.84)
    within = []
    for x in (0.5, 1.0, 2.0):
        world = make_world(5, 16, sets, 0, difficulty=x)
        out = [synthesize_video(world, v, 0, j) for j, v in enumerate(vids)]
        stats = feature_statistics([o[0].features for o in out], [o[1] for o in out], classes)
        within.append(stats["within"] / stats["between"])
    assert within[0] < within[1] < within[2]
    with pytest.raises(ValueError, match="difficulty"):
        make_world(5, 16, sets, 0, difficulty=-1.0)


def test_feature_statistics_by_hand():
    # class 0 at (1,0),(3,0); class 1 at (0,2),(0,4). Global mean (1, 1.5); centred class means
    # m0 = (1, -1.5), m1 = (-1, 1.5): within RMS distance 1 each, between |m0 - m1| = sqrt(4 + 9),
    # cos(m0, m1) = (-1 - 2.25) / 3.25 = -1, every point nearest its own mean.
    feats = [np.array([[1, 0], [3, 0], [0, 2], [0, 4]], np.float32)]
    labels = [np.array([0, 0, 1, 1])]
    s = feature_statistics(feats, labels, ["a", "b"])
    assert s["within"] == pytest.approx(1.0)
    assert s["between"] == pytest.approx(np.sqrt(13))
    assert s["ncm_acc"] == 1.0
    assert s["per_class"][0]["nearest"] == "b" and s["per_class"][0]["nearest_cos"] == pytest.approx(-1.0)


def test_streamed_unlabeled(tmp_path):
    out = tmp_path / "d"
    assert make_dataset.main(["--preset", "tiny", "--out", str(out), "--num-unlabeled", "5",
                              "--rows-per-shard", "2"]) == 0
    shards = sorted((out / "shards" / "unlabeled").glob("part-*.parquet"))
    assert len(shards) == 3  # 5 videos at 2 per shard
    vids = list(read_shards(shards))
    assert [v.video_id for v in vids] == [f"unl_{j:07d}" for j in range(5)]
    assert all(not v.labeled and v.subset == "unlabeled" and len(v.segments) for v in vids)


def test_thumos14_synth_finds_its_annotations_by_flag_or_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(make_dataset.THUMOS14_ENV, raising=False)
    assert run_job(make_dataset.main, ["--preset", "thumos14-synth", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "thumos14.json" in err and "happyharrycn/actionformer_release" in err
    assert "--annotations" in err and "RAYTAL_THUMOS14_JSON" in err
    # a stand-in file named by the environment variable: 2 videos of the ActionFormer dialect
    db = {"video_validation_1": {"subset": "Validation", "duration": 20.0, "fps": 30.0, "annotations": [
              {"label": "Jump", "segment": [2.0, 6.0], "label_id": 0}]},
          "video_test_1": {"subset": "Test", "duration": 20.0, "fps": 30.0, "annotations": [
              {"label": "Jump", "segment": [5.0, 9.0], "label_id": 0}]}}
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"database": db}))
    monkeypatch.setenv(make_dataset.THUMOS14_ENV, str(src))
    out = tmp_path / "d"
    assert make_dataset.main(["--preset", "thumos14-synth", "--out", str(out), "--feature-dim", "8"]) == 0
    assert sorted(load_annotations(out / "annotations.json").videos) == ["video_test_1", "video_validation_1"]
