import numpy as np
import pytest

from raytal.core.video import Video
from raytal.eval.detection import evaluate_detection
from raytal.eval.tables import format_map_table
from raytal.core.segments import SegmentTable


def table(rows, scores=True):
    """rows: (video, start, end, label[, score])."""
    return SegmentTable(
        np.array([r[0] for r in rows], dtype=object),
        np.array([(r[1], r[2]) for r in rows], dtype=np.float64).reshape(-1, 2),
        np.array([r[3] for r in rows], dtype=np.int64),
        np.array([r[4] for r in rows], dtype=np.float64) if scores else None,
    )


def ap(gt_rows, pred_rows, tious=(0.5,), **kw):
    return evaluate_detection(table(gt_rows, scores=False), table(pred_rows), tious, **kw)


@pytest.mark.parametrize("protocol", ["activitynet", "thumos14"])
def test_duplicate_detection_is_a_false_positive(protocol):
    gt = [("a", 0, 10, 0), ("a", 20, 30, 0)]
    pred = [("a", 0, 10, 0, 0.9), ("a", 0, 10, 0, 0.8), ("a", 20, 30, 0, 0.7)]
    # ranked TP, FP (duplicate: its ground truth is taken), TP; precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    # activitynet: envelope 1 on (0, 1/2], 2/3 on (1/2, 1] -> 1/2 + 1/3 = 5/6
    # thumos14: (1 + 2/3) / 2 = 5/6
    res = ap(gt, pred, protocol=protocol)
    np.testing.assert_allclose(res.mAP, [5 / 6])


def test_false_positive_first_interpolated_vs_not():
    gt = [("a", 0, 10, 0), ("a", 20, 30, 0)]
    pred = [("a", 40, 50, 0, 0.9), ("a", 0, 10, 0, 0.8), ("a", 20, 30, 0, 0.7)]
    # FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1
    # activitynet (interpolated): envelope max(1/2, 2/3) = 2/3 everywhere -> 2/3
    # thumos14 (not interpolated): (1/2 + 2/3) / 2 = 7/12
    np.testing.assert_allclose(ap(gt, pred).mAP, [2 / 3])
    np.testing.assert_allclose(ap(gt, pred, protocol="thumos14").mAP, [7 / 12])


def test_prediction_overlapping_two_ground_truths():
    gt = [("a", 0, 10, 0), ("a", 5, 15, 0)]  # g1, g2
    pred = [("a", 3, 13, 0, 0.9), ("a", 5, 14, 0, 0.8)]  # p1, p2
    # p1 vs g1: inter 7 / union 13 = .538; p1 vs g2: 8 / 12 = .667
    # p2 vs g1: 5 / 14 = .357;            p2 vs g2: 9 / 10 = .9
    # activitynet @.5 and @.6: p1 takes g2 (its best), p2 finds g2 taken and g1 at .357 -> FP.
    #   TP, FP: precision 1, 1/2 at recall 1/2, 1/2 -> AP = 1/2 at both thresholds.
    res = ap(gt, pred, tious=(0.5, 0.6))
    np.testing.assert_allclose(res.mAP, [0.5, 0.5])
    np.testing.assert_allclose(res.average_mAP, 0.5)
    # thumos14 @.5: g1 in turn takes its best free detection above .5: p1 (.538); g2 takes p2 (.9): AP 1.
    # thumos14 @.6: g1: best is .538 (not > .6) -> nothing; g2 takes p2 (.9 > .667 of p1).
    #   ranked p1 FP, p2 TP: precision 1/2 at the TP -> (1/2) / 2 = 1/4.
    res = ap(gt, pred, tious=(0.5, 0.6), protocol="thumos14")
    np.testing.assert_allclose(res.mAP, [1.0, 0.25])


def test_best_unmatched_ground_truth_is_taken_per_threshold():
    gt = [("a", 0, 10, 0), ("a", 10, 20, 0)]  # g1, g2
    pred = [("a", 2, 10, 0, 0.9), ("a", 0, 12, 0, 0.8)]
    # p1 [2,10]: g1 8/10 = .8, g2 0. p2 [0,12]: g1 10/12 = .833, g2 2/20 = .1
    # @.5: p1 takes g1; p2: g1 taken, g2 .1 < .5 -> FP. precision 1, 1/2 -> AP 1/2.
    # @.05: p1 takes g1; p2 falls back to g2 (.1 >= .05) -> TP. AP 1.
    np.testing.assert_allclose(ap(gt, pred, tious=(0.5, 0.05)).mAP, [0.5, 1.0])


def test_class_without_predictions_scores_zero_and_absent_classes_are_skipped():
    gt = [("a", 0, 10, 0), ("b", 0, 10, 1)]
    pred = [("a", 0, 10, 0, 0.9), ("a", 0, 10, 3, 0.9)]  # class 3 is not in the ground truth
    res = ap(gt, pred)
    # class 0: AP 1; class 1: no predictions -> AP 0; class 3 not evaluated. mAP = (1 + 0) / 2
    assert sorted(res.per_class_AP) == [0, 1]
    np.testing.assert_allclose(res.per_class_AP[0], [1.0])
    np.testing.assert_allclose(res.per_class_AP[1], [0.0])
    np.testing.assert_allclose(res.mAP, [0.5])
    assert any("absent from the ground truth" in w for w in res.warnings)


def test_predictions_only_match_their_own_video_and_class():
    gt = [("a", 0, 10, 0)]
    pred = [("b", 0, 10, 0, 0.9), ("a", 0, 10, 1, 0.8), ("a", 0, 10, 0, 0.7)]
    # class 0 ranking: (b) FP, (a) TP -> activitynet envelope 1/2 at recall 1 -> AP 1/2
    np.testing.assert_allclose(ap(gt, pred).mAP, [0.5])


def test_activitynet_ties_later_listed_first():
    gt = [("a", 0, 10, 0)]
    fp, tp = ("a", 20, 30, 0, 0.5), ("a", 0, 10, 0, 0.5)
    # listed FP then TP -> ranked TP, FP -> AP 1; listed TP then FP -> ranked FP, TP -> precision 1/2 -> AP 1/2
    np.testing.assert_allclose(ap(gt, [fp, tp]).mAP, [1.0])
    np.testing.assert_allclose(ap(gt, [tp, fp]).mAP, [0.5])


def test_thumos14_ties_by_sorted_video_then_listed_order():
    gt = [("b", 0, 10, 0)]
    # video 'a' sorts first, so its FP is ranked first although listed second: FP, TP -> 1/2 / 1
    pred = [("b", 0, 10, 0, 0.5), ("a", 0, 10, 0, 0.5)]
    np.testing.assert_allclose(ap(gt, pred, protocol="thumos14").mAP, [0.5])
    # activitynet on the same list: later-listed ('a', FP) first as well -> 1/2
    np.testing.assert_allclose(ap(gt, pred).mAP, [0.5])
    # listed the other way round: thumos14 still 'a' first -> 1/2; activitynet later-listed ('b', TP) first -> 1
    np.testing.assert_allclose(ap(gt, pred[::-1], protocol="thumos14").mAP, [0.5])
    np.testing.assert_allclose(ap(gt, pred[::-1]).mAP, [1.0])
    # same video: listed order -> FP listed first is ranked first -> 1/2
    same = [("b", 20, 30, 0, 0.5), ("b", 0, 10, 0, 0.5)]
    np.testing.assert_allclose(ap(gt, same, protocol="thumos14").mAP, [0.5])


def test_threshold_equality_inclusive_vs_strict():
    gt = [("a", 0, 10, 0)]
    pred = [("a", 0, 5, 0, 0.9)]  # tIoU 5 / 10 = 0.5 exactly
    np.testing.assert_allclose(ap(gt, pred).mAP, [1.0])  # activitynet: >= 0.5
    np.testing.assert_allclose(ap(gt, pred, protocol="thumos14").mAP, [0.0])  # thumos14: > 0.5


def test_thumos14_ambiguous_detections_are_ignored():
    gt = [("a", 0, 10, 0)]
    amb = table([("a", 22, 30, 0)], scores=False)
    pred = [("a", 20, 25, 0, 0.9), ("a", 0, 10, 0, 0.8), ("a", 30, 35, 0, 0.7)]
    # [20,25] overlaps the ambiguous [22,30] -> ignored; [30,35] only touches it (intersection 0) -> FP.
    # ranked: (ignored), TP, FP -> precision 1 at the TP -> AP 1. Without ambiguous: FP, TP -> 1/2.
    res = evaluate_detection(table(gt, False), table(pred), [0.5], protocol="thumos14", ambiguous=amb)
    np.testing.assert_allclose(res.mAP, [1.0])
    res = evaluate_detection(table(gt, False), table(pred), [0.5], protocol="thumos14")
    np.testing.assert_allclose(res.mAP, [0.5])
    # activitynet ignores the ambiguous intervals and says so
    res = evaluate_detection(table(gt, False), table(pred), [0.5], ambiguous=amb)
    assert any("ambiguous" in w for w in res.warnings)


@pytest.mark.parametrize("protocol", ["activitynet", "thumos14"])
def test_zero_length_ground_truth_rule(protocol):
    gt = [("a", 5, 5, 0), ("a", 0, 10, 0)]
    pred = [("a", 5, 5, 0, 0.9), ("a", 0, 10, 0, 0.8)]
    # the zero-length ground truth is removed (npos 1); the zero-length prediction overlaps nothing -> FP.
    # ranked FP, TP: precision 1/2 at recall 1 -> AP 1/2 under both protocols (one TP).
    res = ap(gt, pred, protocol=protocol)
    assert np.all(np.isfinite(res.mAP))
    np.testing.assert_allclose(res.mAP, [0.5])
    assert any("1 zero-length" in w for w in res.warnings)


def test_from_videos_and_predictions_round_trip():
    v = Video("v1", "test", 20.0, 30.0, 4, 16, segments=np.array([[1.0, 5.0]]), labels=np.array([2]))
    w = Video("v2", "test", 20.0, 30.0, 4, 16)
    gt = SegmentTable.from_videos([v, w])
    assert gt.video.tolist() == ["v1"] and gt.scores is None
    pred = SegmentTable.from_predictions(
        ["v1", "v2"],
        [
            {"segments": np.array([[1.0, 5.0]]), "scores": np.array([0.3]), "labels": np.array([2])},
            {"segments": np.zeros((0, 2)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)},
        ],
    )
    res = evaluate_detection(gt, pred, [0.5, 0.7])
    np.testing.assert_allclose(res.mAP, [1.0, 1.0])


def test_to_json_and_table():
    res = ap([("a", 0, 10, 0), ("a", 20, 30, 1)], [("a", 0, 10, 0, 0.9)], tious=(0.3, 0.5))
    js = res.to_json(["run", "jump"])
    assert js == {
        "mAP": {"0.3": 0.5, "0.5": 0.5},
        "average_mAP": 0.5,
        "per_class_AP": {"run": {"0.3": 1.0, "0.5": 1.0}, "jump": {"0.3": 0.0, "0.5": 0.0}},
    }
    text = format_map_table({"mine": res})
    assert text.splitlines()[0] == "| method | mAP@0.3 | mAP@0.5 | avg |"
    assert text.splitlines()[2] == "| mine | 50.0 | 50.0 | 50.0 |"


def test_bad_input_is_a_clear_error():
    gt = table([("a", 0, 10, 0)], scores=False)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_detection(gt, table([("a", 0, 10, 0, 1.0)]), protocol="voc")
    with pytest.raises(ValueError, match="tious"):
        evaluate_detection(gt, table([("a", 0, 10, 0, 1.0)]), tious=[1.5])
    with pytest.raises(ValueError, match="scores"):
        evaluate_detection(gt, gt)
    with pytest.raises(ValueError, match="end < start"):
        evaluate_detection(gt, table([("a", 10, 0, 0, 1.0)]))


def test_empty_predictions_score_zero():
    gt = table([("a", 0, 10, 0)], scores=False)
    res = evaluate_detection(gt, SegmentTable.empty(with_scores=True), [0.5])
    np.testing.assert_allclose(res.mAP, [0.0])


def _loop_references():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_eval  # the benchmark's straightforward per-prediction loop implementations

    return bench_eval


@pytest.mark.parametrize("protocol", ["activitynet", "thumos14"])
def test_matches_loop_reference_and_block_sizes_do_not_matter(protocol, monkeypatch):
    """Random case with many ties against the benchmark's per-prediction loop references; then again
    with tiny pair blocks, AP chunks and the binary-search (non-dense) group lookup."""
    import raytal.eval.detection as det

    bench = _loop_references()
    gt, pred, amb = bench.synthetic(n_videos=25, n_classes=6, per_video=30, seed=3)
    tious = np.array([0.1, 0.3, 0.5, 0.7])
    if protocol == "activitynet":
        ref = bench.reference_activitynet(gt, pred, tious)
        kw = {}
    else:
        ref = bench.reference_thumos14(gt, pred, amb, tious)
        kw = {"ambiguous": amb}
    res = evaluate_detection(gt, pred, tious, protocol=protocol, **kw)
    assert sorted(res.per_class_AP) == sorted(ref)
    for c in ref:
        np.testing.assert_allclose(res.per_class_AP[c], ref[c], rtol=0, atol=1e-12)
    monkeypatch.setattr(det, "_PAIR_BLOCK", 7)
    monkeypatch.setattr(det, "_AP_CHUNK", 5)
    monkeypatch.setattr(det, "_DENSE_GROUPS", 0)
    small = evaluate_detection(gt, pred, tious, protocol=protocol, **kw)
    np.testing.assert_array_equal(small.mAP, res.mAP)
