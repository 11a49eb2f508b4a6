"""A dataset directory: its description (``dataset.yaml``) and the converter that writes its shards.

Layout of a dataset directory ``DIR`` (written by ``jobs/make_dataset.py``; local or a storage URI)::

    DIR/dataset.yaml                     DatasetInfo (below)
    DIR/annotations.json                 ActionFormer-dialect annotations (may be elsewhere: ``annotations``)
    DIR/features/<video_id>.npy          float32 [T, D] (may be elsewhere: ``features_dir``)
    DIR/shards/<subset>/part-*.parquet   every annotated video of a subset
    DIR/shards/unlabeled/part-*.parquet  the unlabeled pool (``unlabeled_shards``), any size

A run never copies these shards: its split is an index over them (``raytal.data.index``).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytal.config import read_yaml_mapping
from raytal.core import storage
from raytal.core.errors import DataError, where
from raytal.data.annotations import Annotations
from raytal.data.features import load_features
from raytal.data.shards import write_shards
from raytal.core.protocols import THUMOS14


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
    unlabeled_shards: str = ""  # "" = no unlabeled pool
    tious: list[float] = field(default_factory=lambda: list(THUMOS14))  # the evaluation protocol's thresholds
    generator: dict[str, Any] = field(default_factory=dict)  # how it was made (informational)


def load_dataset_info(root: str | Path) -> DatasetInfo:
    """Read ``root/dataset.yaml``; unknown or missing keys are errors naming the file."""
    path = storage.join(root, "dataset.yaml")
    if not storage.is_file(path):
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
    tious = data.get("tious", list(THUMOS14))  # datasets converted before protocols were recorded
    if (not isinstance(tious, list) or not tious or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                            and 0 < t <= 1 for t in tious)):
        raise DataError(f"{where(path, None, 'tious')}: expected a list of tIoU thresholds in (0, 1], got {tious!r}")
    if "fps" in data and (isinstance(data["fps"], bool) or not isinstance(data["fps"], (int, float)) or data["fps"] <= 0):
        raise DataError(f"{where(path, None, 'fps')}: expected a positive number, got {data['fps']!r}")
    return DatasetInfo(**data)


def save_dataset_info(root: str | Path, info: DatasetInfo) -> str:
    path = storage.join(root, "dataset.yaml")
    storage.write_text(path, yaml.safe_dump(dataclasses.asdict(info), sort_keys=False))
    return path


def resolve(root: str | Path, rel: str) -> str:
    """``rel`` inside the dataset directory ``root`` unless it is absolute (or a URI)."""
    if storage.is_uri(rel) or Path(rel).is_absolute():
        return rel
    return storage.join(root, rel)


def convert_to_shards(
    annotations: Annotations,
    features_dir: str | Path,
    shards_dir: str | Path,
    feature_dim: int | None,
    rows_per_shard: int = 256,
    feature_prefix: str = "",
    hashes: dict[str, str] | None = None,
) -> dict[str, list[Path]]:
    """JSON + npy -> ``shards_dir/<subset>/part-*.parquet`` (every video checked; streaming per subset).

    ``annotations`` must carry feat_stride/num_frames in its videos (load them with those arguments).
    Video v's features are ``features_dir/<feature_prefix><v>.npy``. ``hashes`` receives each shard's sha256
    (``write_shards``).
    """
    out: dict[str, list[Path]] = {}
    for subset in annotations.subsets():
        vids = annotations.subset(subset)

        def loaded(vids: list = vids) -> Any:
            for v in vids:
                yield dataclasses.replace(v, features=load_features(features_dir, v, feature_dim, prefix=feature_prefix))

        out[subset] = write_shards(loaded(), Path(shards_dir) / subset, rows_per_shard, feature_dim, hashes=hashes)
    return out
