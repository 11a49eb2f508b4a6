"""GauFuse Gaussian weighted instance fusion, the replacement of NMS
(docs/design.md §5 "GauFuse Gaussian weighted fusion").

Per class, repeatedly: take the most confident remaining instance m, group the remaining instances with
IoU(., m) > θ_g, fuse the group into one instance with weights q_i = softmax(s_i / T) (start, end and
score are q-weighted means) and remove the group. NMS would keep m and drop the rest; fusion keeps the
information of the suppressed instances in the fused boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from raytal.core.iou import interval_iou

# fusion_fn(segments, scores, labels) -> (segments, scores, labels): what replaces NMS when fusing
FusionFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


# Rounds of the leader fixed point before the sequential scan takes over.
_MAX_ROUNDS = 8
# Classes with at least this many instances start with the dense phase; it stops at the first group
# smaller than _DENSE_GROUP (the rest of the class is then sparse enough for the pair phase).
_DENSE_CLASS = 256
_DENSE_GROUP = 16
# Candidate pairs materialized at once: small enough to bound memory and to keep every temporary
# under glibc's mmap threshold (128 KiB); bigger temporaries are mmapped and page-faulted on each
# use, which made the IoU step 3-6x slower per element.
_PAIR_CHUNK = 8192


def _check_inputs(
    segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seg = np.asarray(segments, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if seg.size == 0 and seg.ndim <= 2:
        seg = seg.reshape(0, 2)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise ValueError(f"segments: expected an array of shape [N, 2], got shape {seg.shape}")
    n = seg.shape[0]
    if sc.shape != (n,):
        raise ValueError(f"scores: expected shape ({n},) to match segments, got {sc.shape}")
    if lab.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) to match segments, got {lab.shape}")
    if n and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels: expected integer class ids, got dtype {lab.dtype}")
    if not (np.isfinite(seg).all() and np.isfinite(sc).all()):
        raise ValueError("segments and scores: expected finite values, found NaN or Inf")
    if (seg[:, 1] < seg[:, 0]).any():
        raise ValueError("segments: expected start <= end in every row")
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold: expected a value in [0, 1), got {iou_threshold}")
    if not temperature > 0.0:
        raise ValueError(f"temperature: expected a positive value, got {temperature}")
    return seg, sc, lab.astype(np.int64)


def _close_pairs(seg: np.ndarray, cls: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (j, i), j < i, of the same class with IoU > θ_g (indices into ``seg``; n >= 1).

    Candidates come from a sweep in (class, start) order: IoU > θ needs start_i < end_j - θ len_j when
    start_j <= start_i (the intersection, at most end_j - start_i, must exceed θ len_j), so each
    instance only meets the few that start shortly after it instead of its whole class. The sweep keys
    put each class in its own band of width 2 (max - min) + 1, so a bound never reaches the next
    class; the tiny slack only widens the candidate set, and the exact IoU test decides.
    """
    n = seg.shape[0]
    lo, hi = float(seg.min()), float(seg.max())
    width = 2.0 * (hi - lo) + 1.0
    order = np.lexsort((seg[:, 0], cls))
    start, end, base = seg[order, 0], seg[order, 1], cls[order] * width - lo
    bound = base + end - iou_threshold * (end - start) + 1e-6 * width
    stop = np.searchsorted(base + start, bound, side="right")
    count = np.maximum(stop - np.arange(n) - 1, 0)
    total = np.cumsum(count)
    # Candidate pairs are materialized in chunks of about _PAIR_CHUNK.
    inner_cuts = np.searchsorted(total, np.arange(_PAIR_CHUNK, total[-1], _PAIR_CHUNK)).tolist()
    cuts = sorted({0, n, *inner_cuts})
    length = end - start
    src, dst = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for lo_row, hi_row in zip(cuts[:-1], cuts[1:]):
        cnt = count[lo_row:hi_row]
        p = np.repeat(np.arange(lo_row, hi_row), cnt)
        q = p + 1 + np.arange(p.shape[0]) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        # interval_iou's arithmetic with start[q] >= start[p] (so max(start) = start[q]); a zero union has
        # a zero intersection, and 0/0 = NaN is not > θ, as interval_iou's 0.
        inter = np.minimum(end[p], end[q])
        inter -= start[q]
        np.maximum(inter, 0.0, out=inter)
        union = length[p] + length[q]
        union -= inter
        with np.errstate(invalid="ignore"):
            close = inter / union > iou_threshold
        a, b = order[p[close]], order[q[close]]
        src.append(np.minimum(a, b))
        dst.append(np.maximum(a, b))
    return np.concatenate(src), np.concatenate(dst)


def _leaders(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Leader mask of the greedy grouping, given the close pairs src < dst in score order.

    Instance i leads a group iff no earlier leader is close to it (otherwise that leader absorbed it),
    i.e. the leaders are hard NMS's keep set. That fixed point lead[i] = not any_{j<i, close}(lead[j])
    is unique, and iterating it from "all lead" settles at least one more prefix element per round, so
    it usually converges in a few rounds over all classes at once; longer chains fall back to the
    sequential scan (one update per leader), which gives the same answer.
    """
    lead = np.ones(n, dtype=bool)
    for _ in range(_MAX_ROUNDS):
        new = np.ones(n, dtype=bool)
        new[dst[lead[src]]] = False
        if np.array_equal(new, lead):
            return lead
        lead = new
    by_src = np.argsort(src, kind="stable")
    src, dst = src[by_src], dst[by_src]
    indptr = np.searchsorted(src, np.arange(n + 1))
    absorbed = np.zeros(n, dtype=bool)
    lead = np.zeros(n, dtype=bool)
    m = 0
    while m < n:
        k = int(np.argmin(absorbed[m:]))  # first instance not absorbed = most confident remaining
        if absorbed[m + k]:
            break
        m += k
        lead[m] = True
        absorbed[dst[indptr[m] : indptr[m + 1]]] = True
        m += 1
    return lead


def _dense_phase(seg: np.ndarray, bounds: Iterable[tuple[int, int]], iou_threshold: float,
                 leader_of: np.ndarray, remaining: np.ndarray) -> None:
    """Greedy steps while groups are large: one leader at a time against its class's remaining instances.

    Clusters of near-duplicate candidates (dense detector output) would give the pair phase a
    quadratic number of pairs; taking their leaders first removes each cluster with a few vector
    operations. Fills ``leader_of`` and clears ``remaining`` in place; the greedy state afterwards
    (the remaining instances, in order) is exactly where the pair phase resumes.
    """
    for b, e in bounds:
        if e - b < _DENSE_CLASS:
            continue
        m = b
        while m < e:
            k = int(np.argmax(remaining[m:e]))  # first remaining = most confident remaining
            if not remaining[m + k]:
                break
            m += k
            members = remaining[m:e] & (
                interval_iou(seg[m, 0], seg[m, 1], seg[m:e, 0], seg[m:e, 1]) > iou_threshold
            )
            members[0] = True
            leader_of[m:e][members] = m
            remaining[m:e] &= ~members
            if members.sum() < _DENSE_GROUP:
                break
            m += 1


def gaussian_fusion(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    iou_threshold: float = 0.25,
    temperature: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian weighted fusion per class.

    Args:
        segments: [N, 2] (start, end), any time unit (IoU is unit-free).
        scores: [N] confidences.
        labels: [N] int class ids.
        iou_threshold: θ_g; instances with IoU > θ_g with the group leader join its group.
        temperature: T of softmax(s / T) (0.1 for pseudo labels, 0.03 at test time).

    Returns:
        (segments [G, 2] float64, scores [G] float64, labels [G] int64), one fused instance per group,
        sorted by descending fused score (stable: ties keep ascending class, then greedy order). Equal
        scores make the earlier-listed instance the leader.

    The greedy runs in two exact phases: a dense phase takes the leaders of large groups one at a
    time, then the remaining instances of all classes are grouped at once from their close pairs.
    """
    seg, sc, lab = _check_inputs(segments, scores, labels, iou_threshold, temperature)
    n = seg.shape[0]
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)
    # Class-major, descending score (stable): within a class, index order is the greedy order.
    order = np.lexsort((-sc, lab))
    seg, sc, lab = seg[order], sc[order], lab[order]
    first, cls = np.unique(lab, return_index=True, return_inverse=True)[1:]
    cls = cls.reshape(-1)
    bounds = zip(first.tolist(), first[1:].tolist() + [n])
    leader_of = np.arange(n)
    remaining = np.ones(n, dtype=bool)
    _dense_phase(seg, bounds, iou_threshold, leader_of, remaining)

    rest = np.flatnonzero(remaining)
    if rest.size:
        src, dst = _close_pairs(seg[rest], cls[rest], iou_threshold)
        lead = _leaders(src, dst, rest.shape[0])
        # Each instance joins the first leader close to it (the one whose turn came first); a leader
        # has no earlier leader close to it and stays its own.
        local = np.arange(rest.shape[0])
        from_leader = lead[src]
        np.minimum.at(local, dst[from_leader], src[from_leader])
        leader_of[rest] = rest[local]
    is_leader = leader_of == np.arange(n)
    group = (np.cumsum(is_leader) - 1)[leader_of]
    g = int(is_leader.sum())
    # The leader holds its group's maximum score, so exp((s - s_max) / T) never overflows.
    w = np.exp((sc - sc[leader_of]) / temperature)
    norm = np.bincount(group, weights=w, minlength=g)
    fused = np.stack(
        [np.bincount(group, weights=w * col, minlength=g) for col in (seg[:, 0], seg[:, 1], sc)], axis=1
    )
    fused /= norm[:, None]
    by_score = np.argsort(-fused[:, 2], kind="stable")
    return fused[by_score, :2], fused[by_score, 2], lab[is_leader][by_score]
