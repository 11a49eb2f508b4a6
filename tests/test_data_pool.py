"""The unlabeled pool from a user's own unannotated .npy files (``make_dataset.py --unlabeled-features``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from raytal.cli import run_job
from raytal.config import DataConfig
from raytal.core.errors import DataError
from raytal.data.index import Source, build_index
from raytal.data.pool import read_video_info, unlabeled_videos
from raytal.data.shards import read_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import make_dataset  # noqa: E402

STRIDE, FRAMES, FPS, D = 16, 16, 30.0, 6
# BSN's ActivityNet video_info CSV layout (seconds and the nominal fps are what raytal reads)
CSV_HEADER = "video,numFrame,seconds,fps,rfps,subset,featureFrame\n"


def annotated(root: Path) -> tuple[Path, Path]:
    """Two annotated videos (ActionFormer dialect) of 10 s at 30 fps: 19 snippets each."""
    db = {"a1": {"subset": "train", "duration": 10.0, "fps": FPS,
                 "annotations": [{"label": "Run", "segment": [1.0, 3.0], "label_id": 0}]},
          "a2": {"subset": "test", "duration": 10.0, "fps": FPS,
                 "annotations": [{"label": "Run", "segment": [4.0, 8.0], "label_id": 0}]}}
    ann = root / "ann.json"
    ann.write_text(json.dumps({"database": db}))
    feats = root / "feats"
    feats.mkdir()
    for vid in db:
        np.save(feats / f"{vid}.npy", np.ones((19, D), np.float32))
    return ann, feats


def pool(root: Path, lengths: dict[str, int], dim: int = D) -> Path:
    d = root / "pool"
    d.mkdir()
    for vid, T in lengths.items():
        np.save(d / f"{vid}.npy", np.full((T, dim), 0.25, np.float32))
    return d


def convert(root: Path, ann: Path, feats: Path, *extra: str) -> int:
    """The job's exit status, as its command line gives it (``run_job``: a bad input is 2 and one line)."""
    return run_job(make_dataset.main, ["--annotations", str(ann), "--features", str(feats), "--feat-stride", str(STRIDE),
                              "--num-frames", str(FRAMES), "--fps", str(FPS), "--out", str(root / "out"), *extra])


def test_pool_with_a_video_info_csv(tmp_path):
    ann, feats = annotated(tmp_path)
    d = pool(tmp_path, {"v_u1": 12, "v_u2": 7, "v_u3": 30})
    info = tmp_path / "video_info.csv"
    info.write_text(CSV_HEADER + "v_u1,418,14.07,30.0,29.7,training,400\n"
                    "v_u2,2303,92.18,25.0,24.98,training,2304\n"
                    "v_u3,6337,211.53,24.0,29.96,validation,6336\n"
                    "v_other,100,3.3,30.0,30.0,testing,96\n")  # a video without features: ignored
    assert convert(tmp_path, ann, feats, "--unlabeled-features", str(d), "--video-info", str(info),
                   "--rows-per-shard", "2") == 0
    out = tmp_path / "out"
    assert yaml.safe_load((out / "dataset.yaml").read_text())["unlabeled_shards"] == "shards/unlabeled"
    shards = sorted((out / "shards" / "unlabeled").glob("part-*.parquet"))
    assert len(shards) == 2  # 3 videos at 2 rows per shard
    rows = list(read_shards(shards))
    assert [v.video_id for v in rows] == ["v_u1", "v_u2", "v_u3"]
    assert [v.duration for v in rows] == [14.07, 92.18, 211.53]
    assert [v.fps for v in rows] == [30.0, 25.0, 24.0]
    assert [v.features.shape for v in rows] == [(12, D), (7, D), (30, D)]
    for v in rows:
        assert v.subset == "unlabeled" and not v.labeled
        assert v.segments.shape == (0, 2) and len(v.labels) == 0 and len(v.video_labels) == 0
        assert (v.feat_stride, v.num_frames) == (STRIDE, FRAMES)
        np.testing.assert_array_equal(v.features, 0.25)
    # the run's index reads the pool in place, next to the annotated videos: whole shard files, counted
    # from their footers (2 + 1 videos), and they are what gets pseudo labels (no split video is unlabeled)
    index = build_index(DataConfig(root=str(out), labeled_ratio=1.0, val_ratio=0.0))
    assert index.parts["pool"] == [Source(str(shards[0]), None, 2), Source(str(shards[1]), None, 1)]
    assert index.pseudo_sources() == [("pool", s) for s in index.parts["pool"]]
    assert index.ids("labeled") == ["a1"] and [v.video_id for v in index.videos("test")] == ["a2"]
    pooled = list(index.videos("pool"))
    assert [v.video_id for v in pooled] == ["v_u1", "v_u2", "v_u3"] and not any(v.labeled for v in pooled)


def test_defaults_without_video_info_and_json_info(tmp_path):
    d = pool(tmp_path, {"u1": 10, "u2": 4})
    # 10 snippets of 16 frames every 16 frames cover (10 - 1) * 16 + 16 = 160 frames = 160 / 30 s
    vids = list(unlabeled_videos(d, feature_dim=D, feat_stride=STRIDE, num_frames=FRAMES, default_fps=FPS))
    assert [v.video_id for v in vids] == ["u1", "u2"]
    assert vids[0].duration == pytest.approx(160 / 30) and vids[0].fps == FPS
    assert vids[1].duration == pytest.approx((3 * 16 + 16) / 30)
    # JSON info, fps missing for u2 -> the default fps; u2's duration then from T at that fps
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"u1": {"duration": 6.0, "fps": 25.0}, "u2": {"duration": 2.5}}))
    vids = list(unlabeled_videos(d, feature_dim=D, feat_stride=STRIDE, num_frames=FRAMES, default_fps=FPS,
                                 info=read_video_info(info)))
    assert [(v.duration, v.fps) for v in vids] == [(6.0, 25.0), (2.5, FPS)]
    # ActionFormer's ActivityNet naming: v_<id>.npy is video <id>; force_fps ignores the info's fps
    (d / "u1.npy").rename(d / "v_u1.npy")
    vids = list(unlabeled_videos(d, feature_dim=D, feat_stride=STRIDE, num_frames=FRAMES, default_fps=15.0,
                                 info=read_video_info(info), feature_prefix="v_", force_fps=True))
    assert [(v.video_id, v.fps) for v in vids] == [("u2", 15.0), ("u1", 15.0)]


def test_pool_is_read_lazily(tmp_path):
    # The generator loads a file only when it is reached: the first video comes out although a later
    # file is broken, so a pool of any size never sits in memory at once.
    d = pool(tmp_path, {"u1": 5})
    np.save(d / "u2.npy", np.full((5, D), np.nan, np.float32))
    it = unlabeled_videos(d, feature_dim=D, feat_stride=STRIDE, num_frames=FRAMES, default_fps=FPS)
    assert next(it).video_id == "u1"
    with pytest.raises(DataError, match=r"u2\.npy: video 'u2': field 'features': 30 NaN/Inf values"):
        next(it)  # 5 snippets x D = 6 values, all NaN


BAD_FILES = [
    ("NaN", np.where(np.arange(8)[:, None] == 3, np.nan, np.ones((8, D))).astype(np.float32),
     ["bad.npy", "video 'bad'", "field 'features'", "NaN/Inf", "snippet 3"]),
    ("1-D", np.ones(8, np.float32), ["bad.npy", "video 'bad'", "expected a 2-D array"]),
    ("wrong D", np.ones((8, D + 1), np.float32), ["bad.npy", "video 'bad'", f"expected D = {D} columns"]),
]


@pytest.mark.parametrize("case, arr, expected", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_pool_file_is_named(tmp_path, capsys, case, arr, expected):
    ann, feats = annotated(tmp_path)
    d = pool(tmp_path, {"good": 9})
    np.save(d / "bad.npy", arr)
    assert convert(tmp_path, ann, feats, "--unlabeled-features", str(d)) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, f"{case}: {text!r} not in {err!r}"
    assert not (tmp_path / "out" / "dataset.yaml").exists()


def test_refuses_annotated_ids_and_missing_info_rows(tmp_path, capsys):
    ann, feats = annotated(tmp_path)
    d = pool(tmp_path, {"a2": 9, "u1": 9})
    assert convert(tmp_path, ann, feats, "--unlabeled-features", str(d)) == 2
    err = capsys.readouterr().err
    assert "a2.npy: video 'a2': field 'video_id': also an annotated video (subset 'test')" in err
    (d / "a2.npy").unlink()
    info = tmp_path / "info.csv"
    info.write_text("video_id,duration,fps\nu9,3.0,30\n")
    assert convert(tmp_path, ann, feats, "--unlabeled-features", str(d), "--video-info", str(info)) == 2
    assert "u1.npy: video 'u1': no row in the video-info file for 'u1'" in capsys.readouterr().err
    info.write_text("video_id,duration,fps\nu1,-3.0,30\n")
    assert convert(tmp_path, ann, feats, "--unlabeled-features", str(d), "--video-info", str(info)) == 2
    assert "info.csv: video 'u1': field 'line 2: duration': expected a positive number, got '-3.0'" in \
        capsys.readouterr().err
    info.write_text("name,length\nu1,3.0\n")
    assert convert(tmp_path, ann, feats, "--unlabeled-features", str(d), "--video-info", str(info)) == 2
    assert "field 'header': expected an id column" in capsys.readouterr().err


def test_pool_beside_a_synthetic_preset(tmp_path):
    # tiny's features are D = 32: a user's own files join the synthetic streamed pool
    d = pool(tmp_path, {"mine_1": 40, "mine_2": 50}, dim=32)
    out = tmp_path / "tiny"
    assert run_job(make_dataset.main, ["--preset", "tiny", "--out", str(out), "--num-unlabeled", "2",
                              "--unlabeled-features", str(d)]) == 0
    assert yaml.safe_load((out / "dataset.yaml").read_text())["unlabeled_shards"] == "shards/unlabeled"
    rows = list(read_shards(out / "shards" / "unlabeled"))
    assert [v.video_id for v in rows] == ["unl_0000000", "unl_0000001", "mine_1", "mine_2"]
    mine = rows[2]
    assert not mine.labeled and len(mine.segments) == 0 and mine.features.shape == (40, 32)
    # tiny: stride 16, 16 frames, default --fps 30: 39 * 16 + 16 = 640 frames
    assert mine.duration == pytest.approx(640 / 30) and mine.fps == 30.0


def test_feature_prefix_and_forced_fps_in_a_conversion(tmp_path):
    # ActionFormer's ActivityNet release: features v_<id>.npy, every video at its default_fps of 15
    ann, feats = annotated(tmp_path)
    for f in feats.glob("*.npy"):
        f.rename(feats / f"v_{f.name}")
    d = pool(tmp_path, {"v_u1": 9})
    assert convert(tmp_path, ann, feats, "--feature-prefix", "v_", "--force-fps", "--fps", "15",
                   "--unlabeled-features", str(d)) == 0
    rows = {v.video_id: v for v in read_shards(tmp_path / "out" / "shards")}
    assert sorted(rows) == ["a1", "a2", "u1"]  # ids without the file prefix, like the annotations'
    assert all(v.fps == 15.0 for v in rows.values())  # the file says 30 for a1 and a2
    assert rows["u1"].duration == pytest.approx((8 * 16 + 16) / 15)
