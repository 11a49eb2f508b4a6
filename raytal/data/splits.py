"""Seeded, class-stratified splits of the training videos, and video-level labels (weak setting).

Algorithm (``stratified_split``; iterative stratification after Sechidis et al., 2011, for two parts
with exact sizes). Videos are multi-label: a video's classes are the distinct labels of its segments.

1. k = round(ratio * n) videos go to the selected part (at least 1 when ratio > 0; all when ratio = 1);
   the other n - k to the rest. Each class c with n_c videos wants ratio * n_c of them selected.
2. Videos are visited in a seeded random order. Repeatedly take the class with the fewest
   still-unassigned videos (rarest first, so rare classes are placed while there is room; ties: lower
   class id) and assign each of its unassigned videos, in the random order:
   - to whichever part still has room if the other is full (keeps the sizes exact);
   - else to the selected part if it does not contain class c yet (every class present in the labeled
     part when k allows it);
   - else to the part whose remaining demand for class c is larger (ties: the part with more room left).
   Each assignment lowers the demand of every class of that video in that part.
3. Videos without segments fill the remaining room, in the random order.

Same (videos, ratio, seed) -> same split; the seed feeds ``numpy.random.default_rng``.
Held-out validation (``val_ratio``) is taken first with the same algorithm and a different stream of
the seed, then the labeled/unlabeled split is made on the remaining training videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raytal.core.seeds import SeedStream
from raytal.core.video import Video



def video_level_labels(video: Video) -> np.ndarray:
    """Sorted distinct class ids of the video's segments, int64 [K] (the weak-setting label set)."""
    return np.unique(np.asarray(video.labels, dtype=np.int64))


def stratified_split(
    class_sets: Sequence[Sequence[int] | np.ndarray], ratio: float, seed: int | Sequence[int]
) -> np.ndarray:
    """Boolean mask [n]: True = in the selected part (exactly round(ratio * n) videos, >= 1 if ratio > 0).

    ``class_sets[i]`` are the class ids present in video i. See the module docstring for the algorithm.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"split ratio must be in [0, 1], got {ratio}")
    n = len(class_sets)
    if n == 0:
        return np.zeros(0, dtype=bool)
    k = int(round(ratio * n))
    if ratio > 0:
        k = max(k, 1)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in class_sets]
    num_classes = int(max((s.max() + 1 for s in sets if len(s)), default=0))
    if any(len(s) and s.min() < 0 for s in sets):
        raise ValueError("class ids must be >= 0")
    # Videos of each class, in the random order.
    members: list[list[int]] = [[] for _ in range(num_classes)]
    for i in order:
        for c in sets[i]:
            members[c].append(int(i))
    counts = np.array([len(m) for m in members], dtype=np.int64)
    want = np.stack([ratio * counts, (1.0 - ratio) * counts]).astype(np.float64)  # [2, C] demand
    room = np.array([k, n - k], dtype=np.int64)
    covered = np.zeros(num_classes, dtype=bool)  # class already in the selected part
    part = np.full(n, -1, dtype=np.int64)  # 0 = selected, 1 = rest
    remaining = counts.copy()  # unassigned videos per class
    while True:
        live = np.flatnonzero(remaining > 0)
        if len(live) == 0:
            break
        c = int(live[np.argmin(remaining[live])])
        for i in members[c]:
            if part[i] >= 0:
                continue
            if room[0] == 0 or room[1] == 0:
                p = 0 if room[0] > 0 else 1
            elif not covered[c]:
                p = 0
            elif want[0, c] != want[1, c]:
                p = 0 if want[0, c] > want[1, c] else 1
            else:
                p = 0 if room[0] >= room[1] else 1
            part[i] = p
            room[p] -= 1
            want[p, sets[i]] -= 1.0
            remaining[sets[i]] -= 1
            if p == 0:
                covered[sets[i]] = True
    for i in order:  # videos without segments
        if part[i] < 0:
            p = 0 if room[0] > 0 else 1
            part[i] = p
            room[p] -= 1
    return part == 0


@dataclass
class TrainSplit:
    """Video ids of the three parts of the training subset (each in the input order)."""

    labeled: list[str]
    unlabeled: list[str]
    val: list[str]


def split_train(
    ids: Sequence[str], class_sets: Sequence[Sequence[int] | np.ndarray], labeled_ratio: float, val_ratio: float,
    seed: int,
) -> TrainSplit:
    """Held-out validation part (``val_ratio``) then labeled/unlabeled (``labeled_ratio`` of the rest).

    ``class_sets[i]`` are the classes of video ``ids[i]``'s segments (empty for a video without any).
    """
    if not 0.0 < labeled_ratio <= 1.0:
        raise ValueError(f"labeled_ratio must be in (0, 1], got {labeled_ratio}")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if len(ids) != len(class_sets):
        raise ValueError(f"split_train: {len(ids)} ids but {len(class_sets)} class sets")
    sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in class_sets]
    in_val = stratified_split(sets, val_ratio, [seed, SeedStream.VAL_SPLIT])
    rest = np.flatnonzero(~in_val)
    in_lab = stratified_split([sets[i] for i in rest], labeled_ratio, [seed, SeedStream.LABELED_SPLIT])
    return TrainSplit(
        labeled=[ids[i] for i in rest[in_lab]],
        unlabeled=[ids[i] for i in rest[~in_lab]],
        val=[ids[i] for i in np.flatnonzero(in_val)],
    )


PARTS = ("labeled", "unlabeled", "val", "test", "pool")
SETTINGS = ("semi", "weak")


def view_rows(rows: pa.Table, part: str, setting: str = "semi") -> pa.Table:
    """Shard rows as members of one part of a run: their ``labeled`` and ``video_labels`` columns as that part
    reads them (features and annotations untouched, not copied).

    labeled: ``labeled`` true, the video-level labels of its annotations. unlabeled: ``labeled`` false; its
    annotations stay in the row as hidden ground truth for pseudo-label quality only; video-level labels only
    in the weak setting (there they are the supervision). val / test: ``labeled`` true (their ground truth is
    for evaluation), no video-level labels. pool: extra unlabeled videos, ``labeled`` false, with the
    video-level labels their shard carries (none for a plain unannotated pool).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    n = rows.num_rows
    rows = rows.set_column(rows.schema.get_field_index("labeled"), "labeled",
                           pa.array([part not in ("unlabeled", "pool")] * n, pa.bool_()))
    if part == "pool":
        return rows
    lists: list[list[int]] = [[] for _ in range(n)]
    if part == "labeled" or (part == "unlabeled" and setting == "weak"):
        ann = rows.column("annotations").combine_chunks()
        offsets = ann.offsets.to_numpy() - ann.offsets.to_numpy()[0]
        labels = ann.flatten().field("label_id").to_numpy(zero_copy_only=False).astype(np.int64)
        lists = [np.unique(labels[offsets[i]:offsets[i + 1]]).tolist() for i in range(n)]
    field = rows.schema.field("video_labels")
    return rows.set_column(rows.schema.get_field_index("video_labels"), field, pa.array(lists, field.type))
