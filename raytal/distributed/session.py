"""Connecting to Ray: an existing cluster when one is named, else a private local Ray on 127.0.0.1.

Every job and every Ray test goes through ``ensure_ray`` so the local set-up is the same everywhere:
the dashboard, GCS and raylet listen on loopback only (nothing on the machine's public interfaces).

The console is the project's: its stage lines, one progress bar per stage and its tables. Ray's own
output goes to files unless ``verbose``: what Ray logs in this process (start-up and token-auth notices,
Ray Data's and Ray Train's messages, its Python warnings) to a log file of the job (``ray_log``), what its
workers and system processes print to Ray's session logs (``log_to_driver=False``), and Ray Data's
progress bars are off. A job also sends to that file what Ray writes to the process's stderr itself (its
C++ core worker's error lines; ``quiet_console``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import ray
from ray._private import ray_constants
from ray.data import DataContext

from raytal.core.logfiles import log_file

LOCALHOST = "127.0.0.1"
_CLUSTER_FLAG = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR


def ray_log() -> Path:
    """The log file of Ray's own output in this process."""
    return log_file(f"raytal-ray-{os.getpid()}.log")


def quiet_console() -> None:
    """File descriptor 2 — where Ray's C++ core worker in this process and the Ray processes this job starts
    (they inherit it) write — goes to ``ray_log()``; Python's ``sys.stderr``, and the log handlers writing to
    it, move to a copy of the original descriptor, so the project's own output stays on the console (or in
    the file the console was redirected to). For jobs: a process that joins a Ray it already runs (a test, a
    notebook) keeps its descriptors."""
    console = os.fdopen(os.dup(2), "w", buffering=1)
    for handler in logging.root.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
            handler.setStream(console)
    sys.stderr = console
    with open(ray_log(), "a") as log:
        os.dup2(log.fileno(), 2)


def _quiet_logs() -> None:
    """Ray's loggers and Python's warnings (Ray's, in practice) in this process write to ``ray_log()``."""
    path = ray_log()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    for name in ("ray", "ray.data", "py.warnings"):  # ray.data has handlers of its own (a session file, the console)
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):  # the console's
                logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("raytal").info("Ray's own output: %s and Ray's session logs (/tmp/ray/session_latest/logs "
                                     "on each node); --verbose shows it here", path)


def ensure_ray(address: str = "", num_cpus: int | None = None, verbose: bool = False) -> None:
    """Make sure this process is connected to Ray; a no-op when it already is.

    ``address`` (the config's ``ray.address``) wins; else ``RAY_ADDRESS``; else a new local Ray with
    ``num_cpus`` CPUs (None = all) bound to 127.0.0.1. ``num_cpus`` applies only to a new local Ray:
    a cluster's size is the cluster's business. ``verbose`` keeps Ray's own output on the console.
    """
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"ensure_ray: num_cpus must be >= 1 or None, got {num_cpus}")
    if ray.is_initialized():
        return
    DataContext.get_current().enable_progress_bars = verbose
    target = address or os.environ.get("RAY_ADDRESS", "")
    logs = {"logging_level": logging.INFO if verbose else logging.WARNING, "configure_logging": verbose,
            "log_to_driver": verbose}
    # ray.init logs its own notices (token auth, dashboard) while it starts, before its "ray" logger has a
    # handler (it clears the logger's handlers when it does not configure them): to this process's stderr.
    with open(ray_log(), "a") if not verbose else contextlib.nullcontext() as log:
        with contextlib.redirect_stderr(log) if log else contextlib.nullcontext():
            if target:
                ray.init(address=target, **logs)
            else:
                _start_local(num_cpus, logs)
    if not verbose:
        _quiet_logs()


def _start_local(num_cpus: int | None, logs: dict) -> None:
    # Ray resolves 127.0.0.1 to the machine's routable IP (so other nodes could join) and binds GCS,
    # raylet and workers there. This flag (named for Windows/macOS, where it defaults off) keeps a
    # single-machine Ray on loopback; the processes Ray spawns inherit it from the environment. It is
    # restored afterwards so a later connection to a real cluster from this process is unaffected.
    saved_env, saved_flag = os.environ.get(_CLUSTER_FLAG), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_FLAG] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host=LOCALHOST,
            _node_ip_address=LOCALHOST,
            **logs,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_FLAG, None)
        else:
            os.environ[_CLUSTER_FLAG] = saved_env
