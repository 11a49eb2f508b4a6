"""Proposals from a hand-made CAS and their outer-inner contrast scores (raytal/postprocess/proposals.py)."""

from __future__ import annotations

import numpy as np
import pytest

from raytal.postprocess.proposals import tcam_proposals

# T = 8 snippets, C = 2 classes.
COL0 = [0.1, 0.2, 0.9, 0.8, 0.7, 0.1, 0.0, 0.6]
COL1 = [0.6, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
CAS = np.array([COL0, COL1]).T


def _rows(seg, scores, labels):
    """Proposals as sorted (label, start, end, score) tuples, order-independent comparison."""
    return sorted(zip(labels.tolist(), seg[:, 0].tolist(), seg[:, 1].tolist(), scores.tolist()))


def test_runs_and_contrast_scores_by_hand():
    seg, scores, labels = tcam_proposals(CAS, [0, 1], [0.5, 0.75], margin=0.25)
    expected = [
        # class 0, thr 0.5, snippets 2..4: inner (0.9+0.8+0.7)/3 = 0.8; m = ceil(0.75) = 1;
        # margins snippet 1 (0.2) and snippet 5 (0.1) -> outer 0.15 -> 0.65; grid [2-0.5, 5-0.5]
        (0, 1.5, 4.5, 0.65),
        # class 0, thr 0.75, snippets 2..3: inner 0.85; m = ceil(0.5) = 1; margins 0.2 and 0.7 -> 0.45 -> 0.4
        (0, 1.5, 3.5, 0.4),
        # class 0, thr 0.5, snippet 7: inner 0.6; m = 1; left margin snippet 6 (0.0), right is outside the
        # video (clipped away) -> outer 0.0 -> 0.6
        (0, 6.5, 7.5, 0.6),
        # class 1, thr 0.5, snippets 0..1: inner 0.6; m = 1; left clipped, right snippet 2 (0.0) -> 0.6
        (1, -0.5, 1.5, 0.6),
        # class 1 has nothing above 0.75
    ]
    got = _rows(seg, scores, labels)
    assert len(got) == len(expected)
    for g, e in zip(got, sorted(expected)):
        assert g[:3] == e[:3]
        assert g[3] == pytest.approx(e[3])
    assert seg.dtype == np.float64 and labels.dtype == np.int64


def test_video_score_term_and_wider_margin():
    # margin 1.0 on class 0, thr 0.5: run 2..4 has m = 3 -> margins snippets 0,1 and 5,6,7:
    # (0.1 + 0.2 + 0.1 + 0.0 + 0.6) / 5 = 0.2 -> 0.8 - 0.2 = 0.6 (0.65 with margin 0.25), plus
    # gamma * video score of class 0 = 0.2 * 0.5 = 0.1 -> 0.7.
    # run 7..7: m = ceil(1.0) = 1 -> left snippet 6 = 0.0 -> 0.6 + 0.1 = 0.7.
    seg, scores, labels = tcam_proposals(CAS, [0], [0.5], margin=1.0, video_scores=np.array([0.5, 0.9]), gamma=0.2)
    got = _rows(seg, scores, labels)
    assert [g[1:3] for g in got] == [(1.5, 4.5), (6.5, 7.5)]
    assert [g[3] for g in got] == pytest.approx([0.7, 0.7])


def test_threshold_is_strict_and_full_video_run_has_no_outer():
    cas = np.array([[0.5, 0.6, 0.7, 0.9]]).T
    seg, scores, _ = tcam_proposals(cas, [0], [0.5, 0.4])
    got = sorted(zip(seg[:, 0].tolist(), seg[:, 1].tolist(), scores.tolist()))
    # thr 0.5: snippet 0 equals the threshold -> run 1..3, inner (0.6+0.7+0.9)/3 = 2.2/3,
    #   m = ceil(0.75) = 1, left margin snippet 0 = 0.5, right clipped -> 2.2/3 - 0.5
    # thr 0.4: run 0..3 is the whole video -> no margins -> score = inner = 2.7/4
    assert [g[:2] for g in got] == [(-0.5, 3.5), (0.5, 3.5)]
    assert [g[2] for g in got] == pytest.approx([2.7 / 4, 2.2 / 3 - 0.5])


def test_empty_inputs():
    for classes, thr in (([], [0.5]), ([0], []), ([1], [0.95])):
        seg, scores, labels = tcam_proposals(CAS, classes, thr)
        assert seg.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros(5), [0], [0.5]), "cas"),
        ((CAS, [2], [0.5]), "classes"),
        ((CAS, [0.5], [0.5]), "classes"),
        ((CAS, [0], [0.5], -0.1), "margin"),
        ((CAS, [0], [0.5], 0.25, np.zeros(3)), "video_scores"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        tcam_proposals(*args)
