"""The stage ledger records paths inside the run directory relative to it, so a moved run resumes on its own files."""

from __future__ import annotations

import json
import shutil

from raytal.selftrain.ledger import StageLog


def test_run_paths_are_relative_and_follow_a_moved_run(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    log = StageLog(old / "stages.json")
    result = {"final": str(old / "round_0" / "train" / "final.pt"), "teacher": "/elsewhere/t.pt", "n": 3,
              "parts": [str(old / "round_1" / "pseudo"), str(tmp_path / "older" / "x.pt")]}
    assert log.run("round_0/train", lambda: result) == result  # a fresh run returns the absolute paths
    stored = json.loads((old / "stages.json").read_text())["stages"]["round_0/train"]["result"]
    assert stored == {"final": "$RUN/round_0/train/final.pt", "teacher": "/elsewhere/t.pt", "n": 3,
                      "parts": ["$RUN/round_1/pseudo", str(tmp_path / "older" / "x.pt")]}
    shutil.move(old, new)
    moved = StageLog(new / "stages.json")
    assert moved.run("round_0/train", lambda: 1 / 0) == {  # finished: not run again
        "final": str(new / "round_0" / "train" / "final.pt"), "teacher": "/elsewhere/t.pt", "n": 3,
        "parts": [str(new / "round_1" / "pseudo"), str(tmp_path / "older" / "x.pt")]}


def test_a_ledger_of_absolute_paths_still_reads(tmp_path):
    (tmp_path / "stages.json").write_text(json.dumps(
        {"stages": {"round_0/train": {"result": "/a/b/final.pt", "seconds": 1.5, "finished": 0}}}))
    assert StageLog(tmp_path / "stages.json").result("round_0/train") == "/a/b/final.pt"
