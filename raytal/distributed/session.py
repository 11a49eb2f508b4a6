"""Connecting to Ray: an existing cluster when one is named, else a private local Ray on 127.0.0.1.

Every job and every Ray test goes through ``ensure_ray`` so the local set-up is the same everywhere:
the dashboard, GCS and raylet listen on loopback only (nothing on the machine's public interfaces).

The console is the project's: its stage lines, one progress bar per stage and its tables. Ray's own
output goes to files unless ``verbose``: what Ray logs in this process (start-up and token-auth notices,
Ray Data's and Ray Train's messages) to ``ray_log_file()``, what its workers and system processes print
to Ray's session logs (``log_to_driver=False``), and Ray Data's progress bars are off.
"""

from __future__ import annotations

import logging
import os

import ray
from ray._private import ray_constants
from ray.data import DataContext

from raytal.core.logfiles import log_file

LOCALHOST = "127.0.0.1"
_CLUSTER_FLAG = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR


def _quiet_logs() -> None:
    """Ray's loggers in this process write to a log file of this job instead of the console."""
    path = log_file(f"raytal-ray-{os.getpid()}.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.data"):  # ray.data keeps handlers of its own (its session file and the console)
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if not isinstance(h, logging.FileHandler):
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
    level = logging.INFO if verbose else logging.WARNING
    target = address or os.environ.get("RAY_ADDRESS", "")
    if target:
        ray.init(address=target, logging_level=level, log_to_driver=verbose)
    else:
        _start_local(num_cpus, level, verbose)
    if not verbose:
        _quiet_logs()


def _start_local(num_cpus: int | None, level: int, verbose: bool) -> None:
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
            logging_level=level,
            log_to_driver=verbose,
            configure_logging=True,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_FLAG, None)
        else:
            os.environ[_CLUSTER_FLAG] = saved_env
