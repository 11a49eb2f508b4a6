"""Shared pytest fixtures. ``ray_session``: ONE local Ray for every ``@pytest.mark.ray`` test of the
session, because starting Ray costs seconds and the CI machine has 2 cores. ``shared_data``: the
third-party files (thumos14.json, external/...) that are not part of the repository; tests and
benchmarks find them only through ``shared_data_dir`` and skip, saying what is missing, without them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parent)
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


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    from raytal.distributed.session import ensure_ray

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
