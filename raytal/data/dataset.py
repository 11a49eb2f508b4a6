"""A dataset directory and its train/val/test split.

Layout of a dataset directory ``DIR`` (written by ``jobs/make_dataset.py``)::

    DIR/dataset.yaml                 DatasetInfo (below)
    DIR/annotations.json             ActionFormer-dialect annotations (may be elsewhere: see ``annotations``)
    DIR/features/<video_id>.npy      float32 [T, D] (may be elsewhere: see ``features_dir``)
    DIR/shards/<subset>/part-*.parquet   every annotated video, ``labeled=True``
    DIR/shards/unlabeled/part-*.parquet  optional streamed unlabeled set (``unlabeled_shards``)

The split depends on the run's config (labeled_ratio, split_seed, val_ratio), so it is *not* baked into
``DIR/shards``: ``load_dataset`` reads the subsets' shards and splits them in memory, and
``write_split_shards`` writes the split of one run to ``<run>/data/{labeled,unlabeled,val,test}/`` for
the Ray pipeline (plus ``SplitDataset.extra_unlabeled_files``, which are read in place, never copied).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytal.config import DataConfig, read_yaml_mapping
from raytal.data.annotations import Annotations, load_annotations
from raytal.core.errors import DataError, where
from raytal.data.features import load_features
from raytal.data.shards import list_shards, read_shards, write_shards
from raytal.data.splits import TrainSplit, apply_split, split_train
from raytal.core.video import Video


@dataclass
class DatasetInfo:
    """Contents of ``dataset.yaml``. Paths are relative to the dataset directory unless absolute."""

    name: str
    feat_stride: int  # frames per snippet step
    num_frames: int  # frames per snippet clip
    feature_dim: int  # D
    classes: list[str]  # index = class id
    train_subset: str
    test_subset: str
    fps: float = 30.0  # default for videos whose annotation has no fps
    annotations: str = "annotations.json"
    features_dir: str = "features"
    shards_dir: str = "shards"
    unlabeled_shards: str = ""  # "" = no streamed unlabeled set
    generator: dict[str, Any] = field(default_factory=dict)  # how it was made (informational)


def load_dataset_info(root: str | Path) -> DatasetInfo:
    """Read ``root/dataset.yaml`` (yaml.safe_load); unknown or missing keys are errors naming the file."""
    path = Path(root) / "dataset.yaml"
    if not path.is_file():
        raise DataError(f"{path}: dataset.yaml not found (build the dataset with jobs/make_dataset.py)")
    data = read_yaml_mapping(path, DataError)
    fields = {f.name: f for f in dataclasses.fields(DatasetInfo)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise DataError(f"{where(path, None, str(key))}: unknown key{hint}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for key in required:
        if key not in data:
            raise DataError(f"{where(path, None, key)}: missing")
    for key in ("feat_stride", "num_frames", "feature_dim"):
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise DataError(f"{where(path, None, key)}: expected a positive integer, got {v!r}")
    if not isinstance(data["classes"], list) or not all(isinstance(c, str) for c in data["classes"]):
        raise DataError(f"{where(path, None, 'classes')}: expected a list of class names")
    if len(set(data["classes"])) != len(data["classes"]):
        raise DataError(f"{where(path, None, 'classes')}: duplicate class names")
    for key in ("name", "train_subset", "test_subset", "annotations", "features_dir", "shards_dir", "unlabeled_shards"):
        if key in data and not isinstance(data[key], str):
            raise DataError(f"{where(path, None, key)}: expected a string, got {data[key]!r}")
    if "fps" in data and (isinstance(data["fps"], bool) or not isinstance(data["fps"], (int, float)) or data["fps"] <= 0):
        raise DataError(f"{where(path, None, 'fps')}: expected a positive number, got {data['fps']!r}")
    return DatasetInfo(**data)


def save_dataset_info(root: str | Path, info: DatasetInfo) -> Path:
    path = Path(root) / "dataset.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(dataclasses.asdict(info), f, sort_keys=False)
    return path


def resolve(root: str | Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(root) / p


@dataclass
class SplitDataset:
    """One run's view of a dataset: the split lists (features loaded) and the dataset description.

    ``unlabeled`` videos have ``labeled=False`` but keep their ground truth (quality metrics only).
    ``extra_unlabeled_files`` are shards of a streamed unlabeled set, never loaded into memory here.
    """

    info: DatasetInfo
    root: Path
    labeled: list[Video]
    unlabeled: list[Video]
    val: list[Video]
    test: list[Video]
    split: TrainSplit
    extra_unlabeled_files: list[Path] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)


def _read_subset(root: Path, info: DatasetInfo, subset: str) -> list[Video]:
    shard_dir = resolve(root, info.shards_dir) / subset
    if not shard_dir.is_dir():
        raise DataError(
            f"{shard_dir}: no shards for subset '{subset}' (subsets are directories under "
            f"{resolve(root, info.shards_dir)}; write them with jobs/make_dataset.py)"
        )
    videos = list(read_shards(shard_dir, subset=subset, check_finite=True))
    seen: set[str] = set()
    for v in videos:
        if v.video_id in seen:
            raise DataError(f"{where(shard_dir, v.video_id, 'video_id')}: duplicate video id")
        seen.add(v.video_id)
        assert v.features is not None
        if v.features.shape[1] != info.feature_dim:
            raise DataError(
                f"{where(shard_dir, v.video_id, 'features')}: D = {v.features.shape[1]}, dataset.yaml "
                f"says feature_dim = {info.feature_dim}"
            )
        if len(v.labels) and (v.labels.min() < 0 or v.labels.max() >= len(info.classes)):
            raise DataError(f"{where(shard_dir, v.video_id, 'annotations.label_id')}: outside the class list")
    if not videos:
        raise DataError(f"{shard_dir}: subset '{subset}' has no videos")
    return videos


def load_dataset(data_cfg: DataConfig, load_test: bool = True) -> SplitDataset:
    """Read ``data_cfg.root`` and split its training subset by the config (see ``raytal.data.splits``).

    ``load_test=False`` leaves the test subset unread (``test`` is empty): model selection on the
    validation split (Tune) must not touch test data, not even to load it.
    """
    root = Path(data_cfg.root)
    info = load_dataset_info(root)
    train_subset = data_cfg.train_subset or info.train_subset
    test_subset = data_cfg.test_subset or info.test_subset
    train = _read_subset(root, info, train_subset)
    test = _read_subset(root, info, test_subset) if load_test else []
    split = split_train(train, data_cfg.labeled_ratio, data_cfg.val_ratio, data_cfg.split_seed)
    labeled, unlabeled, val = apply_split(train, split, data_cfg.setting)
    for v in test:
        v.labeled = True
    extra: list[Path] = []
    if info.unlabeled_shards:
        extra = list_shards(resolve(root, info.unlabeled_shards))
    return SplitDataset(info, root, labeled, unlabeled, val, test, split, extra)


def write_split_shards(ds: SplitDataset, out_dir: str | Path, rows_per_shard: int = 256) -> dict[str, list[Path]]:
    """Write ``out_dir/{labeled,unlabeled,val,test}/part-*.parquet`` for this split (idempotent).

    The ``labeled`` column carries the split (False for the unlabeled part). Returns the paths per part;
    the Ray pipeline reads ``unlabeled`` plus ``ds.extra_unlabeled_files``.
    """
    out = Path(out_dir)
    parts = {"labeled": ds.labeled, "unlabeled": ds.unlabeled, "val": ds.val, "test": ds.test}
    return {name: write_shards(vids, out / name, rows_per_shard, ds.info.feature_dim) for name, vids in parts.items()}


def convert_to_shards(
    annotations: Annotations,
    features_dir: str | Path,
    shards_dir: str | Path,
    feature_dim: int | None,
    rows_per_shard: int = 256,
    feature_prefix: str = "",
) -> dict[str, list[Path]]:
    """JSON + npy -> ``shards_dir/<subset>/part-*.parquet`` (every video checked; streaming per subset).

    ``annotations`` must carry feat_stride/num_frames in its videos (load them with those arguments).
    Video v's features are ``features_dir/<feature_prefix><v>.npy``.
    """
    out: dict[str, list[Path]] = {}
    for subset in annotations.subsets():
        vids = annotations.subset(subset)

        def loaded(vids: list[Video] = vids) -> Any:
            for v in vids:
                yield dataclasses.replace(v, features=load_features(features_dir, v, feature_dim, prefix=feature_prefix))

        out[subset] = write_shards(loaded(), Path(shards_dir) / subset, rows_per_shard, feature_dim)
    return out


def load_dataset_annotations(root: str | Path) -> Annotations:
    """The dataset's annotation file with its grid parameters, loaded non-strictly (warnings kept)."""
    info = load_dataset_info(root)
    return load_annotations(
        resolve(root, info.annotations),
        classes=info.classes,
        strict=False,
        default_fps=info.fps,
        feat_stride=info.feat_stride,
        num_frames=info.num_frames,
    )
