import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytal.core.errors import DataError
from raytal.data.shards import SCHEMA, read_shards, rows_to_videos, video_to_row, videos_to_table, write_shards
from raytal.core.video import Video


def make(i, T=5, D=3, subset="train", labeled=True):
    # fps 2.5, feat_stride 4, num_frames 8: the latest end (4 s for i = 6) is grid (4*2.5 - 4)/4 = 1.5 < T
    feats = (np.arange(T * D, dtype=np.float32).reshape(T, D) + 0.1 * i) / 7.0
    segs = np.array([[0.5 * i, 1.0 + 0.5 * i], [0.2, 1 / 3]])[: i % 3]
    labels = np.array([i % 4, 2])[: i % 3]
    return Video(f"v{i}", subset, 4.0 + i / 3, 2.5, 4, 8, features=feats, segments=segs, labels=labels,
                 labeled=labeled, video_labels=np.unique(labels))


def assert_same(a: Video, b: Video):
    assert (a.video_id, a.subset, a.duration, a.fps, a.feat_stride, a.num_frames, a.labeled) == (
        b.video_id, b.subset, b.duration, b.fps, b.feat_stride, b.num_frames, b.labeled)
    assert b.features.dtype == np.float32 and b.features.shape == a.features.shape
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.segments.reshape(-1, 2), b.segments)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.video_labels, b.video_labels)


def test_round_trip_exact(tmp_path):
    vids = [make(i, T=5 + i) for i in range(7)]
    paths = write_shards(iter(vids), tmp_path / "s", rows_per_shard=3)
    # 7 rows at 3 per shard -> 3 shards (3 + 3 + 1)
    assert paths == [str(tmp_path / "s" / f"part-0000{i}.parquet") for i in range(3)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in paths] == [3, 3, 1]
    back = list(read_shards(tmp_path / "s"))
    assert len(back) == 7
    for a, b in zip(vids, back):
        assert_same(a, b)
    assert pq.read_schema(paths[0]).equals(SCHEMA, check_metadata=False)


def test_row_and_table_paths():
    v = make(4)
    row = video_to_row(v)
    assert row["T"] == 5 and row["D"] == 3 and len(row["features"]) == 5 * 3 * 4
    # make(4): 4 % 3 = 1 annotation, [2.0, 3.0] of class 4 % 4 = 0
    assert row["annotations"] == [{"label_id": 0, "start": 2.0, "end": 3.0}]
    table = videos_to_table([make(1), make(2)])
    assert table.num_rows == 2
    # Ray Data hands batches as a Table or as a dict of columns
    for batch in (table, table.to_batches()[0], {n: table.column(n).to_pylist() for n in table.column_names}):
        out = rows_to_videos(batch)
        assert_same(make(1), out[0])
        assert_same(make(2), out[1])


def test_id_filter_and_file_list(tmp_path):
    vids = [make(0, subset="train"), make(1, subset="test"), make(2, subset="train", labeled=False)]
    paths = write_shards(vids, tmp_path, rows_per_shard=2)  # v0 v1 | v2
    assert [v.video_id for v in read_shards(tmp_path, ids=["v2", "v0"])] == ["v0", "v2"]  # file order
    assert [v.video_id for v in read_shards(paths[1:])] == ["v2"]
    assert [v.video_id for v in read_shards(paths, ids=["v1", "nowhere"])] == ["v1"]
    assert list(read_shards(paths, ids=[])) == []


def test_a_folder_holding_shards_is_refused_and_nothing_is_removed(tmp_path):
    # An earlier write's shards would be read with the new ones, and which are stale is not the writer's to
    # decide (it used to delete every part-NNNNN.parquet it had not just written): it refuses, deleting nothing.
    first = write_shards([make(i) for i in range(5)], tmp_path, rows_per_shard=1)
    other = tmp_path / "notes.parquet.txt"
    other.write_text("keep me")
    with pytest.raises(DataError, match=r"already holds shard files \(part-00000.parquet"):
        write_shards([make(i) for i in range(2)], tmp_path, rows_per_shard=1)
    assert sorted(str(p) for p in tmp_path.glob("part-*.parquet")) == first and other.read_text() == "keep me"
    assert [v.video_id for v in read_shards(tmp_path)] == ["v0", "v1", "v2", "v3", "v4"]


def test_the_writer_hashes_what_it_writes(tmp_path):
    hashes: dict[str, str] = {}
    paths = write_shards([make(i) for i in range(3)], tmp_path, rows_per_shard=2, hashes=hashes)
    assert sorted(hashes) == sorted(paths)
    for p in paths:  # the hash of the file's bytes, as a reader computes it
        assert hashes[p] == hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_truncated_shard_names_file(tmp_path):
    (p,) = map(Path, write_shards([make(1, T=50)], tmp_path))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"part-00000.parquet.*truncated or corrupt"):
        list(read_shards(tmp_path))


def test_garbage_and_foreign_parquet(tmp_path):
    (tmp_path / "part-00000.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"part-00000.parquet: not a readable Parquet shard"):
        list(read_shards(tmp_path))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "part-00000.parquet")
    with pytest.raises(DataError, match=r"part-00000.parquet: field 'video_id': column missing"):
        list(read_shards(tmp_path))


def test_bad_feature_bytes_row(tmp_path):
    table = videos_to_table([make(1), make(2)])
    cols = {n: table.column(n).to_pylist() for n in table.column_names}
    cols["T"][1] = 6  # 5*3*4 bytes stored, 6*3*4 claimed
    with pytest.raises(DataError, match=r"video 'v2': field 'features': 60 bytes, expected T\*D\*4"):
        rows_to_videos(cols)
    errors: list = []
    out = rows_to_videos(cols, errors=errors)
    assert [v.video_id for v in out] == ["v1"] and errors[0][0] == "v2"


def test_writer_checks(tmp_path):
    bad = make(1)
    bad.features[2, 0] = np.nan
    with pytest.raises(DataError, match=r"video 'v1': field 'features'.*NaN"):
        write_shards([bad], tmp_path)
    with pytest.raises(DataError, match=r"video 'v1': field 'video_id': duplicate"):
        write_shards([make(1), make(1)], tmp_path)
    missing = make(3)
    missing.features = None
    with pytest.raises(DataError, match=r"video 'v3': field 'features': not loaded"):
        write_shards([missing], tmp_path)
    with pytest.raises(DataError, match=r"expected D = 4"):
        write_shards([make(1)], tmp_path, feature_dim=4)


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(read_shards(tmp_path / "nope"))
