import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from raytal.config import DataConfig
from raytal.data.dataset import load_dataset, load_dataset_info, write_split_shards
from raytal.core.errors import DataError
from raytal.data.shards import read_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert make_dataset.main(["--preset", "tiny", "--out", str(out), "--rows-per-shard", "8"]) == 0
    return out


def test_info(tiny):
    info = load_dataset_info(tiny)
    assert (info.feat_stride, info.num_frames, info.feature_dim) == (16, 16, 32)
    assert info.train_subset == "train" and info.test_subset == "test" and len(info.classes) == 5


def test_load_semi_split(tiny):
    ds = load_dataset(DataConfig(root=str(tiny), labeled_ratio=0.25, val_ratio=0.25, split_seed=1))
    # 32 train videos: val round(0.25*32) = 8; labeled round(0.25*24) = 6; unlabeled 18; test 16
    assert (len(ds.val), len(ds.labeled), len(ds.unlabeled), len(ds.test)) == (8, 6, 18, 16)
    assert all(v.features.shape[1] == 32 for v in ds.labeled + ds.unlabeled + ds.val + ds.test)
    assert all(v.labeled for v in ds.labeled + ds.val + ds.test)
    assert not any(v.labeled for v in ds.unlabeled)
    assert all(len(v.segments) for v in ds.unlabeled)  # GT kept for quality metrics
    labeled_classes = set(np.concatenate([v.labels for v in ds.labeled]).tolist())
    assert labeled_classes == set(range(5))  # 6 labeled videos cover all 5 classes
    again = load_dataset(DataConfig(root=str(tiny), labeled_ratio=0.25, val_ratio=0.25, split_seed=1))
    assert again.split == ds.split


def test_weak_setting(tiny):
    ds = load_dataset(DataConfig(root=str(tiny), setting="weak"))
    assert ds.labeled == [] and len(ds.unlabeled) == 32
    for v in ds.unlabeled:
        np.testing.assert_array_equal(v.video_labels, np.unique(v.labels))


def test_write_split_shards(tiny, tmp_path):
    ds = load_dataset(DataConfig(root=str(tiny), labeled_ratio=0.5))
    paths = write_split_shards(ds, tmp_path / "run" / "data", rows_per_shard=10)
    assert set(paths) == {"labeled", "unlabeled", "val", "test"}
    unl = list(read_shards(tmp_path / "run" / "data" / "unlabeled"))
    assert [v.video_id for v in unl] == [v.video_id for v in ds.unlabeled]
    assert not any(v.labeled for v in unl)
    np.testing.assert_array_equal(unl[0].features, ds.unlabeled[0].features)


def test_bad_dataset_yaml(tiny, tmp_path):
    data = yaml.safe_load((tiny / "dataset.yaml").read_text())
    data["feat_strid"] = 4
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match=r"dataset.yaml: field 'feat_strid': unknown key; did you mean 'feat_stride'"):
        load_dataset_info(tmp_path)
    del data["feat_strid"]
    data["feature_dim"] = 16
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "shards").symlink_to(tiny / "shards")
    with pytest.raises(DataError, match=r"field 'features': D = 32, dataset.yaml says feature_dim = 16"):
        load_dataset(DataConfig(root=str(tmp_path)))
    with pytest.raises(DataError, match="dataset.yaml not found"):
        load_dataset_info(tmp_path / "nowhere")


def test_convert_real_features(tiny, tmp_path):
    # the converter path: annotations + .npy directory -> shards + dataset.yaml
    out = tmp_path / "real"
    rc = make_dataset.main(["--annotations", str(tiny / "annotations.json"), "--features", str(tiny / "features"),
                            "--feat-stride", "16", "--num-frames", "16", "--out", str(out)])
    assert rc == 0
    ds = load_dataset(DataConfig(root=str(out), labeled_ratio=1.0))
    assert len(ds.labeled) == 32 and len(ds.test) == 16
    # a missing feature file fails the conversion with the file named
    (tmp_path / "feats").mkdir()
    rc = make_dataset.main(["--annotations", str(tiny / "annotations.json"), "--features", str(tmp_path / "feats"),
                            "--feat-stride", "16", "--num-frames", "16", "--feature-dim", "32", "--out", str(out)])
    assert rc == 2
