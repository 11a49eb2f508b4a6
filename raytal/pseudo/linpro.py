"""GauFuse LinPro: snippet-level pseudo labels from fused instances by linear programming (docs/design.md §5
"GauFuse LinPro").

Per (video, class) problem with K instances: row k of W holds 1/|inner_k| on the instance's snippets
and -1/|outer_k| on its outer region (ceil(margin * length) snippets on each side, clipped to the
video); the labels solve min Σ y s.t. W y = scores, 0 <= y <= 1, or, when those equalities are
infeasible, the elastic form min Σ y + M Σ (u + v) s.t. W y + u - v = scores, u, v >= 0.

Speed comes from structure (docs/design.md §5 "GauFuse LinPro"):

* instances interact only when their inner+outer spans overlap, so each problem splits into connected
  components whose optima add up;
* an isolated instance has the closed form y = s_k on its inner and 0 on its outer;
* inside a component, snippets with identical columns of W are interchangeable, so one variable per
  equivalence group (its value applies to all its snippets) gives the same optimum as the T-variable
  LP, with uniform labels inside each group as the paper asks;
* all non-trivial components of all problems go to scipy's HiGHS as one block-diagonal LP.

Infeasibility is decided per component (the LP is separable) and a problem is relaxed when any of its
components is: first the elastic form of every component is solved in one call; a component with no
slack at that optimum is also optimal for the strict form; the components with slack get a phase-1
LP (minimum total slack) to tell truly infeasible ones from ones where the penalty was not exact, and
the latter, when their problem is not relaxed, are re-solved strictly. Snippets covered by no instance
are 0 without entering any LP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

# A component whose elastic optimum has total slack above this carries slack at all.
_SLACK_TOL = 1e-9
# Phase-1 minimum total slack above this means the strict equalities are infeasible (HiGHS's primal
# feasibility tolerance is 1e-7 per row).
_FEAS_TOL = 1e-7
# ceil(margin * length) must not round 3.0000000000000004 up to 4.
_CEIL_EPS = 1e-9


@dataclass
class LinProResult:
    """Solution of one (video, class) LinPro problem.

    y: [num_snippets] float64 labels in [0, 1]. objective: Σ y, plus M Σ (u + v) when relaxed.
    relaxed: the strict equalities were infeasible and the elastic form was solved.
    status: "empty" (no instance), "closed_form" (only isolated instances), "optimal" (an LP was
    solved, strict form) or "relaxed" (elastic form).
    """

    y: np.ndarray
    objective: float
    relaxed: bool
    status: str


def _check_problem(
    index: int, segments: np.ndarray, scores: np.ndarray, num_snippets: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Types and shapes of one problem; the value checks run once over the whole batch."""
    where = f"LinPro problem {index}"
    if isinstance(num_snippets, bool) or not isinstance(num_snippets, (int, np.integer)) or num_snippets < 0:
        raise ValueError(f"{where}: num_snippets: expected a non-negative int, got {num_snippets!r}")
    seg = np.asarray(segments)
    if seg.size == 0 and seg.ndim <= 2:
        seg = seg.reshape(0, 2).astype(np.int64)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise ValueError(f"{where}: segments: expected an int array of shape [K, 2], got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"{where}: segments: expected integer snippet indices [s, e), got dtype {seg.dtype}")
    sc = np.asarray(scores, dtype=np.float64)
    if sc.shape != (seg.shape[0],):
        raise ValueError(f"{where}: scores: expected shape ({seg.shape[0]},) to match segments, got {sc.shape}")
    return seg, sc, int(num_snippets)


def _check_values(seg: np.ndarray, score: np.ndarray, prob: np.ndarray, T: np.ndarray) -> None:
    """Ranges inside their video and scores in [0, 1], over all problems at once."""
    bad_seg = (seg[:, 0] < 0) | (seg[:, 0] >= seg[:, 1]) | (seg[:, 1] > T[prob])
    if bad_seg.any():
        i = int(np.argmax(bad_seg))
        raise ValueError(
            f"LinPro problem {prob[i]}: segments: expected half-open ranges with 0 <= s < e <= "
            f"num_snippets={T[prob[i]]}, got {seg[i].tolist()}"
        )
    bad_score = ~(np.isfinite(score) & (score >= 0.0) & (score <= 1.0))
    if bad_score.any():
        i = int(np.argmax(bad_score))
        raise ValueError(f"LinPro problem {prob[i]}: scores: expected finite values in [0, 1], got {score[i]}")


def _expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner index, position) of every element of the ranges [starts_i, starts_i + lengths_i)."""
    owner = np.repeat(np.arange(starts.shape[0]), lengths)
    first = np.cumsum(lengths) - lengths
    return owner, starts[owner] + np.arange(owner.shape[0]) - first[owner]


class _BlockLP:
    """The grouped LP of all non-trivial components: rows = instances, columns = groups."""

    def __init__(self, A: sp.csr_matrix, group_size: np.ndarray, group_comp: np.ndarray,
                 row_comp: np.ndarray, row_penalty: np.ndarray, rhs: np.ndarray):
        self.A, self.group_size, self.group_comp = A, group_size, group_comp
        self.row_comp, self.row_penalty, self.rhs = row_comp, row_penalty, rhs

    def solve(self, comps: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Solve the components flagged in ``comps`` ([n_comp] bool) in one HiGHS call.

        mode "elastic": min Σ y + M Σ(u+v); "phase1": min Σ(u+v); "strict": min Σ y, no slack.
        Returns (z over the selected groups, u + v over the selected rows), or None when the strict
        form is infeasible.
        """
        rows, cols = comps[self.row_comp], comps[self.group_comp]
        A = self.A[rows][:, cols]
        n_rows, n_cols = A.shape
        cost = self.group_size[cols].astype(np.float64)
        if mode == "phase1":
            cost = np.zeros(n_cols)
        bounds = np.tile([0.0, 1.0], (n_cols, 1))
        if mode != "strict":
            eye = sp.identity(n_rows, format="csr")
            A = sp.hstack([A, eye, -eye], format="csr")
            pen = self.row_penalty[rows] if mode == "elastic" else np.ones(n_rows)
            cost = np.concatenate([cost, pen, pen])
            bounds = np.concatenate([bounds, np.tile([0.0, np.inf], (2 * n_rows, 1))])
        # Dual simplex without presolve: the blocks are tiny and well scaled, and presolve of the
        # whole batch cost more than it saved (about 25 % of the solve time in bench_linpro).
        res = linprog(cost, A_eq=A, b_eq=self.rhs[rows], bounds=bounds, method="highs-ds",
                      options={"presolve": False})
        if mode == "strict" and res.status == 2:
            return None
        if res.status != 0:
            raise RuntimeError(f"LinPro: HiGHS failed on the {mode} LP ({res.status}): {res.message}")
        z = np.clip(res.x[:n_cols], 0.0, 1.0)
        slack = np.zeros(n_rows) if mode == "strict" else (
            np.clip(res.x[n_cols:n_cols + n_rows], 0.0, None) + np.clip(res.x[n_cols + n_rows:], 0.0, None)
        )
        return z, slack


def linpro_batch(
    problems: list[tuple[np.ndarray, np.ndarray, int]], margin: float = 0.25, penalty: float = 1e3
) -> list[LinProResult]:
    """Solve many LinPro problems, their non-trivial components in one block-diagonal HiGHS LP.

    Args:
        problems: (segments int [K, 2] half-open snippet ranges [s, e), scores [K] in [0, 1],
            num_snippets) per (video, class).
        margin: outer region = ceil(margin * (e - s)) snippets on each side, clipped to the video.
        penalty: M of the elastic form, raised per problem to 10 * (longest inner length) so that
            slack never costs less than labels.

    Returns:
        One LinProResult per problem, in order.
    """
    if not (np.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin: expected a finite value >= 0, got {margin}")
    if not (np.isfinite(penalty) and penalty > 0.0):
        raise ValueError(f"penalty: expected a finite value > 0, got {penalty}")
    checked = []
    for i, prob in enumerate(problems):
        if len(prob) != 3:
            raise ValueError(f"LinPro problem {i}: expected a (segments, scores, num_snippets) tuple")
        checked.append(_check_problem(i, *prob))
    n_prob = len(checked)
    T = np.array([c[2] for c in checked], dtype=np.int64)
    K = np.array([c[0].shape[0] for c in checked], dtype=np.int64)
    offset = np.cumsum(T) - T  # start of each problem in the flat label array
    y_flat = np.zeros(int(T.sum()))
    slack_sum = np.zeros(n_prob)
    relaxed = np.zeros(n_prob, dtype=bool)
    used_lp = np.zeros(n_prob, dtype=bool)
    if K.sum() == 0:  # nothing to check or solve
        return _results(checked, y_flat, offset, T, K, slack_sum, relaxed, used_lp, np.zeros(n_prob))

    seg = np.concatenate([c[0] for c in checked]).astype(np.int64)
    score = np.concatenate([c[1] for c in checked])
    prob = np.repeat(np.arange(n_prob), K)
    _check_values(seg, score, prob, T)
    s, e = seg[:, 0], seg[:, 1]
    length = e - s
    m = np.ceil(margin * length - _CEIL_EPS).astype(np.int64)
    a = np.maximum(s - m, 0)
    b = np.minimum(e + m, T[prob])
    outer = (s - a) + (b - e)
    max_len = np.zeros(n_prob, dtype=np.int64)
    np.maximum.at(max_len, prob, length)
    M = np.maximum(penalty, 10.0 * max_len)

    # Connected components: merge the spans [a, b) sorted by start; keying positions by problem keeps
    # problems apart in one sweep. Touching spans share no snippet, so they do not interact.
    big = int(T.max()) + 1
    key_a, key_b = a + prob * big, b + prob * big
    order = np.argsort(key_a, kind="stable")
    run_end = np.maximum.accumulate(key_b[order])
    starts_new = np.r_[True, key_a[order][1:] >= run_end[:-1]]
    comp = np.empty_like(order)
    comp[order] = np.cumsum(starts_new) - 1
    comp_size = np.bincount(comp)
    isolated = comp_size[comp] == 1

    # Closed form for isolated instances: y = s_k on the inner, 0 on the outer.
    iso = np.flatnonzero(isolated)
    owner, pos = _expand_ranges(offset[prob[iso]] + s[iso], length[iso])
    y_flat[pos] = score[iso][owner]

    lp = np.flatnonzero(~isolated)
    if lp.size:
        used_lp[np.unique(prob[lp])] = True
        _solve_components(lp, comp, prob, s, e, a, b, length, outer, score, M, big, offset,
                          y_flat, slack_sum, relaxed)
    return _results(checked, y_flat, offset, T, K, slack_sum, relaxed, used_lp, M)


def _solve_components(lp: np.ndarray, comp: np.ndarray, prob: np.ndarray, s: np.ndarray, e: np.ndarray,
                      a: np.ndarray, b: np.ndarray, length: np.ndarray, outer: np.ndarray,
                      score: np.ndarray, M: np.ndarray, big: int, offset: np.ndarray,
                      y_flat: np.ndarray, slack_sum: np.ndarray, relaxed: np.ndarray) -> None:
    """Grouped LP of the instances ``lp`` (members of non-trivial components); fills y_flat in place."""
    n_rows = lp.shape[0]
    _, row_comp = np.unique(comp[lp], return_inverse=True)
    n_comp = int(row_comp.max()) + 1
    comp_prob = np.zeros(n_comp, dtype=np.int64)
    comp_prob[row_comp] = prob[lp]

    # Elementary intervals between consecutive breakpoints of a component have identical columns.
    # Breakpoints are keyed by component so touching components do not share an interval.
    def key(x: np.ndarray) -> np.ndarray:
        return row_comp * big + x[lp]

    bp = np.unique(np.concatenate([key(a), key(s), key(e), key(b)]))
    interval_len = np.diff(bp)
    # Regions per instance: left outer [a, s), inner [s, e), right outer [e, b); both outer sides
    # carry the same W entry, so they share the code 2k + 1 (inner: 2k).
    lo = np.concatenate([key(a), key(s), key(e)])
    hi = np.concatenate([key(s), key(e), key(b)])
    j_lo, j_hi = np.searchsorted(bp, lo), np.searchsorted(bp, hi)
    rows3 = np.tile(np.arange(n_rows), 3)
    is_outer = np.repeat([True, False, True], n_rows)
    with np.errstate(divide="ignore"):
        coef3 = np.where(is_outer, -1.0 / np.tile(outer[lp], 3), 1.0 / np.tile(length[lp], 3))
    owner, j = _expand_ranges(j_lo, j_hi - j_lo)  # an empty outer side expands to nothing
    row_t, coef_t = rows3[owner], coef3[owner]
    code_t = 2 * row_t + is_outer[owner]

    # Equivalence groups = intervals with identical (instance, role) sets: pad each interval's sorted
    # codes into a row and let np.unique(axis=0) find identical rows exactly.
    o = np.lexsort((code_t, j))
    j_s, code_s = j[o], code_t[o]
    run_start = np.r_[True, j_s[1:] != j_s[:-1]]
    first = np.maximum.accumulate(np.where(run_start, np.arange(j_s.shape[0]), 0))
    rank = np.arange(j_s.shape[0]) - first
    used_j = j_s[run_start]
    sig = np.full((used_j.shape[0], int(rank.max()) + 1), -1, dtype=np.int64)
    sig[np.cumsum(run_start) - 1, rank] = code_s
    _, group_of_used = np.unique(sig, axis=0, return_inverse=True)
    group_of_used = group_of_used.reshape(-1)
    n_groups = int(group_of_used.max()) + 1
    group_of_j = np.full(bp.shape[0], -1, dtype=np.int64)
    group_of_j[used_j] = group_of_used
    group_size = np.bincount(group_of_used, weights=interval_len[used_j], minlength=n_groups)
    group_comp = np.zeros(n_groups, dtype=np.int64)
    group_comp[group_of_used] = bp[used_j] // big

    A = sp.coo_matrix((interval_len[j] * coef_t, (row_t, group_of_j[j])), shape=(n_rows, n_groups)).tocsr()
    block = _BlockLP(A, group_size, group_comp, row_comp, M[prob[lp]], score[lp])

    every = np.ones(n_comp, dtype=bool)
    z, slack = block.solve(every, "elastic")
    comp_slack = np.bincount(row_comp, weights=slack, minlength=n_comp)
    has_slack = comp_slack > _SLACK_TOL
    infeasible = np.zeros(n_comp, dtype=bool)
    if has_slack.any():
        _, slack1 = block.solve(has_slack, "phase1")
        min_slack = np.bincount(row_comp[has_slack[row_comp]], weights=slack1, minlength=n_comp)
        infeasible = has_slack & (min_slack > _FEAS_TOL)
    relaxed[comp_prob[infeasible]] = True
    # Strict-feasible components whose elastic optimum still used slack (the penalty was not exact):
    # a problem that is not relaxed needs their strict optimum.
    redo = has_slack & ~infeasible & ~relaxed[comp_prob]
    if redo.any():
        strict = block.solve(redo, "strict")
        if strict is None:  # HiGHS's tolerances disagree with phase 1: keep the elastic solution
            relaxed[comp_prob[redo]] = True
        else:
            z[redo[group_comp]] = strict[0]
            slack[redo[row_comp]] = 0.0
    # Slack counts in the objective only where the problem is relaxed.
    np.add.at(slack_sum, prob[lp], np.where(relaxed[prob[lp]], slack, 0.0))

    local = bp[used_j] - (bp[used_j] // big) * big
    start = offset[comp_prob[bp[used_j] // big]] + local
    owner, pos = _expand_ranges(start, interval_len[used_j])
    y_flat[pos] = z[group_of_used[owner]]


def _results(checked: list, y_flat: np.ndarray, offset: np.ndarray, T: np.ndarray, K: np.ndarray,
             slack_sum: np.ndarray, relaxed: np.ndarray, used_lp: np.ndarray, M: np.ndarray
             ) -> list[LinProResult]:
    out = []
    for i in range(len(checked)):
        y = y_flat[offset[i]:offset[i] + T[i]].copy()
        objective = float(y.sum() + (M[i] * slack_sum[i] if relaxed[i] else 0.0))
        status = ("relaxed" if relaxed[i] else "optimal" if used_lp[i]
                  else "closed_form" if K[i] else "empty")
        out.append(LinProResult(y=y, objective=objective, relaxed=bool(relaxed[i]), status=status))
    return out


def linpro_labels(
    segments: np.ndarray, scores: np.ndarray, num_snippets: int, margin: float = 0.25, penalty: float = 1e3
) -> LinProResult:
    """LinPro labels of one (video, class) problem; see ``linpro_batch`` for the arguments."""
    return linpro_batch([(segments, scores, num_snippets)], margin=margin, penalty=penalty)[0]


def dense_labels(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    num_snippets: int,
    num_classes: int,
    margin: float = 0.25,
    penalty: float = 1e3,
) -> tuple[np.ndarray, int]:
    """Dense [T, C] LinPro pseudo labels of one video from its fused instances.

    Rounding: snippet i is centred at grid position i, so a segment [start, end] (grid units) covers
    the snippets whose centres lie inside it, [ceil(start), floor(end) + 1), clipped to [0, T). A
    segment that contains no centre but overlaps the video's extent [-0.5, T - 0.5] gets the single
    snippet nearest its midpoint; a segment entirely outside it is dropped. Then one LinPro problem
    per class with instances, all solved in one batch.

    Returns:
        (labels [T, C] float32, number of relaxed (class) problems).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    if isinstance(num_snippets, bool) or not isinstance(num_snippets, (int, np.integer)) or num_snippets < 1:
        raise ValueError(f"num_snippets: expected a positive int, got {num_snippets!r}")
    seg = np.asarray(segments, dtype=np.float64)
    if seg.size == 0 and seg.ndim <= 2:
        seg = seg.reshape(0, 2)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise ValueError(f"segments: expected shape [K, 2] in grid units, got {seg.shape}")
    k = seg.shape[0]
    sc = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if sc.shape != (k,) or lab.shape != (k,):
        raise ValueError(f"scores and labels: expected shape ({k},), got {sc.shape} and {lab.shape}")
    if k and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels: expected integer class ids, got dtype {lab.dtype}")
    if ((lab < 0) | (lab >= num_classes)).any():
        raise ValueError(f"labels: expected class ids in [0, {num_classes})")
    if not np.isfinite(seg).all() or (seg[:, 1] < seg[:, 0]).any():
        raise ValueError("segments: expected finite (start, end) with start <= end")
    T = int(num_snippets)
    lo = np.clip(np.ceil(seg[:, 0] - _CEIL_EPS), 0, T).astype(np.int64)
    hi = np.clip(np.floor(seg[:, 1] + _CEIL_EPS) + 1, 0, T).astype(np.int64)
    inside = (seg[:, 1] > -0.5) & (seg[:, 0] < T - 0.5)
    nearest = np.clip(np.round(seg.mean(axis=1)), 0, T - 1).astype(np.int64)
    empty = lo >= hi
    lo = np.where(empty, nearest, lo)
    hi = np.where(empty, nearest + 1, hi)
    ranges, sc, lab = np.stack([lo, hi], axis=1)[inside], sc[inside], lab[inside].astype(np.int64)
    classes = np.unique(lab)
    results = linpro_batch(
        [(ranges[lab == c], sc[lab == c], T) for c in classes], margin=margin, penalty=penalty
    )
    dense = np.zeros((T, num_classes), dtype=np.float32)
    for c, res in zip(classes, results):
        dense[:, c] = res.y
    return dense, sum(res.relaxed for res in results)
