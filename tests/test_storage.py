"""raytal.core.storage on a local directory and on a real S3 endpoint (moto server, ``s3_endpoint``):
every function on both, atomic writes, listing order, errors."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raytal.core import storage
from raytal.core.errors import InputError


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A fresh, not yet existing directory: local, or a prefix of the test bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_dir")


def _raw_listing(directory: str) -> list[str]:
    """Every entry pyarrow sees under ``directory`` (temporary files included), relative to it."""
    fs, inner = storage.filesystem(directory)
    return sorted(i.path[len(inner) + 1:] for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True)))


# --- paths (no I/O) ---

def test_is_uri():
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b") and storage.is_uri("ftp://h/x")
    assert not storage.is_uri("/data/x") and not storage.is_uri("data/s3://x")
    assert not storage.is_uri(os.path.join("s3:", "b"))  # 's3:/b': one slash is a local relative path


def test_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("a/b") == str(tmp_path / "a" / "b")
    assert storage.resolve(tmp_path / "x") == str(tmp_path / "x")
    assert storage.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert storage.resolve("file:///tmp/x") == "/tmp/x"
    assert storage.resolve("s3://bucket/a/b/") == "s3://bucket/a/b"
    assert storage.resolve("gs://bucket/") == "gs://bucket"
    assert storage.resolve("S3://bucket/k") == "s3://bucket/k"


def test_join_parent_name():
    assert storage.join("s3://b/runs/", "apl", "round_1/") == "s3://b/runs/apl/round_1"
    assert storage.join("s3://b", "x.json") == "s3://b/x.json"
    assert storage.join("/data", "features", "v.npy") == "/data/features/v.npy"
    assert storage.join("rel", "x") == os.path.join("rel", "x")
    assert storage.parent("s3://b/runs/apl/ckpt.pt") == "s3://b/runs/apl"
    assert storage.parent("s3://b/runs/") == "s3://b"
    assert storage.parent("s3://b") == "s3://b"
    assert storage.parent("/data/x.npy") == "/data"
    assert storage.name("gs://b/runs/ckpt.pt") == "ckpt.pt"
    assert storage.name("gs://b/runs/") == "runs"
    assert storage.name("/data/x.npy") == "x.npy"
    assert storage.join("file:///data", "x") == "/data/x"
    assert storage.parent("file:///data/x") == "/data" and storage.name("file:///data/x") == "x"


@pytest.mark.parametrize("bad, says", [
    ("ftp://host/x", "unsupported URI scheme 'ftp://'"),
    ("hdfs://nn/x", "unsupported URI scheme 'hdfs://'"),
    ("s3:///key", "got no bucket"),
    ("s3://b/k?region=eu-west-1", "without '?' or '#'"),
])
def test_bad_uri_is_input_error(bad, says):
    for call in (storage.resolve, storage.filesystem, storage.exists, storage.read_bytes, storage.list_files,
                 storage.parent, lambda p: storage.write_bytes(p, b"x")):
        with pytest.raises(InputError, match="^" + bad.replace("?", r"\?") + ": .*" + says.replace("?", r"\?")):
            call(bad)


def test_filesystem_local(tmp_path):
    fs, inner = storage.filesystem(tmp_path / "a" / "b.json")
    assert isinstance(fs, pafs.LocalFileSystem) and inner == str(tmp_path / "a" / "b.json")


def test_filesystem_gcs_needs_no_request():
    fs, inner = storage.filesystem("gs://some-bucket/runs/x.pt")
    assert isinstance(fs, pafs.GcsFileSystem) and inner == "some-bucket/runs/x.pt"
    assert storage.filesystem("gs://other/y")[0] is fs


def test_filesystem_s3_cached_and_configured_from_env(s3_endpoint, monkeypatch):
    fs, inner = storage.filesystem(s3_endpoint + "/a/b")
    assert isinstance(fs, pafs.S3FileSystem) and inner == "raytal-test/a/b"
    assert storage.filesystem(s3_endpoint + "/c")[0] is fs
    assert fs.region == "us-east-1"  # AWS_DEFAULT_REGION
    storage.write_text(s3_endpoint + "/env/x.txt", "x")
    url = os.environ["AWS_ENDPOINT_URL_S3"]
    # The generic AWS_ENDPOINT_URL serves when no S3-specific one is set (written with a trailing
    # slash, so the cache, keyed by the variables' values, builds a new filesystem from it) ...
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url + "/")
    generic = storage.filesystem(s3_endpoint)[0]
    assert generic is not fs
    assert storage.read_text(s3_endpoint + "/env/x.txt") == "x"
    # ... and the S3-specific one wins over it (nothing listens on port 1).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
    assert storage.filesystem(s3_endpoint)[0] is fs
    assert storage.read_text(s3_endpoint + "/env/x.txt") == "x"


# --- I/O on both backends ---

def test_write_read_exists(root):
    assert not storage.exists(root) and not storage.is_dir(root) and not storage.is_file(root)
    f = storage.join(root, "a", "b", "c.json")
    storage.write_text(f, '{"k": "é"}')  # parents appear as needed
    assert storage.read_text(f) == '{"k": "é"}'
    assert storage.read_bytes(f) == b'{"k": "\xc3\xa9"}'
    assert storage.is_file(f) and storage.exists(f) and not storage.is_dir(f)
    assert storage.is_dir(storage.join(root, "a", "b")) and storage.is_dir(root)
    storage.write_bytes(f, b"\x00\x01")  # replace
    assert storage.read_bytes(f) == b"\x00\x01"
    storage.write_bytes(storage.join(root, "empty"), b"")
    assert storage.read_bytes(storage.join(root, "empty")) == b""


def test_compressed_names_are_stored_verbatim(root):
    # pyarrow streams guess a codec from the name by default: 'x.gz' would be gzipped on write and
    # gunzipped on read, corrupting bytes that are already gzip (or failing on bytes that are not).
    f = storage.join(root, "x.gz")
    storage.write_bytes(f, b"not gzip")
    assert storage.read_bytes(f) == b"not gzip"
    fs, inner = storage.filesystem(f)
    assert fs.get_file_info(inner).size == 8


def test_makedirs(root):
    d = storage.join(root, "x", "y")
    storage.makedirs(d)
    storage.makedirs(d)  # exists already: fine
    assert storage.is_dir(d) and storage.is_dir(storage.join(root, "x"))
    assert storage.list_files(root) == []


def test_list_files_order_suffix_recursion(root):
    for rel in ("b.npy", "a2.npy", "a10.npy", "A.npy", "sub/c.npy", "sub/d.json", "a.npy.json"):
        storage.write_bytes(storage.join(root, rel), b"1")
    storage.makedirs(storage.join(root, "emptydir"))
    # String order, byte by byte: 'A' (0x41) < 'a'; '1' < '2' so 'a10' < 'a2'; 'sub/' after 'b'.
    assert storage.list_files(root) == [storage.join(root, r) for r in
                                        ("A.npy", "a.npy.json", "a10.npy", "a2.npy", "b.npy", "sub/c.npy", "sub/d.json")]
    assert storage.list_files(root, suffix=".npy") == [storage.join(root, r) for r in
                                                       ("A.npy", "a10.npy", "a2.npy", "b.npy", "sub/c.npy")]
    assert storage.list_files(root, suffix=".json", recursive=False) == [storage.join(root, "a.npy.json")]
    assert storage.list_files(storage.join(root, "sub")) == [storage.join(root, "sub/c.npy"),
                                                             storage.join(root, "sub/d.json")]


def test_list_files_of_missing_dir(root):
    missing = storage.join(root, "nope")
    with pytest.raises(FileNotFoundError) as e:
        storage.list_files(missing)
    assert e.value.filename == missing and str(e.value) == f"[Errno 2] No such file or directory: '{missing}'"


def test_atomic_write_leaves_no_temporary_file(root):
    f = storage.join(root, "ckpt.bin")
    storage.write_bytes(f, b"old")
    with storage.open_output_stream(f) as out:
        out.write(b"new, ")
        assert storage.read_bytes(f) == b"old"  # a reader never sees the write in progress
        assert storage.list_files(root) == [f]
        out.write(b"whole")
    assert storage.read_bytes(f) == b"new, whole"
    assert _raw_listing(root) == ["ckpt.bin"]


def test_failed_write_keeps_old_content(root):
    f = storage.join(root, "ckpt.bin")
    storage.write_bytes(f, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with storage.open_output_stream(f) as out:
            out.write(b"partial")
            raise RuntimeError("disk on fire")
    assert storage.read_bytes(f) == b"old"
    g = storage.join(root, "never.bin")
    with pytest.raises(RuntimeError):
        with storage.open_output_stream(g) as out:
            out.write(b"partial")
            raise RuntimeError("disk on fire")
    assert not storage.exists(g)
    assert _raw_listing(root) == ["ckpt.bin"]


def test_parquet_through_streams(root):
    f = storage.join(root, "shard-0.parquet")
    with storage.open_output_stream(f) as out:
        pq.write_table(pa.table({"video_id": ["v1", "v2"], "n": [3, 5]}), out)
    t = pq.read_table(storage.open_input_file(f))
    assert t.column("video_id").to_pylist() == ["v1", "v2"] and t.column("n").to_pylist() == [3, 5]
    assert pq.ParquetFile(storage.open_input_file(f)).metadata.num_rows == 2


@pytest.mark.parametrize("call", [storage.read_bytes, storage.read_text, storage.open_input_file,
                                  storage.delete_file, storage.delete_dir,
                                  lambda p: storage.copy_file(p, p + ".copy")])
def test_missing_file_names_the_path(root, call):
    missing = storage.join(root, "missing.bin")
    storage.makedirs(root)
    with pytest.raises(FileNotFoundError) as e:
        call(missing)
    assert e.value.filename == missing and str(e.value) == f"[Errno 2] No such file or directory: '{missing}'"


def test_delete(root):
    a, b = storage.join(root, "d", "a"), storage.join(root, "d", "e", "b")
    storage.write_bytes(a, b"a")
    storage.write_bytes(b, b"b")
    storage.delete_file(a)
    assert not storage.exists(a) and storage.list_files(root) == [b]
    storage.delete_file(a, missing_ok=True)
    storage.delete_dir(storage.join(root, "d"))
    assert not storage.exists(storage.join(root, "d")) and not storage.exists(b)
    storage.delete_dir(storage.join(root, "d"), missing_ok=True)


@pytest.mark.parametrize("src_kind, dst_kind", [("local", "s3"), ("s3", "local"), ("s3", "s3"), ("local", "local")])
def test_copy_file_across_filesystems(src_kind, dst_kind, tmp_path, request):
    roots = {"local": str(tmp_path / "local")}
    if "s3" in (src_kind, dst_kind):
        roots["s3"] = request.getfixturevalue("s3_dir")
    src = storage.join(roots[src_kind], "src", "w.bin")
    dst = storage.join(roots[dst_kind], "dst", "w.bin")
    data = bytes(range(256)) * 5000
    storage.write_bytes(src, data)
    storage.write_bytes(dst, b"old")
    storage.copy_file(src, dst)
    assert storage.read_bytes(dst) == data and storage.read_bytes(src) == data
    assert _raw_listing(storage.join(roots[dst_kind], "dst")) == ["w.bin"]
