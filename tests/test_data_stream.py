"""The training streams' read side (raytal.data.stream.TrainingRows), their seeded passes and the in-process
stage streams (raytal.selftrain.training_data)."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytal.config import load_config
from raytal.core.errors import DataError
from raytal.core.video import Video
from raytal.data.index import Source
from raytal.data.pseudo_io import PSEUDO_SCHEMA, pseudo_row
from raytal.data.shards import write_shards
from raytal.data.stream import FileShare, TrainingRows, held, passes, read_file_rows
from raytal.selftrain import training_data
from raytal.selftrain.spec import PseudoSource, TrainSpec
from raytal.selftrain.training_data import local_streams, stage_streams, training_videos


def _video(vid: str, T: int = 6) -> Video:
    return Video(vid, "train", float(T), 1.0, 1, 1, features=np.full((T, 2), float(len(vid)), np.float32),
                 segments=np.array([[1.0, 2.0]]), labels=np.array([1]))


def _write_labels(directory, rows) -> str:
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PSEUDO_SCHEMA), directory / "part-0.parquet")
    return str(directory)


def test_held_keeps_results_while_they_fit_the_limit():
    calls: dict[str, int] = {}

    def read(unit: str) -> list[str]:
        calls[unit] = calls.get(unit, 0) + 1
        return [f"{c}{calls[unit]}" for c in unit]

    r = held(read, len, limit=3)
    # "ab" (2 items) fits: kept. "cd" would make 4 > 3: read anew each time. "e" (2 + 1 = 3) fits: kept.
    for unit in ["ab", "cd", "e", "ab", "cd", "e", "ab"]:
        r(unit)
    assert calls == {"ab": 1, "cd": 2, "e": 1}
    assert r("ab") == ["a1", "b1"] and r("cd") == ["c3", "d3"]  # the first read's items; a new read


def test_passes_are_seeded_permutations():
    files = ["a", "b", "c"]
    twice = passes(files, [7], 2)
    assert sorted(twice[:3]) == sorted(twice[3:]) == files
    assert passes(files, [7], 2) == twice and passes(files, [7], 1) == twice[:3]  # a prefix of more passes


def test_read_side_takes_the_files_share_views_it_and_joins_its_pseudo_labels(tmp_path):
    (shard,) = write_shards([_video("a"), _video("bb"), _video("ccc"), _video("dddd")], tmp_path / "shards")
    labels = _write_labels(tmp_path / "pseudo", [
        pseudo_row("a", 1, "t", np.array([[0.5, 3.0]]), np.array([2]), np.array([0.9]), np.array([0.5]), ["x"]),
        pseudo_row("bb", 1, "t", None, None, None, None, None, error="boom"),  # an error row: left out
        pseudo_row("ccc", 1, "t", np.zeros((0, 2)), [], [], [], []),  # nothing to train on: left out
    ])
    rows = read_file_rows(shard)
    assert rows.column("path").to_pylist() == [shard] * 4
    # Labeled share of two ids: their rows, viewed as labeled videos with their ground truth.
    labeled = TrainingRows({shard: [FileShare("labeled", ("a", "ccc"))]}, "semi")(rows)
    videos = {v.video_id: v for v in training_videos([labeled])}
    assert sorted(videos) == ["a", "ccc"] and videos["a"].labeled and videos["a"].labels.tolist() == [1]
    assert videos["a"].video_labels.tolist() == [1] and videos["a"].weights is None
    # Pseudo share of three ids: only a has labels to train on, its pseudo labels replacing the truth.
    pseudo = TrainingRows({shard: [FileShare("unlabeled", ("a", "bb", "ccc"), labels)]}, "semi")(rows)
    (a,) = training_videos([pseudo])
    assert a.video_id == "a" and not a.labeled and len(a.video_labels) == 0
    np.testing.assert_array_equal(a.segments, [[0.5, 3.0]])
    assert a.labels.tolist() == [2] and a.weights.tolist() == [0.5]
    np.testing.assert_array_equal(a.features, np.full((6, 2), 1.0, np.float32))
    # A video of the share without a pseudo-label row: labels of another run or split.
    with pytest.raises(DataError, match=r"video 'dddd'.*no pseudo-label row"):
        TrainingRows({shard: [FileShare("pool", None, labels)]}, "semi")(rows)


def test_delta_targets_come_from_the_previous_generation(tmp_path):
    (shard,) = write_shards([_video("a", T=2)], tmp_path / "shards")
    y0, y1 = np.array([[0.5, 0.0], [0.0, 0.0]]), np.array([[0.25, 0.0], [0.5, 1.0]])
    row = [np.array([[0.0, 1.0]]), np.array([0]), np.array([0.9]), np.array([1.0]), ["f"]]
    g0 = _write_labels(tmp_path / "g0", [pseudo_row("a", 1, "t", *row, targets=y0)])
    g1 = _write_labels(tmp_path / "g1", [pseudo_row("a", 1, "t", *row, targets=y1)])
    read = TrainingRows({shard: [FileShare("unlabeled", None, g1, g0)]}, "semi", lambda prev, cur: cur - prev)
    (a,) = training_videos([read(read_file_rows(shard))])
    # (stored as float16: 0.25, 0.5, 1.0 are exact) Y1 - Y0 = [[-0.25, 0], [0.5, 1]]
    np.testing.assert_array_equal(a.targets, [[-0.25, 0.0], [0.5, 1.0]])


def _spec(shards: list[str], ids: list[tuple[str, ...]]) -> TrainSpec:
    labeled = tuple(("labeled", Source(f, i, len(i))) for f, i in zip(shards, ids))
    return TrainSpec("s", "/nonexistent", 2, 2, "semi", labeled=labeled, num_labeled=sum(map(len, ids)))


def _counting_reads(monkeypatch) -> list[str]:
    reads: list[str] = []

    def read(path: str):
        reads.append(path)
        return read_file_rows(path)

    monkeypatch.setattr(training_data, "read_file_rows", read)
    return reads


def test_a_stream_within_the_shuffle_buffer_is_read_once(tmp_path, monkeypatch):
    shards = write_shards([_video(c) for c in "abcd"], tmp_path, rows_per_shard=2)  # a b | c d
    cfg, spec = load_config(None, ["train.shuffle_buffer=4"]), _spec(shards, [("a", "b"), ("c", "d")])
    reads = _counting_reads(monkeypatch)
    videos = [v.video_id for v in itertools.islice(local_streams(cfg, spec)["labeled"], 40)]  # 10 passes
    assert sorted(reads) == sorted(shards) and set(videos) == set("abcd")
    # 40 out of a buffer of 4: 44 read, 11 of each video, of which at most 4 still in the buffer
    assert min(videos.count(c) for c in "abcd") >= 11 - 4
    # The same seeds, the same sequence; another train.seed, another.
    again = [v.video_id for v in itertools.islice(local_streams(cfg, spec)["labeled"], 40)]
    other = load_config(None, ["train.shuffle_buffer=4", "train.seed=1"])
    assert again == videos != [v.video_id for v in itertools.islice(local_streams(other, spec)["labeled"], 40)]
    assert stage_streams(cfg, spec)["labeled"].files == tuple(shards)


def test_a_stream_larger_than_the_shuffle_buffer_is_read_at_every_pass(tmp_path, monkeypatch):
    shards = write_shards([_video(c) for c in "abcdef"], tmp_path, rows_per_shard=2)
    cfg, spec = load_config(None, ["train.shuffle_buffer=4"]), _spec(shards, [("a", "b"), ("c", "d"), ("e", "f")])
    reads = _counting_reads(monkeypatch)
    list(itertools.islice(local_streams(cfg, spec)["labeled"], 60))  # 10 passes
    # The first two files read fill the 4 kept videos; the third is read at every pass.
    assert len(set(reads)) == 3 and max(reads.count(f) for f in shards) >= 9


def test_a_stage_reads_its_labeled_and_pseudo_labeled_streams_each_from_its_own_share(tmp_path):
    (shard,) = write_shards([_video(c) for c in "abcd"], tmp_path / "shards")
    labels = _write_labels(tmp_path / "pseudo", [
        pseudo_row(v, 1, "t", np.array([[0.5, 3.0]]), np.array([2]), np.array([0.9]), np.array([1.0]), ["x"])
        for v in "cd"])
    spec = TrainSpec("s", "/nonexistent", 3, 2, "semi", labeled=(("labeled", Source(shard, ("a", "b"), 2)),),
                     num_labeled=2, pseudo=(PseudoSource("unlabeled", Source(shard, ("c", "d"), 2), labels),),
                     num_pseudo=2)
    streams = local_streams(load_config(None, ["train.shuffle_buffer=2"]), spec)
    labeled, pseudo = (list(itertools.islice(streams[k], 8)) for k in ("labeled", "pseudo"))
    assert {v.video_id for v in labeled} == {"a", "b"} and all(v.labeled for v in labeled)
    assert {v.video_id for v in pseudo} == {"c", "d"} and not any(v.labeled for v in pseudo)
    assert all(v.labels.tolist() == [2] for v in pseudo) and all(v.labels.tolist() == [1] for v in labeled)
