"""A run's split as an index over the dataset's shards: which shard files, and which video ids in them,
make up each part of the run. No feature is read to build it and none is copied.

Parts (``raytal.data.splits.PARTS``): ``labeled``, ``unlabeled`` and ``val`` come from the training subset
(the seeded, class-stratified split of ``raytal.data.splits``), ``test`` is the test subset, ``pool`` is the
dataset's unlabeled pool (``unlabeled_shards``, any size). A part is a list of ``Source``s: one shard file
each, with the ids it takes from that file when parts share files (the training subset), or all its rows
(test, pool). The index of a run is stored as JSON in the run directory (``index.json``): ids lists for
the training subset, file names for the rest, so its size does not grow with the pool's videos.

Building it reads only the small columns of the shards (``video_id``, ``D``, ``annotations``): class sets
for the stratified split, the feature width, and row counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from raytal.config import DataConfig
from raytal.core import storage
from raytal.core.errors import DataError, clip, where
from raytal.core.jsonfile import read_json
from raytal.core.video import Video
from raytal.data.dataset import DatasetInfo, load_dataset_info, resolve
from raytal.data.shards import list_shards, open_shard, read_shard_tables, rows_to_videos
from raytal.data.splits import PARTS, split_train, view_rows

_META_COLUMNS = ["video_id", "D", "annotations"]
MAX_INDEX_BYTES = 1 << 30  # ids of the training subset: ~20 bytes per video


@dataclass(frozen=True)
class Source:
    """One shard file's share of a part: every row (``ids`` None) or only the listed video ids."""

    file: str
    ids: tuple[str, ...] | None = None
    count: int = 0  # videos this source contributes

    def to_json(self) -> dict:
        return {"file": self.file, "ids": None if self.ids is None else list(self.ids), "count": self.count}

    @staticmethod
    def from_json(d: dict) -> "Source":
        file, ids, count = d["file"], d["ids"], d["count"]
        ids_ok = ids is None or (isinstance(ids, list) and all(isinstance(i, str) for i in ids) and len(ids) == count)
        if not isinstance(file, str) or type(count) is not int or count < 0 or not ids_ok:
            raise ValueError(f"expected a source {{file: str, ids: null | [str], count: int >= 0}}, got {clip(repr(d))}")
        return Source(file, None if ids is None else tuple(ids), count)


def source_ids(src: Source) -> list[str]:
    """The video ids of a source: its listed ids, or the ``video_id`` column of its whole file."""
    if src.ids is not None:
        return list(src.ids)
    return [v for table in read_shard_tables(src.file, columns=["video_id"]) for v in table.column("video_id").to_pylist()]


def source_videos(src: Source, part: str, setting: str, check_finite: bool = False) -> Iterator[Video]:
    """The videos of one source as members of ``part`` (``raytal.data.splits.view_rows``), streamed one
    row group at a time."""
    for table in read_shard_tables(src.file, src.ids):
        yield from rows_to_videos(view_rows(table, part, setting), src.file, check_finite=check_finite)


@dataclass
class RunIndex:
    """The parts of one run (see the module docstring), plus what they were built from."""

    root: str
    setting: str
    num_classes: int
    feature_dim: int
    parts: dict[str, list[Source]] = field(default_factory=dict)

    def count(self, part: str) -> int:
        return sum(s.count for s in self.parts.get(part, []))

    def ids(self, part: str) -> list[str]:
        """The listed ids of a part whose sources list them (the training subset's parts)."""
        out: list[str] = []
        for s in self.parts.get(part, []):
            if s.ids is None:
                raise ValueError(f"part {part!r} takes whole shard files; its ids are not listed in the index")
            out += s.ids
        return out

    def videos(self, part: str, check_finite: bool = False) -> Iterator[Video]:
        """Every video of ``part``, streamed (features loaded one row group at a time)."""
        for src in self.parts.get(part, []):
            yield from source_videos(src, part, self.setting, check_finite)

    def pseudo_sources(self) -> list[tuple[str, Source]]:
        """(part, source) of every video that gets pseudo labels: the split's unlabeled videos, then the pool.
        Their position in this list names their pseudo-label directory (``shard=<k>``)."""
        return [(p, s) for p in ("unlabeled", "pool") for s in self.parts.get(p, [])]

    def to_json(self) -> dict:
        return {"root": self.root, "setting": self.setting, "num_classes": self.num_classes,
                "feature_dim": self.feature_dim,
                "parts": {k: [s.to_json() for s in v] for k, v in self.parts.items()}}

    @staticmethod
    def from_json(d: dict) -> "RunIndex":
        return RunIndex(d["root"], d["setting"], int(d["num_classes"]), int(d["feature_dim"]),
                        {k: [Source.from_json(s) for s in v] for k, v in d["parts"].items()})

    def save(self, path: str) -> None:
        storage.write_text(path, json.dumps(self.to_json()))

    @staticmethod
    def load(path: str) -> "RunIndex":
        """The index saved at ``path``; ``DataError`` naming the file when it is missing or not an index."""
        data = read_json(path, DataError, max_bytes=MAX_INDEX_BYTES)
        try:
            return RunIndex.from_json(data)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a run index ({type(e).__name__}: {clip(str(e))})") from e


def _subset_files(root: str, info: DatasetInfo, subset: str) -> list[str]:
    shard_dir = storage.join(resolve(root, info.shards_dir), subset)
    if not storage.is_dir(shard_dir):
        raise DataError(
            f"{shard_dir}: no shards for subset '{subset}' (subsets are directories under "
            f"{resolve(root, info.shards_dir)}; write them with jobs/make_dataset.py)"
        )
    files = list_shards(shard_dir)
    if not files:
        raise DataError(f"{shard_dir}: subset '{subset}' has no shard files")
    return files


def _metadata(files: list[str], info: DatasetInfo, seen: set[str]) -> list[tuple[str, list[str], list[np.ndarray]]]:
    """Per file (file, ids, class sets), read from the small columns only; checks ids, D and labels."""
    out = []
    num_classes = len(info.classes)
    for f in files:
        ids: list[str] = []
        sets: list[np.ndarray] = []
        for table in read_shard_tables(f, columns=_META_COLUMNS):
            ann = table.column("annotations").combine_chunks()
            offsets = ann.offsets.to_numpy() - ann.offsets.to_numpy()[0]
            labels = ann.flatten().field("label_id").to_numpy(zero_copy_only=False).astype(np.int64)
            for i, (vid, d) in enumerate(zip(table.column("video_id").to_pylist(), table.column("D").to_pylist())):
                if vid in seen:
                    raise DataError(f"{where(f, vid, 'video_id')}: duplicate video id")
                seen.add(vid)
                if d != info.feature_dim:
                    raise DataError(f"{where(f, vid, 'features')}: D = {d}, dataset.yaml says feature_dim = "
                                    f"{info.feature_dim}")
                lab = labels[offsets[i]:offsets[i + 1]]
                if len(lab) and (lab.min() < 0 or lab.max() >= num_classes):
                    raise DataError(f"{where(f, vid, 'annotations.label_id')}: outside the class list "
                                    f"(0..{num_classes - 1})")
                ids.append(vid)
                sets.append(np.unique(lab))
        out.append((f, ids, sets))
    return out


def _whole_files(files: list[str]) -> list[Source]:
    """Sources taking every row of each file; counts from the Parquet footers (no column is read)."""
    out = []
    for f in files:
        n = open_shard(f).metadata.num_rows
        if n:
            out.append(Source(f, None, n))
    return out


def build_index(data: DataConfig, with_test: bool = True) -> RunIndex:
    """The run's parts for ``data`` (root, subsets, setting, labeled/val ratios, split seed).

    ``with_test=False`` leaves the test subset out entirely: model selection on the validation part
    (Tune) must not touch test data, not even its file names.
    """
    root = storage.resolve(data.root)
    info = load_dataset_info(root)
    train_subset = data.train_subset or info.train_subset
    test_subset = data.test_subset or info.test_subset
    seen: set[str] = set()
    meta = _metadata(_subset_files(root, info, train_subset), info, seen)
    ids = [v for _, file_ids, _ in meta for v in file_ids]
    if not ids:
        raise DataError(f"{root}: training subset '{train_subset}' has no videos")
    sets = [s for _, _, file_sets in meta for s in file_sets]
    split = split_train(ids, sets, data.labeled_ratio, data.val_ratio, data.split_seed)
    members = {"labeled": set(split.labeled), "unlabeled": set(split.unlabeled), "val": set(split.val)}
    if data.setting == "weak":  # video-level labels only: every training video is pseudo-labeled
        members = {"labeled": set(), "unlabeled": members["labeled"] | members["unlabeled"], "val": members["val"]}
    parts: dict[str, list[Source]] = {p: [] for p in PARTS}
    for f, file_ids, _ in meta:
        for part, keep in members.items():
            taken = tuple(v for v in file_ids if v in keep)
            if taken:
                parts[part].append(Source(f, taken, len(taken)))
    if data.setting == "semi" and not any(len(s) for s, v in zip(sets, ids) if v in members["labeled"]):
        raise DataError(f"{root}: no labeled video of the training subset '{train_subset}' has an annotated segment "
                        "(data.labeled_ratio too small, or a subset without annotations): the teacher would learn "
                        "nothing")
    if with_test:
        test_meta = _metadata(_subset_files(root, info, test_subset), info, set())
        parts["test"] = [Source(f, None, len(file_ids)) for f, file_ids, _ in test_meta if file_ids]
        if not parts["test"]:
            raise DataError(f"{root}: test subset '{test_subset}' has no videos")
        if not any(len(s) for _, _, file_sets in test_meta for s in file_sets):
            raise DataError(f"{root}: test subset '{test_subset}' has no annotated segment to evaluate against (an "
                            "official test subset such as ActivityNet's 'testing' has its labels withheld): set "
                            "data.test_subset to a subset with annotations")
    if info.unlabeled_shards:
        pool_dir = resolve(root, info.unlabeled_shards)
        parts["pool"] = _whole_files(list_shards(pool_dir))
    return RunIndex(root, data.setting, len(info.classes), info.feature_dim, parts)
