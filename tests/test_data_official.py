"""A TAL researcher's own files: an official-dialect annotation file (ActivityNet 1.3: ``taxonomy``, no
``fps``, no ``label_id``) with the benign defects real files have, plus tiny .npy features, converted
by ``jobs/make_dataset.py``: fixed with one warning each and a summary count by default, refused
with ``--strict`` naming every offending video and field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from raytal.cli import run_job
from raytal.data.shards import read_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import make_dataset  # noqa: E402

FPS, STRIDE, FRAMES, D = 15.0, 16, 16, 8  # ActionFormer's ActivityNet TSP grid: 15 fps, 16-frame steps
DURATION = 20.0
# 20 s at 15 fps = 300 frames: floor((300 - 16) / 16) + 1 = 18 snippets, which cover grid positions up
# to 17 + 0.5 * 16 / 16 = 17.5; a segment ending at 20 s sits at (20 * 15 - 8) / 16 = 18.25, inside the
# one-snippet tolerance, so the clipped segment below fits the features.
T = 18


def official_file() -> dict:
    def video(subset: str, segs: list[tuple[str, float, float]]) -> dict:
        return {"subset": subset, "duration": DURATION, "resolution": "640x360",
                "url": "https://www.youtube.com/watch?v=x",
                "annotations": [{"label": lab, "segment": [s, e]} for lab, s, e in segs]}

    return {
        "version": "VERSION 1.3",
        "taxonomy": [
            {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
            {"nodeId": 1, "nodeName": "Sports", "parentId": 0, "parentName": "Root"},
            {"nodeId": 2, "nodeName": "Throw", "parentId": 1, "parentName": "Sports"},
            {"nodeId": 3, "nodeName": "Jump", "parentId": 1, "parentName": "Sports"},
        ],
        "database": {
            "vidA": video("training", [("Jump", 2.0, 5.0), ("Throw", 7.0, 7.0)]),  # [1]: zero length
            "vidB": video("training", [("Throw", 12.0, 23.5)]),  # ends 3.5 s past the video
            "vidC": video("training", []),  # no annotation in a labeled subset
            "vidD": video("validation", [("Jump", 1.0, 4.0)]),
            "vidE": video("testing", []),  # ActivityNet's test subset has no annotations at all: kept
        },
    }


def convert(tmp_path: Path, *extra: str) -> int:
    ann = tmp_path / "activity_net.v1-3.min.json"
    ann.write_text(json.dumps(official_file()))
    feats = tmp_path / "features"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for vid in official_file()["database"]:
        np.save(feats / f"{vid}.npy", rng.standard_normal((T, D)).astype(np.float32))
    return run_job(make_dataset.main, ["--annotations", str(ann), "--features", str(feats), "--fps", str(FPS),
                              "--feat-stride", str(STRIDE), "--num-frames", str(FRAMES),
                              "--out", str(tmp_path / "out"), *extra])


def test_official_file_converts_with_one_warning_per_fix(tmp_path, capsys):
    assert convert(tmp_path) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, err
    assert "video 'vidA': field 'annotations[1].segment': zero-length segment [7.0, 7.0]; dropped" in warnings[0]
    assert "video 'vidB': field 'annotations[0].segment'" in warnings[1]
    assert warnings[1].endswith("clipped to [12.0, 20.0]")
    assert "video 'vidC': field 'annotations'" in warnings[2] and warnings[2].endswith("video dropped")
    assert ("3 annotation problems fixed: 1 zero-length segments dropped, 1 segments clipped to the duration, "
            "0 segments past the duration dropped, 1 videos without annotations dropped") in err

    out = tmp_path / "out"
    info = yaml.safe_load((out / "dataset.yaml").read_text())
    # classes: the taxonomy's leaves, sorted; subsets: the official training/validation pair
    assert info["classes"] == ["Jump", "Throw"]
    assert (info["train_subset"], info["test_subset"], info["feature_dim"]) == ("training", "validation", D)
    vids = {v.video_id: v for v in read_shards(out / "shards")}
    assert sorted(vids) == ["vidA", "vidB", "vidD", "vidE"]  # vidC dropped, the unannotated test video kept
    np.testing.assert_array_equal(vids["vidA"].segments, [[2.0, 5.0]])
    np.testing.assert_array_equal(vids["vidA"].labels, [0])
    np.testing.assert_array_equal(vids["vidB"].segments, [[12.0, DURATION]])
    np.testing.assert_array_equal(vids["vidB"].labels, [1])
    assert vids["vidE"].subset == "testing" and len(vids["vidE"].segments) == 0
    assert all(v.fps == FPS and v.features.shape == (T, D) for v in vids.values())


def test_strict_refuses_naming_every_problem(tmp_path, capsys):
    assert convert(tmp_path, "--strict") == 2
    err = capsys.readouterr().err
    assert "3 annotation problems (strict mode" in err
    for text in ("video 'vidA': field 'annotations[1].segment': zero-length segment [7.0, 7.0]",
                 "video 'vidB': field 'annotations[0].segment': [12.0, 23.5] ends after the end of the video",
                 "video 'vidC': field 'annotations': no annotations"):
        assert text in err
    assert "dropped" not in err and "clipped" not in err  # nothing was fixed, so nothing says so
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "dataset.yaml").exists()


@pytest.mark.parametrize("defect, expected", [
    ({"label": "Fly", "segment": [1.0, 2.0]}, "field 'annotations[0].label': label 'Fly' is not in the class list"),
    ({"label": "Jump", "segment": [1.0, "2"]}, "field 'annotations[0].segment': expected a number, got '2'"),
])
def test_real_defects_are_errors_in_both_modes(tmp_path, capsys, defect, expected):
    obj = official_file()
    obj["database"]["vidD"]["annotations"] = [defect]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(obj))
    for extra in ([], ["--strict"]):
        rc = run_job(make_dataset.main, ["--annotations", str(ann), "--features", str(tmp_path / "features"),
                                         "--fps", str(FPS), "--feat-stride", str(STRIDE), "--num-frames", str(FRAMES),
                                         "--out", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and "ann.json: video 'vidD': " + expected in err
