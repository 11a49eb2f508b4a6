"""A dataset directory and a run's split: an index over the shards, built from their small columns."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from raytal.cli import run_job
from raytal.config import DataConfig
from raytal.core.errors import DataError
from raytal.data import index as index_module
from raytal.data.dataset import load_dataset_info
from raytal.data.index import RunIndex, build_index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert run_job(make_dataset.main, ["--preset", "tiny", "--out", str(out), "--rows-per-shard", "8"]) == 0
    return out


def test_info(tiny):
    info = load_dataset_info(tiny)
    assert (info.feat_stride, info.num_frames, info.feature_dim) == (16, 16, 32)
    assert info.train_subset == "train" and info.test_subset == "test" and len(info.classes) == 5


def test_semi_split_is_an_index(tiny, tmp_path):
    index = build_index(DataConfig(root=str(tiny), labeled_ratio=0.25, val_ratio=0.25, split_seed=1))
    # 32 train videos: val round(0.25*32) = 8; labeled round(0.25*24) = 6; unlabeled 18; test 16; no pool
    assert [index.count(p) for p in ("val", "labeled", "unlabeled", "test", "pool")] == [8, 6, 18, 16, 0]
    ids = {p: index.ids(p) for p in ("labeled", "unlabeled", "val")}
    assert len(set().union(*ids.values())) == 32  # disjoint parts of the training subset
    # the training subset's shard files are shared by the parts: each source lists the ids it takes
    assert all(s.ids is not None for p in ("labeled", "unlabeled", "val") for s in index.parts[p])
    assert all(s.ids is None for s in index.parts["test"])  # whole files
    labeled = list(index.videos("labeled"))
    assert [v.video_id for v in labeled] == ids["labeled"]
    assert all(v.labeled and v.features.shape[1] == 32 for v in labeled)
    unlabeled = list(index.videos("unlabeled"))
    assert not any(v.labeled for v in unlabeled) and all(len(v.segments) for v in unlabeled)  # hidden GT kept
    assert set(np.concatenate([v.labels for v in labeled]).tolist()) == set(range(5))  # all classes labeled
    again = build_index(DataConfig(root=str(tiny), labeled_ratio=0.25, val_ratio=0.25, split_seed=1))
    assert again.to_json() == index.to_json()
    index.save(str(tmp_path / "index.json"))
    assert RunIndex.load(str(tmp_path / "index.json")).to_json() == index.to_json()


def test_index_reads_no_features(tiny, monkeypatch):
    """Building the index decodes no feature: it reads the ids, widths and annotations columns only."""
    read = index_module.read_shard_tables
    columns_read = []

    def small_columns_only(path, ids=None, columns=None, rows=None):
        columns_read.append(columns)
        assert columns is not None and "features" not in columns, columns
        return read(path, ids, columns, rows)

    monkeypatch.setattr(index_module, "read_shard_tables", small_columns_only)
    index = build_index(DataConfig(root=str(tiny), labeled_ratio=0.5, val_ratio=0.0))
    assert index.count("labeled") == 16 and columns_read  # the shards were read, their features were not


def test_weak_setting(tiny):
    index = build_index(DataConfig(root=str(tiny), setting="weak", val_ratio=0.0))
    assert index.count("labeled") == 0 and index.count("unlabeled") == 32
    for v in index.videos("unlabeled"):
        assert not v.labeled
        np.testing.assert_array_equal(v.video_labels, np.unique(v.labels))


def test_val_runs_never_list_the_test_subset(tiny):
    index = build_index(DataConfig(root=str(tiny), val_ratio=0.25), with_test=False)
    assert "test" not in index.to_json()["parts"] or not index.parts["test"]


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
        build_index(DataConfig(root=str(tmp_path)))
    with pytest.raises(DataError, match="dataset.yaml not found"):
        load_dataset_info(tmp_path / "nowhere")


def test_convert_real_features(tiny, tmp_path):
    # the converter path: annotations + .npy directory -> shards + dataset.yaml
    out = tmp_path / "real"
    rc = run_job(make_dataset.main, ["--annotations", str(tiny / "annotations.json"), "--features", str(tiny / "features"),
                            "--feat-stride", "16", "--num-frames", "16", "--out", str(out)])
    assert rc == 0
    index = build_index(DataConfig(root=str(out), labeled_ratio=1.0, val_ratio=0.0))
    assert index.count("labeled") == 32 and index.count("test") == 16
    # a missing feature file fails the conversion with the file named
    (tmp_path / "feats").mkdir()
    rc = run_job(make_dataset.main, ["--annotations", str(tiny / "annotations.json"), "--features", str(tmp_path / "feats"),
                            "--feat-stride", "16", "--num-frames", "16", "--feature-dim", "32", "--out", str(out)])
    assert rc == 2
