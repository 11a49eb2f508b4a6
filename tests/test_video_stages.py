"""The extraction's bookkeeping, on hand-built rows and files: the assembler puts a video's window features back
in order whatever order they arrive in and drops the windows of a video that failed, batches hold consecutive
videos of the input, and the input listing (directories, list files, ids)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from raytal.core.errors import InputError
from raytal.video.decode import ClipSpec
from raytal.video.rows import END, FEATURE_SCHEMA
from raytal.video.sources import VideoFile, list_videos
from raytal.video.stages import Assembler, Batches

SPEC = ClipSpec(10.0, 4, 2, (16, 16), (16, 16))
VIDEOS = [VideoFile(f"/v/{n}.mp4", 100, 1, n) for n in "abc"]


def rows(*items: tuple) -> pa.Table:
    """(key, window, feature values or None, info dict or None) -> a table of feature rows."""
    return pa.table({
        "key": pa.array([k for k, *_ in items], pa.int64()),
        "window": pa.array([w for _, w, *_ in items], pa.int32()),
        "feature": pa.array([b"" if f is None else np.asarray(f, np.float32).tobytes() for _, _, f, _ in items],
                            pa.large_binary()),
        "info": pa.array([None if i is None else json.dumps(i) for *_, i in items], pa.string()),
    }, schema=FEATURE_SCHEMA)


def end(sent: int, T: int | None = None, error: str | None = None) -> dict:
    if error:
        return {"error": error, "sent": sent}
    return {"frames": 2 * T + 2, "fps": 10.0, "duration": (2 * T + 2) / 10.0, "T": T, "warning": None, "sent": sent}


def test_windows_in_any_order_come_back_in_order_once_all_are_in():
    a = Assembler(VIDEOS, SPEC)
    # video 1's window 2 and end row come first; its windows 0 and 1 after, mixed with video 0's
    assert a.add(rows((1, 2, [2.0, 20.0], None), (1, END, None, end(3, T=3)))) == []
    assert a.add(rows((0, 0, [5.0, 50.0], None), (1, 1, [1.0, 10.0], None))) == []
    done = a.add(rows((1, 0, [0.0, 0.0], None)))
    assert [k for k, _ in done] == [1]
    got = done[0][1]
    assert got.error is None and got.features.tolist() == [[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]]
    assert (got.fps, got.duration, got.frames, got.video.video_id) == (10.0, 0.8, 8, "b")
    # nothing of video 1 is held any more; video 0 waits for its end row
    assert set(a.features) == {0} and a.ends == {}


def test_a_video_that_failed_after_sending_windows_is_an_error_and_its_windows_are_dropped():
    a = Assembler(VIDEOS, SPEC)
    assert a.add(rows((2, END, None, end(2, error="/v/c.mp4: truncated")), (2, 0, [1.0], None))) == []
    done = a.add(rows((2, 1, [1.0], None)))
    assert len(done) == 1 and done[0][1].features is None and done[0][1].error == "/v/c.mp4: truncated"
    assert a.features == {} and a.ends == {}


def test_non_finite_features_are_an_error_row():
    a = Assembler(VIDEOS, SPEC)
    (_, got), = a.add(rows((0, 0, [np.nan, 1.0], None), (0, END, None, end(1, T=1))))
    assert got.features is None and "backbone output" in got.error and "NaN/Inf" in got.error


def test_batches_are_consecutive_videos_of_the_input_whatever_order_they_finish_in():
    written = []
    b = Batches(5, 2, written.append)
    for key in [3, 0, 4, 2, 1]:  # keys 0..4 in batches [0, 1], [2, 3], [4]
        b.add(key, key)
    assert written == [[4], [2, 3], [0, 1]]
    b.finish()
    unfinished = Batches(3, 2, written.append)
    unfinished.add(0, 0)
    with pytest.raises(RuntimeError, match="1 videos unfinished"):
        unfinished.finish()


def test_inputs_from_directories_files_and_list_files(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/x.mp4", "d/sub/y.WEBM", "d/.hidden.mp4", "d/notes.txt", "z.avi", "w.mkv"]:
        (tmp_path / name).write_bytes(b"12345")
    (tmp_path / "list.txt").write_text("# my videos\nw.mkv   # relative to the list\n\n")
    found = list_videos([str(tmp_path / "d"), str(tmp_path / "z.avi")], [str(tmp_path / "list.txt")])
    assert [(v.video_id, v.size) for v in found] == [("y", 5), ("x", 5), ("w", 5), ("z", 5)]  # sorted by path
    assert found[0].path == str(tmp_path / "d" / "sub" / "y.WEBM") and found[0].mtime_ns > 0
    (tmp_path / "d" / "sub" / "x.mkv").write_bytes(b"")
    with pytest.raises(InputError, match=r"video id 'x' is also the id of .*d/sub/x\.mkv"):
        list_videos([str(tmp_path / "d")])
    with pytest.raises(InputError, match=r"notes\.txt: expected a directory, a prefix or a video file"):
        list_videos([str(tmp_path / "d" / "notes.txt")])
    with pytest.raises(InputError, match=r"missing\.mp4: video file not found"):
        list_videos([str(tmp_path / "missing.mp4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files"):
        list_videos([str(tmp_path / "empty")])
