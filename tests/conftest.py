"""Shared pytest fixtures. ``ray_session``: ONE local Ray for every ``@pytest.mark.ray`` test of the
session, because starting Ray costs seconds and the CI machine has 2 cores. ``s3_endpoint``: ONE real
S3 endpoint (moto server on 127.0.0.1) with a bucket, for the tests of ``s3://`` paths. ``shared_data``:
the third-party files (thumos14.json, external/...) that are not part of the repository; tests and
benchmarks find them only through ``shared_data_dir`` and skip, saying what is missing, without them."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parent)
S3_BUCKET = "raytal-test"


def _moto_server_installed() -> bool:
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None


SHARED_DATA_ENV = "RAYTAL_SHARED_DATA"


def shared_data_dir() -> Path:
    """Where the shared third-party data lives: $RAYTAL_SHARED_DATA, else <repo>/../shared/data."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else Path(TESTS_DIR).parents[1] / "shared" / "data"


def shared_data_path(relative: str) -> Path:
    """``shared_data_dir() / relative``, or skip the calling test naming the missing path."""
    path = shared_data_dir() / relative
    if not path.exists():
        pytest.skip(f"third-party data {path} not found (set {SHARED_DATA_ENV} to the directory holding '{relative}')")
    return path


@pytest.fixture
def shared_data():
    """``shared_data("thumos14.json")`` -> the file's path; the test is skipped when it is absent."""
    return shared_data_path


def start_moto_server(log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free port of 127.0.0.1 (``env``: extra variables for it), answering: (process,
    url). Skips the calling test without moto[server]."""
    if not _moto_server_installed():
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]'): no local S3 endpoint")
    with socket.socket() as s:  # a free port; the tiny race until moto binds it is acceptable in tests
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    # Wait until it answers; the bound only turns a server that never comes up into a failure, not a hang.
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return proc, url
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server on {url} did not start:\n{log.read_text()}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """``s3://raytal-test``, a bucket on a moto server started for this session on 127.0.0.1.

    The endpoint and fake credentials go into this process's environment (the standard AWS variables,
    read by ``raytal.core.storage`` and by pyarrow's ``FileSystem.from_uri``, which Ray Data and Ray
    Train use), and from there into the Ray started by ``ray_session``, which starts this fixture first
    when any test of the session uses it (Ray workers only see variables set before Ray starts)."""
    import pyarrow.fs as pafs

    proc, url = start_moto_server(tmp_path_factory.mktemp("moto") / "moto_server.log")
    env = {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any credentials; real ones must not reach it
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an EC2 instance-metadata lookup
    }
    cleared = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    saved = {k: os.environ.get(k) for k in (*env, *cleared)}
    for k in cleared:
        os.environ.pop(k, None)
    os.environ.update(env)
    pafs.S3FileSystem(endpoint_override=url, allow_bucket_creation=True).create_dir(S3_BUCKET)
    yield f"s3://{S3_BUCKET}"
    proc.terminate()
    proc.wait()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_dir(s3_endpoint, request) -> str:
    """A fresh prefix of the test bucket for one test (the bucket lives for the whole session)."""
    return f"{s3_endpoint}/{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def ray_session(request) -> Iterator[None]:
    import ray

    from raytal.distributed.session import ensure_ray

    # Ray's workers inherit the environment of the process that starts Ray, and only as it is then:
    # the S3 endpoint's variables must be in place first.
    if _moto_server_installed() and any("s3_endpoint" in getattr(item, "fixturenames", ())
                                        for item in request.session.items):
        request.getfixturevalue("s3_endpoint")

    # pytest imports test modules as top-level modules from tests/; Ray workers unpickling a test's
    # module-level function must find them too, and they inherit the environment of the local Ray.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH", "")) if p)
    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny synthetic dataset (jobs/make_dataset.py --preset tiny), built once per test session."""
    import sys

    sys.path.insert(0, str(Path(TESTS_DIR).parent / "jobs"))
    import make_dataset

    out = tmp_path_factory.mktemp("tiny_data")
    assert make_dataset.main(["--preset", "tiny", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def untrained_teacher(tmp_path_factory) -> Path:
    """An untrained detector checkpoint of the tiny dataset's shape (5 classes, D = 32): for the jobs that
    read the teacher's kind from its checkpoint while stand-in stages do the inference."""
    from cluster_scenarios import untrained_teacher
    from raytal.config import load_config

    cfg = load_config(Path(TESTS_DIR).parent / "configs" / "base" / "tiny.yaml")
    return Path(untrained_teacher(cfg, tmp_path_factory.mktemp("teacher") / "teacher.pt", 5, 32))
