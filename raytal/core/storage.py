"""Paths that may be local or on object storage (``s3://bucket/key``, ``gs://bucket/key``), in one place.

Every path is a ``str`` (or ``os.PathLike`` for local ones); a URI is kept as a URI, a local path is made
absolute. I/O goes through ``pyarrow.fs``, the layer Ray Data and Ray Train use, so a location written
here is read there and the other way round.

S3 is configured from the standard AWS environment, read when a filesystem is first needed:

- ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``: a custom endpoint (MinIO, moto, ...), e.g.
  ``http://127.0.0.1:9000``. ``pyarrow.fs.FileSystem.from_uri`` (what Ray resolves a URI with) honours
  both, the ``S3FileSystem`` constructor does not: this module passes it as ``endpoint_override``.
- ``AWS_REGION``, else ``AWS_DEFAULT_REGION``: the region. Without an endpoint the bucket's own region is
  looked up (one request per bucket), as ``from_uri`` does, so a bucket in another region still works.
- credentials: the AWS SDK's default chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws``, an instance profile). They are never put in
  the filesystem object, so pickling one to a Ray worker does not copy secrets: the worker needs its own.

GCS uses Google's Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or the VM's
service account).

Writes are atomic: a reader sees the old content or the new, never a part. Locally a temporary file in
the same directory is renamed over the target; on an object store the object appears only when its
upload completes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from raytal.core.errors import InputError

PathLike = str | os.PathLike

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_OBJECT_SCHEMES = ("s3", "gs", "gcs")
# Temporary files of local writes in progress end with this; listings never show them.
_TMP_SUFFIX = ".raytal-tmp"
_LOCAL = pafs.LocalFileSystem()
_cache: dict[tuple, pafs.FileSystem] = {}
_cache_lock = threading.Lock()


def is_uri(p: PathLike) -> bool:
    """True for ``scheme://...`` (any scheme; ``file://`` included), False for a local path."""
    return isinstance(p, str) and _URI.match(p) is not None


def _split(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b/`` -> ``("s3", "bucket", "a/b")``; ``file://`` and unknown schemes are refused."""
    m = _URI.match(uri)
    assert m is not None
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme not in _OBJECT_SCHEMES:
        raise InputError(f"{uri}: unsupported URI scheme '{scheme}://', expected a local path or one of "
                         f"{', '.join(s + '://' for s in _OBJECT_SCHEMES)}")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InputError(f"{uri}: expected {scheme}://BUCKET/KEY, got no bucket")
    if "?" in rest or "#" in rest:
        # pyarrow would read '?region=...' as options; here it would silently become part of the key.
        raise InputError(f"{uri}: expected {scheme}://BUCKET/KEY without '?' or '#'")
    return scheme, bucket, key.strip("/")


def resolve(p: PathLike) -> str:
    """An absolute local path (``~`` expanded, ``file://`` stripped), or the URI without a trailing slash.

    Raises ``InputError`` for a URI of an unsupported scheme or without a bucket."""
    if not is_uri(p):
        return os.path.abspath(os.path.expanduser(os.fspath(p)))
    assert isinstance(p, str)
    if p.lower().startswith("file://"):
        return resolve(urlsplit(p).path)
    scheme, bucket, key = _split(p)
    return f"{scheme}://{bucket}/{key}" if key else f"{scheme}://{bucket}"


def join(base: PathLike, *parts: str) -> str:
    """``base/part/...``; for a URI the parts are joined with ``/`` whatever the OS."""
    if not is_uri(base):
        return os.path.join(os.fspath(base), *parts)
    r = resolve(base)
    if not is_uri(r):  # file://
        return os.path.join(r, *parts)
    return "/".join([r, *(s.strip("/") for s in parts if s.strip("/"))])


def parent(p: PathLike) -> str:
    """The containing directory; a bucket (or ``/``) is its own parent."""
    r = resolve(p)
    if not is_uri(r):
        return str(Path(r).parent)
    scheme, bucket, key = _split(r)
    return f"{scheme}://{bucket}/{key.rpartition('/')[0]}".rstrip("/")


def name(p: PathLike) -> str:
    """The last component: the file or directory name (the bucket for a bucket URI)."""
    r = resolve(p)
    return r.rpartition("/")[2] if is_uri(r) else Path(r).name


def _s3(bucket: str) -> pafs.FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    key = ("s3", bucket, endpoint, region)
    with _cache_lock:
        if key not in _cache:
            kwargs: dict[str, str] = {}
            if endpoint:
                url = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
                kwargs.update(endpoint_override=url.netloc + url.path.rstrip("/"), scheme=url.scheme)
                if region:
                    kwargs["region"] = region
            else:
                kwargs["region"] = pafs.resolve_s3_region(bucket)
            _cache[key] = pafs.S3FileSystem(**kwargs)
        return _cache[key]


def _gcs() -> pafs.FileSystem:
    with _cache_lock:
        if ("gs",) not in _cache:
            _cache[("gs",)] = pafs.GcsFileSystem()
        return _cache[("gs",)]


def filesystem(p: PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``p`` and the path on it (``bucket/key`` for a URI).

    Filesystems are cached per bucket and environment, so calls are cheap; pass the pair to pyarrow,
    or to Ray as ``filesystem=`` / ``storage_filesystem=`` with the inner path."""
    r = resolve(p)
    if not is_uri(r):
        return _LOCAL, r
    scheme, bucket, key = _split(r)
    fs = _s3(bucket) if scheme == "s3" else _gcs()
    return fs, f"{bucket}/{key}" if key else bucket


def _info(p: PathLike) -> pafs.FileInfo:
    fs, inner = filesystem(p)
    return fs.get_file_info(inner)


def exists(p: PathLike) -> bool:
    """A file or a directory is there. On an object store a directory is a key prefix (or a marker)."""
    return _info(p).type != pafs.FileType.NotFound


def is_file(p: PathLike) -> bool:
    return _info(p).type == pafs.FileType.File


def is_dir(p: PathLike) -> bool:
    return _info(p).type == pafs.FileType.Directory


def makedirs(p: PathLike) -> None:
    """Create the directory and its parents; fine if it exists. Buckets are not created: they are the
    user's (an object store needs no directory before a write; this makes ``is_dir`` true at once)."""
    fs, inner = filesystem(p)
    fs.create_dir(inner, recursive=True)


def _missing(p: PathLike) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "No such file or directory", resolve(p))


@contextlib.contextmanager
def _not_found_as(p: PathLike) -> Iterator[None]:
    # pyarrow names the inner path (no scheme); the user gave the URI.
    try:
        yield
    except FileNotFoundError as e:
        raise _missing(p) from e


def list_file_sizes(directory: PathLike, suffix: str | None = None, recursive: bool = True) -> dict[str, int]:
    """Files under ``directory`` (not directories) -> their size in bytes, keyed by full path / URI in
    string order, so local and object-store listings come out in the same order. ``suffix`` keeps names
    ending with it. Raises FileNotFoundError when the directory does not exist."""
    fs, inner = filesystem(directory)
    root = resolve(directory)
    prefix = root.partition("://")[0] + "://" if is_uri(root) else ""
    with _not_found_as(directory):
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=recursive))
    found = {prefix + i.path: int(i.size) for i in infos if i.type == pafs.FileType.File
             and not i.path.endswith(_TMP_SUFFIX) and (suffix is None or i.path.endswith(suffix))}
    return dict(sorted(found.items()))


def list_files(directory: PathLike, suffix: str | None = None, recursive: bool = True) -> list[str]:
    """The paths of ``list_file_sizes``: files under ``directory``, sorted as strings.

    Raises FileNotFoundError when the directory does not exist."""
    return list(list_file_sizes(directory, suffix, recursive))


def read_at_most(path: PathLike, limit: int, error: Callable[[str], Exception], shown: str, too_large: str) -> bytes:
    """The bytes of a user's file, reading at most ``limit`` + 1 of them: ``error(message)`` naming ``shown``
    when it cannot be read or is larger than ``limit`` (``too_large`` says how large is allowed)."""
    try:
        with open_input_file(path) as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise error(f"{shown}: cannot read: {e.strerror or e}") from None
    if len(raw) > limit:
        raise error(f"{shown}: refused: larger than {too_large}")
    return raw


def open_input_file(p: PathLike) -> pa.NativeFile:
    """A seekable reader (what ``pyarrow.parquet.ParquetFile`` wants); on an object store each read is a
    ranged GET."""
    fs, inner = filesystem(p)
    with _not_found_as(p):
        return fs.open_input_file(inner)


def read_bytes(p: PathLike) -> bytes:
    fs, inner = filesystem(p)
    # compression=None: pyarrow would otherwise decompress a *.gz / *.zst file by its name.
    with _not_found_as(p), fs.open_input_stream(inner, compression=None) as f:
        return f.read()


def read_text(p: PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(p).decode(encoding)


@contextlib.contextmanager
def open_output_stream(p: PathLike) -> Iterator[pa.NativeFile]:
    """A writer whose content replaces ``p`` only if the ``with`` block finishes without an exception.

    Local: a temporary file beside ``p``, flushed to disk and renamed over it (parent directories are
    created). Object store: the bytes are buffered in memory and uploaded at the end, because pyarrow
    cannot abort an upload: closing a failed stream would publish a partial object. Stream large
    outputs (Parquet datasets) with Ray Data instead.
    """
    fs, inner = filesystem(p)
    if fs is not _LOCAL:
        buf = pa.BufferOutputStream()
        yield buf
        with fs.open_output_stream(inner, compression=None) as out:
            out.write(buf.getvalue())
        return
    os.makedirs(os.path.dirname(inner), exist_ok=True)
    tmp = os.path.join(os.path.dirname(inner), f".{os.path.basename(inner)}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    try:
        with pa.OSFile(tmp, "wb") as f:
            yield f
        # A rename of unflushed data can leave an empty file after a power cut.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, inner)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(p: PathLike, data: bytes) -> None:
    """Replace ``p`` with ``data`` atomically (see ``open_output_stream``)."""
    with open_output_stream(p) as f:
        f.write(data)


def write_text(p: PathLike, text: str, encoding: str = "utf-8") -> None:
    write_bytes(p, text.encode(encoding))


def copy_file(src: PathLike, dst: PathLike) -> None:
    """Copy one file, across filesystems too; ``dst`` is replaced atomically. Within one bucket the copy
    is server-side (no bytes through this process)."""
    src_fs, src_inner = filesystem(src)
    dst_fs, dst_inner = filesystem(dst)
    if src_fs is dst_fs and src_fs is not _LOCAL:
        # S3's CopyObject reports a missing source as a generic OSError.
        if src_fs.get_file_info(src_inner).type == pafs.FileType.NotFound:
            raise _missing(src)
        src_fs.copy_file(src_inner, dst_inner)
        return
    with _not_found_as(src):
        reader = src_fs.open_input_stream(src_inner, compression=None)
    with reader, open_output_stream(dst) as w:
        while chunk := reader.read(1 << 24):
            w.write(chunk)


def delete_file(p: PathLike, missing_ok: bool = False) -> None:
    fs, inner = filesystem(p)
    if missing_ok and not exists(p):
        return
    with _not_found_as(p):
        fs.delete_file(inner)


def delete_dir(p: PathLike, missing_ok: bool = False) -> None:
    """Delete a directory and everything under it."""
    fs, inner = filesystem(p)
    if missing_ok and not exists(p):
        return
    with _not_found_as(p):
        fs.delete_dir(inner)
