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
the same directory (created with ``O_EXCL | O_NOFOLLOW``) is renamed over the target; on an object store
the object appears only when its upload completes. No local write follows a symbolic link: a link at the
target is refused, and below a folder a job holds (``guard``: a run directory, a job's output folder)
every directory component is opened without following links, so a link planted inside that folder
(``run.lock -> ~/.bashrc``, ``round_1 -> /elsewhere``) is refused with a ``StorageError`` naming it.
Links above the held folder (``runs -> /big/disk/runs``) are the user's own layout and are followed.

A location that only looks like a URI (``s3:/bucket``, ``s3:bucket``, ``gs:/``, ``http:/x``) is refused by
``resolve`` instead of becoming a local folder named ``s3:``. Object-store failures that are not a missing
file (an unreachable endpoint, refused or missing credentials, a bucket that does not exist) are
``StorageError``: one line naming the URI and what to check.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from raytal.core.errors import InputError

PathLike = str | os.PathLike


class StorageError(InputError):
    """A location that cannot be used as given: a malformed URI, an object store that cannot be reached or
    refuses the credentials, a symbolic link where a job writes."""


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_OBJECT_SCHEMES = ("s3", "gs", "gcs")
# "s3:/x", "s3:x", "gs:", "http:/x": a URI with its "//" lost (a shell, a Path() or a typo), which a local
# path would turn into a folder named "s3:". A one-letter "scheme" is a Windows drive (C:/...).
_MANGLED_URI = re.compile(r"^(?:(s3|gs|gcs):|([A-Za-z][A-Za-z0-9+.-]+):/)", re.IGNORECASE)
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
        raise StorageError(f"{uri}: unsupported URI scheme '{scheme}://', expected a local path or one of "
                           f"{', '.join(s + '://' for s in _OBJECT_SCHEMES)}")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: expected {scheme}://BUCKET/KEY, got no bucket")
    if "?" in rest or "#" in rest:
        # pyarrow would read '?region=...' as options; here it would silently become part of the key.
        raise StorageError(f"{uri}: expected {scheme}://BUCKET/KEY without '?' or '#'")
    return scheme, bucket, key.strip("/")


def location_error(p: object) -> str | None:
    """Why ``p`` is not a usable location (a local path, ``file://``, ``s3://`` or ``gs://``), or None."""
    try:
        resolve(p)  # type: ignore[arg-type]
    except InputError as e:
        return str(e)
    return None


def resolve(p: PathLike) -> str:
    """An absolute local path (``~`` expanded, ``file://`` stripped), or the URI without a trailing slash.

    Raises ``StorageError`` for a URI of an unsupported scheme or without a bucket, and for a local path
    that is a mangled URI (``s3:/bucket``, ``s3:bucket``)."""
    if not is_uri(p):
        text = os.fspath(p)
        m = _MANGLED_URI.match(text) if isinstance(text, str) else None
        if m is not None:
            scheme = (m.group(1) or m.group(2)).lower()
            expected = (f"{scheme}://BUCKET/KEY" if scheme in _OBJECT_SCHEMES else
                        f"a local path or one of {', '.join(s + '://' for s in _OBJECT_SCHEMES)}")
            raise StorageError(f"{text}: not a valid location: it looks like a '{scheme}:' URI without '//' "
                               f"(expected {expected}); a local folder named '{scheme}:' is refused")
        return os.path.abspath(os.path.expanduser(text))
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
    try:
        fs = _s3(bucket) if scheme == "s3" else _gcs()
    except OSError as e:  # the bucket's region is looked up with a request
        raise _object_store_error(r, e) from None
    return fs, f"{bucket}/{key}" if key else bucket


def _object_store_error(p: PathLike, e: OSError) -> StorageError:
    """An object-store failure as one line naming the URI and what to check."""
    text = " ".join(str(e).split())
    lowered = text.lower().replace("_", "")  # AWS names codes both ways: INVALID_ACCESS_KEY_ID, InvalidAccessKeyId
    if any(k in lowered for k in ("networkconnection", "curlcode", "couldn't connect", "could not resolve",
                                  "connection refused", "timed out", "timeout")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        where_to = f"the endpoint {endpoint} (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)" if endpoint else "the network"
        return StorageError(f"{resolve(p)}: cannot reach the object store: check {where_to} ({text[:200]})")
    if any(k in lowered for k in ("accessdenied", "http status 403", "invalidaccesskeyid", "signaturedoesnotmatch",
                                  "credential", "expiredtoken", "oauth2", "unauthenticated", "permission")):
        what = ("access refused: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE, "
                "or GOOGLE_APPLICATION_CREDENTIALS) and their rights on the bucket")
    elif "nosuchbucket" in lowered or ("bucket" in lowered and "not found" in lowered):
        return StorageError(f"{resolve(p)}: the bucket does not exist (buckets are not created by raytal) "
                            f"({text[:200]})")
    else:
        what = "object store error"
    return StorageError(f"{resolve(p)}: {what}{_no_credentials(resolve(p))} ({text[:200]})")


def _no_credentials(uri: str) -> str:
    """A hint when none of the standard credential sources is set up (the failure is then most likely that)."""
    if uri.startswith("s3://"):
        keys = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", "~/.aws/config")
        names = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"
    else:
        keys = ("GOOGLE_APPLICATION_CREDENTIALS",)
        files = ("~/.config/gcloud/application_default_credentials.json",)
        names = "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`"
    if any(os.environ.get(k) for k in keys) or any(os.path.exists(os.path.expanduser(f)) for f in files):
        return ""
    return f"; no credentials are set up ({names}), which a private bucket needs"


@contextlib.contextmanager
def _io(p: PathLike) -> Iterator[None]:
    """Errors of one operation on ``p``: a missing file as FileNotFoundError naming ``p`` (pyarrow names the
    inner path, without the scheme), any other object-store failure as ``StorageError``."""
    try:
        yield
    except FileNotFoundError as e:
        raise _missing(p) from e
    except NotADirectoryError:
        raise StorageError(f"{resolve(p)}: not a folder (a file, or a path through one)") from None
    except OSError as e:
        if is_uri(p) and not isinstance(e, StorageError):
            raise _object_store_error(p, e) from None
        raise


def _info(p: PathLike) -> pafs.FileInfo:
    with _io(p):
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
    if not is_uri(resolve(p)):
        _local_makedirs(resolve(p))
        return
    fs, inner = filesystem(p)
    with _io(p):
        fs.create_dir(inner, recursive=True)


def _missing(p: PathLike) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "No such file or directory", resolve(p))


# Names raytal keeps for itself inside a folder it writes (the output manifest, staging folders of a job
# in progress): listings never show them, as Parquet readers skip names starting with '.'.
RESERVED_PREFIX = ".raytal-"


def list_file_infos(directory: PathLike, suffix: str | None = None,
                    recursive: bool = True) -> dict[str, tuple[int, int]]:
    """Files under ``directory`` (not directories) -> (size in bytes, modification time in µs), keyed by
    full path / URI in string order, so local and object-store listings come out in the same order.
    ``suffix`` keeps names ending with it; temporary files of writes in progress and raytal's reserved
    names (``RESERVED_PREFIX``) are left out. Raises FileNotFoundError when the directory does not exist."""
    fs, inner = filesystem(directory)
    root = resolve(directory)
    prefix = root.partition("://")[0] + "://" if is_uri(root) else ""
    with _io(directory):
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=recursive))
    below = len(inner.rstrip("/")) + 1
    found = {prefix + i.path: (int(i.size), int(i.mtime_ns or 0) // 1000) for i in infos
             if i.type == pafs.FileType.File and not i.path.endswith(_TMP_SUFFIX)
             and (suffix is None or i.path.endswith(suffix))
             and not any(part.startswith(RESERVED_PREFIX) for part in i.path[below:].split("/"))}
    return dict(sorted(found.items()))


def list_names(directory: PathLike) -> list[str]:
    """The names directly inside ``directory`` (files and folders, sorted), raytal's reserved names left out;
    [] when it does not exist."""
    fs, inner = filesystem(directory)
    with _io(directory):
        try:
            infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
        except FileNotFoundError:
            return []
    names = (i.path.rstrip("/").rpartition("/")[2] for i in infos)
    return sorted(n for n in names if n and not n.startswith(RESERVED_PREFIX) and not n.endswith(_TMP_SUFFIX))


def list_file_sizes(directory: PathLike, suffix: str | None = None, recursive: bool = True) -> dict[str, int]:
    """``list_file_infos`` without the times: files under ``directory`` -> their size in bytes."""
    return {f: size for f, (size, _) in list_file_infos(directory, suffix, recursive).items()}


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


def read_user_text(path: PathLike, limit: int, error: Callable[[str], Exception], kind: str, too_large: str,
                   encoding: str = "utf-8") -> str:
    """The text of a user's file (``read_at_most``): ``error`` naming it when it is not text (not ``encoding``,
    or NUL bytes: a binary file given by mistake), e.g. ``"f.csv: not a text CSV file (not UTF-8 at byte 2)"``."""
    raw = read_at_most(path, limit, error, str(path), too_large)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a text {kind} file (not UTF-8 at byte {e.start})") from None
    if "\x00" in text:
        raise error(f"{path}: not a text {kind} file (it contains NUL bytes)")
    return text


def open_input_file(p: PathLike) -> pa.NativeFile:
    """A seekable reader (what ``pyarrow.parquet.ParquetFile`` wants); on an object store each read is a
    ranged GET."""
    fs, inner = filesystem(p)
    with _io(p):
        return fs.open_input_file(inner)


def read_bytes(p: PathLike) -> bytes:
    fs, inner = filesystem(p)
    # compression=None: pyarrow would otherwise decompress a *.gz / *.zst file by its name.
    with _io(p), fs.open_input_stream(inner, compression=None) as f:
        return f.read()


def sha256_file(p: PathLike, chunk: int = 1 << 24) -> str:
    """The sha256 of a file's bytes (hex), read in chunks (a shard of any size in bounded memory)."""
    fs, inner = filesystem(p)
    digest = hashlib.sha256()
    with _io(p), fs.open_input_stream(inner, compression=None) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_text(p: PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(p).decode(encoding)


_guards: dict[str, int] = {}  # local folders held by a job -> how many holders
_guards_lock = threading.Lock()


@contextlib.contextmanager
def guard(root: PathLike) -> Iterator[None]:
    """While the block runs, every local write below ``root`` (a run directory, a job's output folder)
    opens each directory under it without following a symbolic link (module docstring). Object-store
    locations have no links; the block runs unchanged there."""
    r = resolve(root)
    if is_uri(r):
        yield
        return
    with _guards_lock:
        _guards[r] = _guards.get(r, 0) + 1
    try:
        yield
    finally:
        with _guards_lock:
            _guards[r] -= 1
            if not _guards[r]:
                del _guards[r]


def _guard_of(path: str) -> str | None:
    """The outermost guarded folder holding ``path`` (or ``path`` itself): every directory below it is
    opened without following links."""
    with _guards_lock:
        held = [g for g in _guards if path == g or path.startswith(g.rstrip("/") + "/")]
    return min(held, key=len) if held else None


def _link_error(path: str, root: str) -> StorageError:
    return StorageError(f"{path}: a symbolic link inside {root}, which raytal writes: refused (raytal never follows "
                        "a link it did not make); remove the link")


def _open_dir(path: str, create: bool) -> int:
    """A descriptor of the local directory ``path`` (created with its parents when ``create``). Below a
    guarded folder every component is opened with ``O_NOFOLLOW``: a link there is a ``StorageError``."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    root = _guard_of(path)
    if root is None:
        if create:
            os.makedirs(path, exist_ok=True)
        return os.open(path, flags)
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, flags)
    current = root
    for part in [c for c in path[len(root):].split("/") if c]:
        current = os.path.join(current, part)
        while True:
            try:
                nfd = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
                break
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    raise
                with contextlib.suppress(FileExistsError):  # made by another writer meanwhile: open it
                    os.mkdir(part, 0o777, dir_fd=fd)
            except OSError as e:
                mode = None
                with contextlib.suppress(OSError):
                    mode = os.lstat(part, dir_fd=fd).st_mode
                os.close(fd)
                if mode is not None and stat.S_ISLNK(mode):
                    raise _link_error(current, root) from None
                if e.errno == errno.ENOTDIR:
                    raise StorageError(f"{current}: is a regular file, expected a folder") from None
                raise
        os.close(fd)
        fd = nfd
    return fd


def _refuse_link(dir_fd: int, name: str, path: str) -> None:
    """Refuse to replace a symbolic link or a directory at ``name`` (a write never goes through a link)."""
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        root = _guard_of(path)
        raise (_link_error(path, root) if root else StorageError(
            f"{path}: is a symbolic link: refused (raytal never writes through a link it did not make); remove "
            "the link or choose another path"))
    if stat.S_ISDIR(mode):
        raise StorageError(f"{path}: is a directory, expected a file")


@contextlib.contextmanager
def _local_write_errors(p: PathLike) -> Iterator[None]:
    """A local write that fails for a reason the user can fix (permissions, a full disk, a path through a
    regular file) as one line naming the path."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(f"{resolve(p)}: cannot write: {e.strerror or e}") from None


def _local_makedirs(path: str) -> None:
    with _local_write_errors(path):
        os.close(_open_dir(path, create=True))


@contextlib.contextmanager
def open_output_stream(p: PathLike) -> Iterator[pa.NativeFile]:
    """A writer whose content replaces ``p`` only if the ``with`` block finishes without an exception.

    Local: a temporary file beside ``p`` (``O_EXCL | O_NOFOLLOW``), flushed to disk and renamed over it
    (parent directories are created; a link at ``p``, or at a directory below a ``guard``, is refused).
    Object store: the bytes are buffered in memory and uploaded at the end, because pyarrow cannot abort
    an upload: closing a failed stream would publish a partial object. Stream large outputs (Parquet
    datasets) with Ray Data instead.
    """
    fs, inner = filesystem(p)
    if fs is not _LOCAL:
        buf = pa.BufferOutputStream()
        yield buf
        with _io(p), fs.open_output_stream(inner, compression=None) as out:
            out.write(buf.getvalue())
        return
    directory, name = os.path.split(inner)
    with _local_write_errors(p):
        dir_fd = _open_dir(directory, create=True)
    tmp = f".{name}.{uuid.uuid4().hex}{_TMP_SUFFIX}"
    try:
        with _local_write_errors(p):
            _refuse_link(dir_fd, name, inner)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as handle:
            yield pa.PythonFile(handle, mode="w")
            handle.flush()
            with _local_write_errors(p):
                os.fsync(handle.fileno())  # a rename of unflushed data can leave an empty file after a power cut
        with _local_write_errors(p):
            _refuse_link(dir_fd, name, inner)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        os.close(dir_fd)


def append_text(p: PathLike, text: str) -> None:
    """Append ``text`` to a local file (created if missing) without following a link at it; appends of a
    few KB from several processes do not interleave (``O_APPEND``). Object stores cannot append."""
    r = resolve(p)
    if is_uri(r):
        raise StorageError(f"{r}: appending is for local files")
    directory, name = os.path.split(r)
    with _local_write_errors(r):
        dir_fd = _open_dir(directory, create=True)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                _refuse_link(dir_fd, name, r)
            raise
        finally:
            os.close(dir_fd)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)


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
        with _io(dst):
            src_fs.copy_file(src_inner, dst_inner)
        return
    with _io(src):
        reader = src_fs.open_input_stream(src_inner, compression=None)
    with reader, open_output_stream(dst) as w:
        while chunk := reader.read(1 << 24):
            w.write(chunk)


def move_file(src: PathLike, dst: PathLike) -> None:
    """Move one file onto ``dst`` (replaced atomically; never through a link): a rename locally, a copy and a
    delete on an object store."""
    s, d = resolve(src), resolve(dst)
    if is_uri(s) or is_uri(d):
        copy_file(s, d)
        delete_file(s)
        return
    with _local_write_errors(d):
        src_fd = _open_dir(os.path.dirname(s), create=False)
        try:
            dst_fd = _open_dir(os.path.dirname(d), create=True)
            try:
                _refuse_link(dst_fd, os.path.basename(d), d)
                os.replace(os.path.basename(s), os.path.basename(d), src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)


def delete_file(p: PathLike, missing_ok: bool = False) -> None:
    fs, inner = filesystem(p)
    if missing_ok and not exists(p):
        return
    with _io(p):
        fs.delete_file(inner)


def delete_dir(p: PathLike, missing_ok: bool = False) -> None:
    """Delete a directory and everything under it (links inside are removed, never followed)."""
    fs, inner = filesystem(p)
    if missing_ok and not exists(p):
        return
    with _io(p):
        fs.delete_dir(inner)
