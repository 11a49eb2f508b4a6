"""Detection mAP under two protocols, vectorized (docs/design.md §7 "Detection mAP", issues 3 and 13).

``protocol="activitynet"`` (default; the protocol of the papers' code, ActivityNet ``eval_detection.py``):
classes = labels present in the ground truth; per class, predictions in descending score, **equal
scores: the later-listed prediction first** (a stable ascending sort reversed, as ``argsort()[::-1]``);
each prediction in turn takes the unmatched ground truth of the same video with the highest tIoU
>= threshold (equal tIoU: the later-listed ground truth); all-point interpolated AP (precision envelope).

``protocol="thumos14"`` (the official THUMOS14 kit, ``TH14evalDet.m``): per class and video, **each
ground truth in turn** (listed order) takes the free detection of highest overlap if that overlap is
strictly above the threshold (equal overlap: the detection ranked first within the video); detections
that are not matched and overlap (intersection > 0) an ``ambiguous`` interval of their video, of any
class, are ignored rather than counted as false positives; AP is not interpolated (sum of the precision
at each true positive / #ground truths). Ranking, **equal scores: by video id (sorted), then by the
detection's listed order within its video** (the kit's stable sort over videos in ``unique`` order).
Overlap is the kit's ``intersection / (max end - min start)``, which equals the IoU when they overlap.

Common rules:

* Row order of the tables is the "listed" order above.
* **Zero-length ground truth** (end == start) overlaps nothing (tIoU 0, never NaN), so it could only
  ever be a miss: it is removed from the ground truth (not counted in the number of positives, like
  the annotation loader's lenient mode) and reported in ``warnings``.
* **Predictions**, one policy for every reader (``jobs/evaluate.py``'s JSON and THUMOS14 txt loaders,
  this function): a prediction that cannot be scored, a segment that is not two finite numbers or ends
  before it starts, or a score that is not finite, is an error naming it (``prediction_problem``): no
  number computed from such a file would mean anything. Degenerate but well-formed predictions are
  **scored as they are and counted in ``warnings``** (``prediction_warnings``), as the official kits
  score them: a zero-length segment has tIoU 0 with everything, so it is a false positive (dropping it
  would report a higher mAP than the kits do, and refusing it would refuse raytal's own detections, which
  are clipped to the video and may collapse at its end); a segment starting before 0 s is matched by
  its tIoU as given; a negative score is ranked as given (AP depends only on the order; the weak base
  model's outer-inner contrast scores are negative for its weakest proposals).
* A class present in the ground truth with no predictions has AP 0; predictions of classes absent
  from the ground truth are not evaluated (reported in ``warnings``). Predictions in videos without
  ground truth of their class are false positives.

Vectorization: the sequential greedy matching only interacts inside one (class, video) group, and
in each group the next decision always goes to the first still-undecided owner (prediction for
activitynet, ground truth for thumos14) that has a free, above-threshold partner; owners before it
can never match again (the set of free partners only shrinks). So each round takes, for every
(threshold, group) at once, the first active (owner, partner) pair in a pre-sorted pair list. The number
of rounds is at most the largest number of ground truths in one (class, video) group. Only pairs above
the lowest threshold are materialized, and the rankings are stable 16-bit radix passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from raytal.core.errors import DataError, where
from raytal.core.iou import interval_iou
from raytal.core.segments import SegmentTable

PROTOCOLS = ("activitynet", "thumos14")

# Candidate (prediction, ground truth) pairs are built in blocks of this size: small enough to stay in
# cache and to reuse freed memory (fresh large arrays cost page faults), large enough to vectorize.
_PAIR_BLOCK = 1 << 15
# A dense per-group lookup table is used up to this many (class, video) groups.
_DENSE_GROUPS = 1 << 24
# Upper bound on padded elements per chunk in the AP envelope computation.
_AP_CHUNK = 1 << 22


@dataclass
class DetectionResult:
    """mAP per tIoU threshold (fractions), their mean, and AP per evaluated class id."""

    tious: np.ndarray
    mAP: np.ndarray
    average_mAP: float
    per_class_AP: dict[int, np.ndarray]
    warnings: list[str] = field(default_factory=list)

    def to_json(self, class_names: list[str] | None = None) -> dict:
        """``{"mAP": {"0.3": ...}, "average_mAP": ..., "per_class_AP": {name: {"0.3": ...}}}``, fractions."""
        keys = [_tiou_key(t) for t in self.tious]

        def name(c: int) -> str:
            return class_names[c] if class_names is not None else str(c)

        return {
            "mAP": {k: float(v) for k, v in zip(keys, self.mAP)},
            "average_mAP": float(self.average_mAP),
            "per_class_AP": {
                name(c): {k: float(v) for k, v in zip(keys, ap)} for c, ap in sorted(self.per_class_AP.items())
            },
        }


def _tiou_key(t: float) -> str:
    return f"{float(t):.10g}"


def _check_tious(tious: Iterable[float]) -> np.ndarray:
    arr = np.asarray(list(tious), dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"tious: expected one or more thresholds in [0, 1], got {arr.tolist()}")
    return arr


def prediction_problem(pred: SegmentTable) -> tuple[int, str, str] | None:
    """The first prediction that cannot be scored (module docstring): (row, "segment" | "score", what is
    wrong), or None. Readers name the file, video and field of that row."""
    seg = pred.segments
    scores = pred.scores if pred.scores is not None else np.zeros(len(pred))
    bad = ~np.isfinite(seg).all(axis=1) | (seg[:, 1] < seg[:, 0]) | ~np.isfinite(scores)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    start, end, score = float(seg[i, 0]), float(seg[i, 1]), float(scores[i])
    if not (math.isfinite(start) and math.isfinite(end)):
        return i, "segment", f"expected finite [start, end] seconds, got [{start}, {end}]"
    if end < start:
        return i, "segment", f"end {end} < start {start}"
    return i, "score", f"expected a finite number, got {score}"


def check_predictions(pred: SegmentTable, path: str | Path, field_of: Callable[[int, str], str]) -> None:
    """``DataError`` naming the file, the video and the field (``field_of(row, "segment" | "score")``) of the
    first prediction a reader got from ``path`` that cannot be scored (``prediction_problem``)."""
    problem = prediction_problem(pred)
    if problem is not None:
        i, kind, text = problem
        raise DataError(f"{where(path, pred.video[i], field_of(i, kind))}: {text}")


def prediction_warnings(pred: SegmentTable) -> list[str]:
    """What the policy scores as it is but reports (module docstring): zero-length segments, negative scores."""
    out = []
    zero = pred.segments[:, 1] == pred.segments[:, 0]
    if zero.any():
        vids = sorted(set(pred.video[zero].tolist()))
        out.append(f"predictions with a zero-length segment: {int(zero.sum())} in {len(vids)} video(s) (e.g. "
                   f"{', '.join(map(repr, vids[:3]))}), scored as false positives (tIoU 0 with every segment)")
    before = pred.segments[:, 0] < 0
    if before.any():
        out.append(f"predictions starting before 0 s: {int(before.sum())} (min start "
                   f"{float(pred.segments[:, 0].min()):g} s), scored as given")
    if pred.scores is not None and (pred.scores < 0).any():
        out.append(f"predictions with a negative score: {int((pred.scores < 0).sum())} (min "
                   f"{float(pred.scores.min()):g}), ranked as given")
    return out


def _check_table(table: SegmentTable, what: str, need_scores: bool) -> None:
    seg = table.segments
    if not np.all(np.isfinite(seg)):
        raise ValueError(f"{what}: segments must be finite seconds")
    bad = np.flatnonzero(seg[:, 1] < seg[:, 0])
    if bad.size:
        i = bad[0]
        raise ValueError(f"{what}: video '{table.video[i]}': segment {seg[i].tolist()} has end < start")
    if need_scores:
        if table.scores is None:
            raise ValueError(f"{what}: predictions need scores")
        problem = prediction_problem(table)
        if problem is not None:
            i, kind, text = problem
            raise ValueError(f"{what}: video '{table.video[i]}': {kind}: {text}")


def _pair_overlap(
    a_start: np.ndarray, a_end: np.ndarray, b_start: np.ndarray, b_end: np.ndarray, protocol: str
) -> np.ndarray:
    """Elementwise overlap of segments a[i] and b[i] under the protocol's formula (0 when disjoint)."""
    inter = np.minimum(a_end, b_end) - np.maximum(a_start, b_start)
    if protocol == "thumos14":
        hull = np.maximum(a_end, b_end) - np.minimum(a_start, b_start)
        return np.divide(inter, hull, out=np.zeros_like(inter), where=inter > 0)
    return interval_iou(a_start, a_end, b_start, b_end)


def group_pairs(
    q_group: np.ndarray,
    r_group_sorted: np.ndarray,
    keep_fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    n_groups: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query i, reference j) with equal integer group ids, filtered by ``keep_fn(qi, rj) -> (mask, value)``.

    ``r_group_sorted`` must be sorted; j indexes it. With ``n_groups`` (ids < n_groups) small enough, a
    dense per-group table replaces the binary searches. Pairs are built in blocks so that at most
    ``_PAIR_BLOCK`` candidates exist at once. Returns (qi, rj, value) of the kept pairs, by query.
    """
    if n_groups is not None and n_groups <= _DENSE_GROUPS:
        size = np.bincount(r_group_sorted, minlength=n_groups)
        lo_all = np.cumsum(size) - size
        lo, n = lo_all[q_group], size[q_group]
    else:
        lo = np.searchsorted(r_group_sorted, q_group, side="left")
        n = np.searchsorted(r_group_sorted, q_group, side="right") - lo
    queries = np.flatnonzero(n)  # most queries usually have no reference in their group
    lo, n = lo[queries], n[queries]
    ends = np.cumsum(n)
    out_q, out_r, out_v = [], [], []
    start = 0
    while start < len(queries):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _PAIR_BLOCK, side="right")), start + 1)
        nb = n[start:stop]
        qi = np.repeat(queries[start:stop], nb)
        first = np.cumsum(nb) - nb  # position of each query's first pair inside the block
        rj = np.arange(int(nb.sum())) - np.repeat(first - lo[start:stop], nb)
        mask, value = keep_fn(qi, rj)
        out_q.append(qi[mask])
        out_r.append(rj[mask])
        out_v.append(value[mask])
        start = stop
    if not out_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_q), np.concatenate(out_r), np.concatenate(out_v)


def _sequential_greedy(
    seg: np.ndarray, owner: np.ndarray, target: np.ndarray, valid: np.ndarray, n_owner: int, n_target: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching equal to processing owners one by one in order, each taking its preferred free target.

    Pairs are sorted by (group ``seg``, owner order, preference). ``valid`` [T, P]: the pair is allowed at
    threshold t. Each round, the first remaining pair of every group wins (its owner is the first one
    in the group that still has a free target, and that is its preferred one); pairs whose owner or
    target is then used are dropped. The thresholds are independent matchings, run side by side as
    disjoint copies. Returns (owner_matched [T, n_owner], target_taken [T, n_target]).
    """
    n_thr = valid.shape[0]
    t_idx, cols = np.nonzero(valid)  # by threshold, then pair order: each copy stays sorted
    n_seg = int(seg.max(initial=0)) + 1
    # int32 ids when they fit: half the memory traffic of int64
    dt = np.int32 if n_thr * max(n_seg, n_owner, n_target) < np.iinfo(np.int32).max else np.int64
    t_idx = t_idx.astype(dt)
    s = t_idx * dt(n_seg) + seg[cols].astype(dt)
    o = t_idx * dt(n_owner) + owner[cols].astype(dt)
    g = t_idx * dt(n_target) + target[cols].astype(dt)
    done = np.zeros(n_thr * n_owner, dtype=bool)
    taken = np.zeros(n_thr * n_target, dtype=bool)
    while len(s):  # at most (largest number of targets in one group) rounds
        first = np.ones(len(s), dtype=bool)
        first[1:] = s[1:] != s[:-1]
        done[o[first]] = True
        taken[g[first]] = True
        keep = ~(done[o] | taken[g])
        s, o, g = s[keep], o[keep], g[keep]
    return done.reshape(n_thr, n_owner), taken.reshape(n_thr, n_target)


def _video_codes(*columns: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Integer codes of the video ids of several columns, numbered in sorted id order.

    Tables list a video's rows together, so only the first row of each run is sorted and the codes
    are spread back over the runs (much cheaper than sorting every row's string).
    """
    heads, runs = [], []
    for col in columns:
        head = np.ones(len(col), dtype=bool)
        head[1:] = col[1:] != col[:-1]
        heads.append(col[head])
        runs.append(np.cumsum(head) - 1)
    names, inverse = np.unique(np.concatenate(heads).astype(str), return_inverse=True)
    parts = np.split(inverse.reshape(-1), np.cumsum([len(h) for h in heads])[:-1])
    return max(len(names), 1), [part[run] for part, run in zip(parts, runs)]


def _descending_key(x: np.ndarray) -> np.ndarray:
    """uint64 keys whose ascending order is the descending order of the floats ``x`` (finite)."""
    u = (x.astype(np.float64) + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0 (they are equal)
    ascending = np.where(u >> np.uint64(63), ~u, u | np.uint64(1 << 63))
    return ~ascending


def _radix_order(order: np.ndarray, keys: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Stable LSD radix sort of ``order`` by unsigned ``keys`` [(values, bits)], least significant first.

    Each key is sorted in 16-bit digits with numpy's stable sort, which is a radix sort for 16-bit
    ints: several times faster than a stable float sort or ``lexsort`` on 10^5 rows.
    """
    for values, bits in keys:
        values = values.astype(np.uint64)
        for shift in range(0, max(bits, 1), 16):
            digit = (values[order] >> np.uint64(shift)).astype(np.uint16)
            order = order[np.argsort(digit, kind="stable")]
    return order


def _stable_argsort_int(x: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative ints (radix sorted in 16-bit digits)."""
    bits = int(x.max()).bit_length() if x.size else 1
    return _radix_order(np.arange(len(x)), [(x, bits)])


def _true_positive_ranks(tp: np.ndarray, starts: np.ndarray, cls: np.ndarray):
    """Per (threshold, class) row: the true positives' 1-based ranks and their count so far.

    ``tp`` [T, N] ranked flags, class ``cls[j]`` occupying ``starts[c]:``. Only true positives move
    recall, so AP needs these entries alone. Returns (row [M] = t * n_cls + class, in order; rank [M];
    k [M] = 1-based index of the entry inside its row; j [M] = column in ``tp``).
    """
    t_idx, j = np.nonzero(tp)  # row-major: by threshold, then rank (classes are contiguous)
    c = cls[j]
    row = t_idx * len(starts) + c
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    run_start = np.flatnonzero(first)
    k = np.arange(1, len(row) + 1) - np.repeat(run_start, np.diff(np.append(run_start, len(row))))
    return row, (j - starts[c] + 1).astype(np.float64), k.astype(np.float64), j


def _interpolated_ap(tp: np.ndarray, starts: np.ndarray, cls: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """All-point interpolated AP [n_cls, T] of ranked flags ``tp`` [T, N] (see ``_true_positive_ranks``).

    ActivityNet's sum of recall steps times the precision envelope, where recall steps by 1/npos at each
    true positive and the envelope there is the largest precision k/rank of this or any later true
    positive. Rows are padded to a common length in chunks of similar length, so the envelope is one
    vectorized reverse cumulative maximum per chunk.
    """
    n_thr, n_cls = tp.shape[0], len(starts)
    row, rank, k, _ = _true_positive_ranks(tp, starts, cls)
    prec = k / rank
    ap = np.zeros(n_thr * n_cls)
    lengths = np.bincount(row, minlength=n_thr * n_cls)
    row_start = np.cumsum(lengths) - lengths
    rows_all = np.flatnonzero(lengths)
    # Chunks of rows whose lengths share a power of two (padding at most doubles the work), split
    # further so that no chunk exceeds the budget: a loop over a few chunks, not over predictions.
    octave = np.floor(np.log2(lengths[rows_all])).astype(np.int64)
    for o in np.unique(octave):
        rows_o = rows_all[octave == o]
        per_chunk = max(1, _AP_CHUNK // (2 ** (int(o) + 1)))
        for lo in range(0, len(rows_o), per_chunk):
            rows = rows_o[lo : lo + per_chunk]
            col = np.arange(int(lengths[rows].max()))
            valid = col[None, :] < lengths[rows][:, None]
            vals = np.where(valid, prec[np.where(valid, row_start[rows][:, None] + col[None, :], 0)], 0.0)
            env = np.maximum.accumulate(vals[:, ::-1], axis=1)[:, ::-1]
            ap[rows] = np.where(valid, env, 0.0).sum(axis=1)
    return (ap.reshape(n_thr, n_cls) / npos).T


def _non_interpolated_ap(
    tp: np.ndarray, ignored: np.ndarray, starts: np.ndarray, cls: np.ndarray, npos: np.ndarray
) -> np.ndarray:
    """THUMOS14 kit AP [n_cls, T]: sum of the precision at each true positive / npos.

    ``ignored`` [N]: unmatched detections that are neither true nor false positives (ambiguous), so a
    true positive's rank counts the non-ignored detections up to it plus the matched ignored ones.
    """
    n_thr, n_cls = tp.shape[0], len(starts)
    row, _, k, j = _true_positive_ranks(tp, starts, cls)
    kept_cum = np.cumsum(~ignored)
    base = np.append(0, kept_cum)[starts[cls[j]]]
    ign_tp = ignored[j].astype(np.int64)
    ign_cum = np.cumsum(ign_tp)  # matched ignored detections so far, restarted per row below
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    run_start = np.flatnonzero(first)
    before = np.repeat((ign_cum - ign_tp)[run_start], np.diff(np.append(run_start, len(row))))
    rank = (kept_cum[j] - base) + (ign_cum - before)
    ap = np.bincount(row, weights=k / rank, minlength=n_thr * n_cls)
    return (ap.reshape(n_thr, n_cls) / npos).T


def evaluate_detection(
    gt: SegmentTable,
    pred: SegmentTable,
    tious: Iterable[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    protocol: str = "activitynet",
    ambiguous: SegmentTable | None = None,
) -> DetectionResult:
    """mAP of ``pred`` against ``gt`` at each tIoU in ``tious`` (see the module docstring for the rules).

    ``ambiguous`` (THUMOS14 "Ambiguous" intervals, labels ignored) is used by ``protocol="thumos14"`` only.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    thr = _check_tious(tious)
    _check_table(gt, "ground truth", need_scores=False)
    _check_table(pred, "predictions", need_scores=True)
    warnings = prediction_warnings(pred)
    if ambiguous is not None:
        _check_table(ambiguous, "ambiguous", need_scores=False)
        if protocol != "thumos14":
            warnings.append("ambiguous intervals are used by the thumos14 protocol only; ignored")
            ambiguous = None

    zero = gt.segments[:, 1] == gt.segments[:, 0]
    if zero.any():
        vids = sorted(set(gt.video[zero].tolist()))
        warnings.append(
            f"{int(zero.sum())} zero-length ground-truth segment(s) removed (they overlap nothing, so could "
            f"never be matched) in video(s): {', '.join(vids)}"
        )
        gt = gt.select(~zero)

    classes, npos = np.unique(gt.labels, return_counts=True)
    lut = np.full(max(int(classes.max(initial=-1)), int(pred.labels.max(initial=-1))) + 1, -1, dtype=np.int64)
    lut[classes] = np.arange(len(classes))
    pred_cls = lut[pred.labels]
    in_gt = pred_cls >= 0
    if not in_gt.all():
        absent = sorted(set(pred.labels[~in_gt].tolist()))
        warnings.append(
            f"{int((~in_gt).sum())} prediction(s) of class(es) absent from the ground truth not evaluated: {absent}"
        )
    n_cls = len(classes)
    if n_cls == 0:
        raise ValueError("ground truth: no segments to evaluate against")

    # Video ids -> sorted integer ids (thumos14 breaks ties by sorted video id).
    amb = ambiguous if ambiguous is not None else SegmentTable.empty()
    n_vid, (g_vid, p_vid, a_vid) = _video_codes(gt.video, pred.video, amb.video)

    # Predictions ranked within each class by the protocol's order (radix sorts; see _radix_order).
    p_idx = np.flatnonzero(in_gt) if not in_gt.all() else np.arange(len(pred))
    score_key = (_descending_key(pred.scores[p_idx]), 64)
    cls_key = (pred_cls[p_idx], max(n_cls - 1, 1).bit_length())
    if protocol == "activitynet":  # (class, -score, later-listed first)
        order = _radix_order(np.arange(len(p_idx))[::-1], [score_key, cls_key])
    else:  # (class, -score, video id, listed order)
        vid_key = (p_vid[p_idx], max(n_vid - 1, 1).bit_length())
        order = _radix_order(np.arange(len(p_idx)), [vid_key, score_key, cls_key])
    p_idx = p_idx[order]
    p_cls = pred_cls[p_idx]
    p_start, p_end = pred.segments[:, 0][p_idx], pred.segments[:, 1][p_idx]
    p_grp = p_cls * n_vid + p_vid[p_idx]
    n_pred = len(p_idx)

    # Ground truth sorted by (class, video), listed order kept inside a group.
    g_grp_all = lut[gt.labels] * n_vid + g_vid
    g_order = np.argsort(g_grp_all, kind="stable")
    g_grp, g_start, g_end = g_grp_all[g_order], gt.segments[g_order, 0], gt.segments[g_order, 1]

    tmin = thr.min()

    def keep_pair(qi: np.ndarray, rj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ov = _pair_overlap(p_start[qi], p_end[qi], g_start[rj], g_end[rj], protocol)
        return (ov > tmin if protocol == "thumos14" else ov >= tmin), ov

    qi, rj, ov = group_pairs(p_grp, g_grp, keep_pair, n_cls * n_vid)
    pair_grp = p_grp[qi]
    # Pairs come grouped by prediction (ranked order), ground truths ascending inside. Sort them by
    # (group, owner in turn, owner's preference) with cheap stable sorts instead of a slow lexsort.
    if protocol == "activitynet":  # (group, prediction, -tIoU, later ground truth first)
        srt = np.arange(len(qi))
        multi = np.flatnonzero(np.bincount(qi, minlength=n_pred)[qi] > 1)  # only these need reordering
        m = multi[::-1]  # later ground truth first among equal tIoU
        m = m[np.argsort(-ov[m], kind="stable")]
        srt[multi] = m[np.argsort(qi[m], kind="stable")]
        # group = (class, video); pairs are already in class order, so sort by video, then by class
        srt = srt[_stable_argsort_int(p_vid[p_idx][qi[srt]])]
        srt = srt[_stable_argsort_int(p_cls[qi[srt]])]
        valid = ov[srt][None, :] >= thr[:, None]
        tp, _ = _sequential_greedy(pair_grp[srt], qi[srt], rj[srt], valid, n_pred, len(g_grp))
    else:  # (ground truth, which also orders groups; -overlap, earlier-ranked detection first)
        srt = np.argsort(-ov, kind="stable")
        srt = srt[_stable_argsort_int(rj[srt])]
        valid = ov[srt][None, :] > thr[:, None]
        _, tp = _sequential_greedy(pair_grp[srt], rj[srt], qi[srt], valid, len(g_grp), n_pred)

    counted = np.ones(n_pred, dtype=bool)
    if protocol == "thumos14" and len(amb):
        a_order = np.argsort(a_vid, kind="stable")
        a_vid_s, a_start, a_end = a_vid[a_order], amb.segments[a_order, 0], amb.segments[a_order, 1]

        def touches(qi_: np.ndarray, rj_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            inter = np.minimum(p_end[qi_], a_end[rj_]) - np.maximum(p_start[qi_], a_start[rj_])
            return inter > 0, inter

        hit, _, _ = group_pairs(p_vid[p_idx], a_vid_s, touches, n_vid)
        counted[hit] = False

    counts = np.bincount(p_cls, minlength=n_cls)
    starts = np.cumsum(counts) - counts
    if protocol == "activitynet":
        ap = _interpolated_ap(tp, starts, p_cls, npos)
    else:
        ap = _non_interpolated_ap(tp, ~counted, starts, p_cls, npos)
    m_ap = ap.mean(axis=0)
    return DetectionResult(
        tious=thr,
        mAP=m_ap,
        average_mAP=float(m_ap.mean()),
        per_class_AP={int(c): ap[i] for i, c in enumerate(classes)},
        warnings=warnings,
    )
