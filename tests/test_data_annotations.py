import json

import numpy as np
import pytest

from raytal.data.annotations import Annotations, load_annotations, save_annotations
from raytal.core.errors import DataError
from raytal.core.video import Video


def write(tmp_path, obj, name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


def af_file(**overrides):
    """ActionFormer dialect: two videos, classes b (id 0) and a (id 1)."""
    db = {
        "v1": {
            "subset": "Validation",
            "duration": 10.0,
            "fps": 30.0,
            "annotations": [
                {"label": "b", "segment": [1.0, 2.5], "label_id": 0},
                {"label": "a", "segment": [3.0, 9.0], "label_id": 1},
            ],
        },
        "v2": {"subset": "Test", "duration": 5.0, "fps": 25.0, "annotations": []},
    }
    db["v1"].update(overrides)
    return {"version": "x", "database": db}


def test_actionformer_dialect(tmp_path):
    ann = load_annotations(write(tmp_path, af_file()), feat_stride=4, num_frames=16)
    # ids come from label_id: id 0 = "b", id 1 = "a" (not alphabetical)
    assert ann.classes == ["b", "a"]
    v1 = ann.videos["v1"]
    np.testing.assert_array_equal(v1.segments, [[1.0, 2.5], [3.0, 9.0]])
    np.testing.assert_array_equal(v1.labels, [0, 1])
    assert (v1.fps, v1.duration, v1.subset, v1.feat_stride, v1.num_frames) == (30.0, 10.0, "Validation", 4, 16)
    assert v1.features is None and v1.labeled
    assert ann.videos["v2"].segments.shape == (0, 2)
    assert ann.subsets() == ["Validation", "Test"]
    assert ann.warnings == []


def test_official_activitynet_dialect(tmp_path):
    obj = {
        "version": "VERSION 1.3",
        "taxonomy": [
            {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
            {"nodeId": 1, "nodeName": "Sports", "parentId": 0, "parentName": "Root"},
            {"nodeId": 2, "nodeName": "Skiing", "parentId": 1, "parentName": "Sports"},
            {"nodeId": 3, "nodeName": "Rafting", "parentId": 1, "parentName": "Sports"},
            {"nodeId": 4, "nodeName": "Cooking", "parentId": 0, "parentName": "Root"},
        ],
        "database": {
            "abc": {
                "subset": "training",
                "duration": 100.0,
                "resolution": "640x360",
                "url": "https://www.youtube.com/watch?v=abc",
                "annotations": [{"label": "Skiing", "segment": [10.0, 20.0]}],
            },
            "def": {"subset": "testing", "duration": 50.0, "annotations": []},
        },
    }
    ann = load_annotations(write(tmp_path, obj), default_fps=29.97)
    # leaves of the taxonomy, sorted: Cooking, Rafting, Skiing (Root and Sports are parents)
    assert ann.classes == ["Cooking", "Rafting", "Skiing"]
    np.testing.assert_array_equal(ann.videos["abc"].labels, [2])
    assert ann.videos["abc"].fps == 29.97
    # without a default fps the missing field is named
    with pytest.raises(DataError, match=r"video 'abc'.*field 'fps'.*missing"):
        load_annotations(write(tmp_path, obj))


def test_no_ids_no_taxonomy_sorted_labels(tmp_path):
    obj = {"database": {"v": {"subset": "train", "duration": 9.0, "fps": 10, "annotations": [
        {"label": "zeta", "segment": [0, 1]}, {"label": "alpha", "segment": [2, 3]}]}}}
    ann = load_annotations(write(tmp_path, obj))
    assert ann.classes == ["alpha", "zeta"]
    np.testing.assert_array_equal(ann.videos["v"].labels, [1, 0])


def test_fixed_class_list_and_unknown_label(tmp_path):
    p = write(tmp_path, af_file())
    ann = load_annotations(p, classes=["a", "b", "c"])
    np.testing.assert_array_equal(ann.videos["v1"].labels, [1, 0])  # b -> 1, a -> 0
    # a label outside a given class list is a real defect: an error in both modes
    for strict in (True, False):
        with pytest.raises(DataError, match=r"ann.json: video 'v1': field 'annotations\[0\].label'.*'b' is not in"):
            load_annotations(p, classes=["a"], strict=strict)


def test_end_before_start_is_an_error_zero_length_is_fixed(tmp_path):
    anns = [
        {"label": "a", "segment": [2.0, 2.0], "label_id": 0},
        {"label": "a", "segment": [6.0, 7.0], "label_id": 0},
    ]
    p = write(tmp_path, af_file(annotations=anns))
    ann = load_annotations(p)
    assert len(ann.warnings) == 1 and "annotations[0].segment" in ann.warnings[0] and "zero-length" in ann.warnings[0]
    assert ann.warnings[0].endswith("; dropped")
    assert ann.fixes == {"zero_length": 1, "clipped": 0, "past_end": 0, "unannotated": 0}
    assert ann.fix_summary() == ("1 annotation problems fixed: 1 zero-length segments dropped, 0 segments clipped "
                                 "to the duration, 0 segments past the duration dropped, 0 videos without "
                                 "annotations dropped")
    np.testing.assert_array_equal(ann.videos["v1"].segments, [[6.0, 7.0]])
    with pytest.raises(DataError, match=r"video 'v1': field 'annotations\[0\].segment': zero-length") as err:
        load_annotations(p, strict=True)
    assert "dropped" not in str(err.value)  # strict refuses: it must not describe a fix it did not make
    anns[1]["segment"] = [5.0, 4.0]
    p = write(tmp_path, af_file(annotations=anns))
    for strict in (True, False):
        with pytest.raises(DataError, match=r"video 'v1': field 'annotations\[1\].segment'.*end 4.0 < start 5.0"):
            load_annotations(p, strict=strict)


def test_outside_duration(tmp_path):
    anns = [
        {"label": "a", "segment": [8.0, 12.0], "label_id": 0},  # past duration 10 -> clipped to [8, 10]
        {"label": "a", "segment": [11.0, 12.0], "label_id": 0},  # wholly past the end -> dropped
        {"label": "a", "segment": [-0.01, 10.02], "label_id": 0},  # inside 0.05 s tolerance -> [0, 10] silently
    ]
    p = write(tmp_path, af_file(annotations=anns))
    ann = load_annotations(p)
    assert len(ann.warnings) == 2
    assert "annotations[0].segment" in ann.warnings[0] and ann.warnings[0].endswith("clipped to [8.0, 10.0]")
    assert "annotations[1].segment" in ann.warnings[1] and ann.warnings[1].endswith("; dropped")
    assert ann.fixes == {"zero_length": 0, "clipped": 1, "past_end": 1, "unannotated": 0}
    np.testing.assert_array_equal(ann.videos["v1"].segments, [[8.0, 10.0], [0.0, 10.0]])
    # strict: ONE error that names every offending segment
    with pytest.raises(DataError, match=r"2 annotation problems \(strict mode") as err:
        load_annotations(p, strict=True)
    msg = str(err.value)
    assert "video 'v1': field 'annotations[0].segment'" in msg and "video 'v1': field 'annotations[1].segment'" in msg
    assert "annotations[2]" not in msg
    # a start before 0 (beyond the tolerance) is a real defect
    anns[2]["segment"] = [-3.0, 2.0]
    with pytest.raises(DataError, match=r"field 'annotations\[2\].segment'.*starts before 0"):
        load_annotations(write(tmp_path, af_file(annotations=anns)))


def test_unannotated_videos_of_a_labeled_subset_are_dropped(tmp_path):
    obj = af_file()
    db = obj["database"]
    db["v3"] = {"subset": "Validation", "duration": 4.0, "fps": 30.0, "annotations": []}  # labeled subset
    db["v4"] = {"subset": "Validation", "duration": 4.0, "fps": 30.0,
                "annotations": [{"label": "a", "segment": [1.0, 1.0], "label_id": 1}]}  # emptied by a fix
    p = write(tmp_path, obj)
    ann = load_annotations(p)
    # v2 (Test: no video there has annotations, an unlabeled subset) stays; v3 and v4 go.
    assert list(ann.videos) == ["v1", "v2"]
    assert ann.fixes == {"zero_length": 1, "clipped": 0, "past_end": 0, "unannotated": 2}
    assert sum("video dropped" in w for w in ann.warnings) == 2
    assert any("video 'v3': field 'annotations'" in w for w in ann.warnings)
    assert list(load_annotations(p, drop_unannotated=False).videos) == ["v1", "v2", "v3", "v4"]
    with pytest.raises(DataError, match=r"2 annotation problems") as err:
        load_annotations(p, strict=True)
    assert "video 'v3': field 'annotations'" in str(err.value) and "video 'v4'" in str(err.value)


def test_duplicate_video_id(tmp_path):
    text = (
        '{"database": {"v1": {"subset": "s", "duration": 3, "fps": 1, "annotations": []},'
        ' "v1": {"subset": "s", "duration": 4, "fps": 1, "annotations": []}}}'
    )
    with pytest.raises(DataError, match=r"ann.json: video 'v1'.*duplicate video id"):
        load_annotations(write(tmp_path, text))


@pytest.mark.parametrize("field", ["subset", "duration", "annotations"])
def test_missing_video_field(tmp_path, field):
    obj = af_file()
    del obj["database"]["v1"][field]
    with pytest.raises(DataError, match=rf"video 'v1': field '{field}': missing"):
        load_annotations(write(tmp_path, obj))


def test_missing_or_bad_annotation_fields(tmp_path):
    p = write(tmp_path, af_file(annotations=[{"segment": [1, 2], "label_id": 0}]))
    with pytest.raises(DataError, match=r"field 'annotations\[0\].label'"):
        load_annotations(p)
    p = write(tmp_path, af_file(annotations=[{"label": "a", "segment": [1], "label_id": 0}]))
    with pytest.raises(DataError, match=r"field 'annotations\[0\].segment'"):
        load_annotations(p)
    p = write(tmp_path, af_file(duration=-1))
    with pytest.raises(DataError, match=r"field 'duration'"):
        load_annotations(p)


def test_inconsistent_label_id(tmp_path):
    anns = [{"label": "a", "segment": [1, 2], "label_id": 0}, {"label": "a", "segment": [3, 4], "label_id": 1}]
    with pytest.raises(DataError, match=r"field 'annotations\[1\].label_id'.*contradicts"):
        load_annotations(write(tmp_path, af_file(annotations=anns)))


def test_bad_json_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="not valid JSON"):
        load_annotations(write(tmp_path, '{"database": '))
    with pytest.raises(DataError, match="not found"):
        load_annotations(tmp_path / "nope.json")


def test_video_id_with_path_separator_refused(tmp_path):
    obj = {"database": {"../x": {"subset": "s", "duration": 3, "fps": 1, "annotations": []}}}
    with pytest.raises(DataError, match="plain file name"):
        load_annotations(write(tmp_path, obj))


def test_save_round_trip(tmp_path):
    v = Video("v", "train", 12.5, 30.0, 4, 16, segments=np.array([[0.1, 2.0], [3.0, 1 / 3 + 4]]),
              labels=np.array([1, 0]))
    save_annotations(tmp_path / "out.json", Annotations(["x", "y"], {"v": v}))
    raw = json.loads((tmp_path / "out.json").read_text())
    assert raw["database"]["v"]["annotations"][0] == {"label": "y", "segment": [0.1, 2.0], "label_id": 1}
    back = load_annotations(tmp_path / "out.json")
    assert back.classes == ["x", "y"]
    np.testing.assert_array_equal(back.videos["v"].segments, v.segments)  # exact floats
    np.testing.assert_array_equal(back.videos["v"].labels, [1, 0])


def test_real_thumos14_file_loads_non_strict(shared_data):
    path = shared_data("thumos14.json")
    ann = load_annotations(path)
    assert len(ann.classes) == 20 and len(ann.videos) == 412
    # 6,365 instances; 30 start after their video's end (5 videos): all 30 dropped, each warned about once
    assert len(ann.warnings) == 30 and ann.fixes["past_end"] == 30 and sum(ann.fixes.values()) == 30
    assert sum(len(v.labels) for v in ann.videos.values()) == 6365 - 30
    with pytest.raises(DataError, match="30 annotation problems") as err:
        load_annotations(path, strict=True)
    assert str(err.value).count("starts at or after the end of the video") == 30
