"""The training streams' building blocks (raytal.data.stream) and the in-process stage streams."""

from __future__ import annotations

import itertools

from raytal.config import load_config
from raytal.data.index import Source
from raytal.data.stream import endless_passes, flat_map, held
from raytal.selftrain.spec import TrainSpec
from raytal.selftrain.training_data import LABELED_STREAM, shuffled_rows, stage_streams, stage_units, stream_seed


class CountingReader:
    """Units are strings; unit "ab" reads as ["a0", "b0"] on the first read, ["a1", "b1"] on the second..."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, unit: str) -> list[str]:
        n = self.calls.get(unit, 0)
        self.calls[unit] = n + 1
        return [f"{c}{n}" for c in unit]


def test_held_keeps_units_while_their_items_fit_the_limit():
    read = CountingReader()
    r = held(read, limit=3)
    # "ab" (2 items) fits: kept. "cd" would make 4 > 3: read anew each time. "e" (2 + 1 = 3) fits: kept.
    for unit in ["ab", "cd", "e", "ab", "cd", "e", "ab"]:
        r(unit)
    assert read.calls == {"ab": 1, "cd": 2, "e": 1}
    assert r("ab") == ["a0", "b0"]  # the first read's items
    assert r("cd") == ["c2", "d2"]  # a new read


def test_held_with_limit_zero_reads_every_time():
    read = CountingReader()
    r = held(read, limit=0)
    assert [r("a"), r("a")] == [["a0"], ["a1"]]


def _spec(num_units: int) -> TrainSpec:
    """``num_units`` labeled units of 2 videos each."""
    units = tuple(("labeled", Source(f"f{k}", (f"v{k}a", f"v{k}b"), 2)) for k in range(num_units))
    return TrainSpec("s", "/nonexistent", 2, 4, "semi", labeled=units, num_labeled=2 * num_units)


def _reader(reads: list[str]):
    def read(unit, setting, delta_targets):
        reads.append(unit[1].file)
        return list(unit[1].ids)
    return read


def test_a_stream_within_the_shuffle_buffer_is_read_once_and_gives_the_unheld_sequence():
    cfg, spec = load_config(None, ["train.shuffle_buffer=4"]), _spec(2)  # 4 videos: the buffer holds them
    reads: list[str] = []
    videos = list(itertools.islice(stage_streams(cfg, spec, read=_reader(reads))["labeled"], 40))  # 10 passes
    assert sorted(reads) == ["f0", "f1"]
    assert set(videos) == {"v0a", "v0b", "v1a", "v1b"}
    # The stream's passes and buffer without holding: the same videos in the same order.
    units = stage_units(spec)["labeled"][0]
    unheld = flat_map(endless_passes(units, stream_seed(cfg, spec, LABELED_STREAM)), lambda u: list(u[1].ids))
    assert videos == list(itertools.islice(shuffled_rows(unheld, cfg, spec, LABELED_STREAM), 40))


def test_a_stream_larger_than_the_shuffle_buffer_is_read_at_every_pass():
    cfg, spec = load_config(None, ["train.shuffle_buffer=4"]), _spec(3)  # 6 videos
    reads: list[str] = []
    list(itertools.islice(stage_streams(cfg, spec, read=_reader(reads))["labeled"], 60))  # 10 passes
    # The first two units read fill the 4 kept videos; the third is read at every pass.
    assert len(set(reads)) == 3 and len(reads) >= 2 + 9
    assert max(reads.count(f) for f in set(reads)) >= 9
