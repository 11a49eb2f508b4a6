"""The evaluator on real third-party files (issue 13): <shared data>/external (see its README)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from raytal.cli import run_job
from raytal.core.errors import DataError
from raytal.eval.detection import evaluate_detection
from raytal.core.segments import SegmentTable
from raytal.eval.thumos14 import load_thumos14_annotations, load_thumos14_detections
from conftest import SHARED_DATA_ENV, shared_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import evaluate  # noqa: E402

EXT = shared_data_dir() / "external"
TH = EXT / "thumos14"
TURN = TH / "turn_tap"
ANET_SAMPLE = EXT / "anet" / "sample_detection_prediction.json"

# Only the tests that read these files skip without them; the others run everywhere.
needs_external = pytest.mark.skipif(
    not EXT.is_dir(), reason=f"third-party evaluation data {EXT} not found (set {SHARED_DATA_ENV})")

# Published TURN mAP (%), THUMOS14 official kit, each file at its own tIoU (external README).
PUBLISHED = [
    ("TURN-FLOW-16_SCNN_thumos14_iou0.1.txt", 0.1, 54.0),
    ("TURN-FLOW-16_SCNN_thumos14_iou0.2.txt", 0.2, 50.9),
    ("TURN-FLOW-16_SCNN_thumos14_iou0.3.txt", 0.3, 44.1),
    ("TURN-FLOW-16_SCNN_thumos14_iou0.4.txt", 0.4, 34.9),
    ("TURN-FLOW-16_SCNN_thumos14_iou0.5.txt", 0.5, 25.6),
    ("TURN-C3D-16_SCNN_thumos14_iou0.5.txt", 0.5, 22.5),
]


@pytest.fixture(scope="module")
def official():
    return load_thumos14_annotations(TH / "gt_official_test")


@needs_external
def test_official_annotations_load(official):
    classes, gt, amb = official
    # README: 3,358 instances in 212 videos, 20 classes; Ambiguous_test.txt has 99 lines
    assert len(classes) == 20 and classes[0] == "BaseballPitch" and classes[-1] == "VolleyballSpiking"
    assert len(gt) == 3358 and len(set(gt.video.tolist())) == 212
    assert len(amb) == 99


@needs_external
@pytest.mark.parametrize("name,tiou,published", PUBLISHED)
def test_turn_reproduces_published_thumos14_numbers(official, name, tiou, published):
    classes, gt, amb = official
    pred = load_thumos14_detections(TURN / name, classes)
    res = evaluate_detection(gt, pred, [tiou], protocol="thumos14", ambiguous=amb)
    assert abs(100 * res.mAP[0] - published) <= 0.1


@needs_external
def test_anet_sample_against_itself_perfect_except_zero_length():
    results = json.loads(ANET_SAMPLE.read_text())["results"]
    classes = sorted({a["label"] for dets in results.values() for a in dets})
    pred = evaluate.load_predictions(ANET_SAMPLE, classes, set(results)).table
    gt = SegmentTable(pred.video, pred.segments, pred.labels)
    tious = np.linspace(0.5, 0.95, 10)
    res = evaluate_detection(gt, pred, tious)

    # Rule: zero-length ground truth is removed, a zero-length prediction is a false positive; every
    # other prediction equals its ground truth (tIoU 1) and is a true positive. All scores are 1.0, so
    # activitynet ranks later-listed first: the zero-length one has rank r = 1 + #same-class rows after it.
    # With n predictions of the class (n - 1 positives): TPs before rank r have precision 1; a TP at
    # rank k > r has precision (k-1)/k, whose envelope is its largest value (n-1)/n. So
    # AP = (r-1)/(n-1) * 1 + (n-r)/(n-1) * (n-1)/n = (r-1)/(n-1) + (n-r)/n.
    flat = [(vid, a) for vid, dets in results.items() for a in dets]
    expected = {}
    for pos, (vid, a) in enumerate(flat):
        if a["segment"][1] == a["segment"][0]:
            same = [b for _, b in flat if b["label"] == a["label"]]
            after = sum(1 for _, b in flat[pos + 1 :] if b["label"] == a["label"])
            n, r = len(same), 1 + after
            expected[classes.index(a["label"])] = (r - 1) / (n - 1) + (n - r) / n
    assert len(expected) == 3
    assert sum("3 zero-length" in w for w in res.warnings) == 1
    for c, ap in res.per_class_AP.items():
        np.testing.assert_allclose(ap, np.full(len(tious), expected.get(c, 1.0)), rtol=0, atol=1e-12)
    want = (len(classes) - 3 + sum(expected.values())) / len(classes)
    np.testing.assert_allclose(res.mAP, want, rtol=0, atol=1e-12)


@needs_external
def test_detad_json_and_txt_annotations_identical(official):
    txt = evaluate.load_ground_truth(TH / "gt_official_test")
    js = evaluate.load_ground_truth(TH / "detad_thumos14_test_extra_characteristics.json")
    assert txt.classes == js.classes
    key = lambda t: sorted(zip(t.video.tolist(), t.labels.tolist(), t.segments[:, 0], t.segments[:, 1]))  # noqa: E731
    assert key(txt.table) == key(js.table)
    pred = load_thumos14_detections(TURN / "TURN-FLOW-16_SCNN_thumos14_iou0.5.txt", txt.classes)
    pred = pred.select(pred.video != "video_test_0001292")  # only in Ambiguous_test.txt, not in DETAD
    for protocol in ("activitynet", "thumos14"):
        a = evaluate_detection(txt.table, pred, [0.3, 0.5, 0.7], protocol=protocol)
        b = evaluate_detection(js.table, pred, [0.3, 0.5, 0.7], protocol=protocol)
        np.testing.assert_array_equal(a.mAP, b.mAP)


@needs_external
def test_cli_json_matches_published(capsys):
    rc = evaluate.main(
        ["--gt", str(TH / "gt_official_test"), "--pred", str(TURN / PUBLISHED[4][0]),
         "--protocol", "thumos14", "--tiou", "0.5", "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(100 * out["mAP"]["0.5"] - 25.6) <= 0.1
    assert set(out["per_class_AP"]) == set(load_thumos14_annotations(TH / "gt_official_test")[0])


@needs_external
def test_cli_unknown_video_names_file_video_field(capsys):
    rc = run_job(
        evaluate.main,
        ["--gt", str(TH / "detad_thumos14_test_extra_characteristics.json"), "--pred", str(TURN / PUBLISHED[4][0])],
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert PUBLISHED[4][0] in err and "video 'video_test_0001292'" in err and "unknown video" in err


@needs_external
def test_detection_txt_errors(tmp_path, official):
    classes = official[0]
    bad_id = tmp_path / "d.txt"
    bad_id.write_text("video_test_0000004 1.0 2.0 7 0.5\nvideo_test_0000004 1.0 2.0 5 0.5\n")
    with pytest.raises(DataError, match=r"d\.txt: video 'video_test_0000004': field 'line 2: class_id'"):
        load_thumos14_detections(bad_id, classes)
    short = tmp_path / "s.txt"
    short.write_text("video_test_0000004 1.0 2.0 7\n")
    with pytest.raises(DataError, match="expected 5 fields"):
        load_thumos14_detections(short, classes)
    unknown = tmp_path / "u.txt"
    unknown.write_text("video_x 1.0 2.0 7 0.5\n")
    with pytest.raises(DataError, match="video 'video_x'.*unknown video"):
        load_thumos14_detections(unknown, classes, known_videos={"video_test_0000004"})
    # a valid file (blank lines skipped): BaseballPitch (THUMOS id 7) is class 0
    ok = tmp_path / "ok.txt"
    ok.write_text("\nvideo_test_0000004 1.0 2.0 7 0.5\n")
    table = load_thumos14_detections(ok, classes)
    assert table.labels.tolist() == [0] and table.scores.tolist() == [0.5]


def test_annotation_txt_errors(tmp_path):
    (tmp_path / "Run_test.txt").write_text("v1 1.0 2.0\nv1 5.0 4.0\n")
    with pytest.raises(DataError, match=r"Run_test\.txt: video 'v1': field 'line 2'.*end 4\.0 < start 5\.0"):
        load_thumos14_annotations(tmp_path)
    with pytest.raises(DataError, match="no '<Class>_val.txt'"):
        load_thumos14_annotations(tmp_path, subset="val")


def test_results_json_unknown_label(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"results": {"v1": [{"label": "Fly", "segment": [1, 2], "score": 0.5}]}}))
    with pytest.raises(DataError, match=r"r\.json: video 'v1': field 'results\[0\]\.label'"):
        evaluate.load_predictions(p, ["Run"], {"v1"})
    with pytest.raises(DataError, match="video 'v1'.*unknown video"):
        evaluate.load_predictions(p, ["Fly"], {"v2"})


def test_parse_tious():
    assert evaluate.parse_tious("0.3:0.1:0.7") == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert evaluate.parse_tious("0.5,0.75") == [0.5, 0.75]
    with pytest.raises(ValueError, match="--tiou"):
        evaluate.parse_tious("0.5:x")


def test_cli_activitynet_json_ground_truth(tmp_path, capsys):
    gt = {
        "database": {
            "v1": {"subset": "validation", "duration": 50.0, "fps": 25.0,
                   "annotations": [{"label": "Run", "segment": [10.0, 20.0]}, {"label": "Jump", "segment": [30.0, 40.0]}]},
            "v2": {"subset": "training", "duration": 50.0, "fps": 25.0,
                   "annotations": [{"label": "Run", "segment": [0.0, 5.0]}]},
        }
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    pred = {"results": {"v1": [{"label": "Run", "segment": [10.0, 20.0], "score": 0.9},
                               {"label": "Jump", "segment": [0.0, 5.0], "score": 0.8}]}}
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    args = ["--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"), "--subset", "validation"]
    assert evaluate.main(args + ["--tiou", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # validation subset: Run matched exactly (AP 1); Jump's only prediction misses (AP 0) -> mAP 1/2
    assert out["mAP"] == {"0.5": 0.5}
    assert out["per_class_AP"] == {"Jump": {"0.5": 0.0}, "Run": {"0.5": 1.0}}
    assert evaluate.main(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| method | mAP@0.3 |") and table[2].startswith("| pred.json | 50.0 |")
    # with --subset training only v2 is known, so the predictions' v1 is an unknown video
    assert run_job(evaluate.main, args[:4] + ["--subset", "training"]) == 2
    assert "video 'v1'" in capsys.readouterr().err
