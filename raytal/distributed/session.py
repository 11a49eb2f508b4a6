"""Connecting to Ray: an existing cluster when one is named, else a private local Ray on 127.0.0.1.

Every job and every Ray test goes through ``ensure_ray`` so the local set-up is the same everywhere:
the dashboard, GCS and raylet listen on loopback only (nothing on the machine's public interfaces),
and the driver's console shows warnings, not Ray's start-up chatter.
"""

from __future__ import annotations

import logging
import os

import ray
from ray._private import ray_constants

LOCALHOST = "127.0.0.1"
_CLUSTER_FLAG = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR


def ensure_ray(address: str = "", num_cpus: int | None = None) -> None:
    """Make sure this process is connected to Ray; a no-op when it already is.

    ``address`` (the config's ``ray.address``) wins; else ``RAY_ADDRESS``; else a new local Ray with
    ``num_cpus`` CPUs (None = all) bound to 127.0.0.1. ``num_cpus`` applies only to a new local Ray:
    a cluster's size is the cluster's business.
    """
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"ensure_ray: num_cpus must be >= 1 or None, got {num_cpus}")
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS", "")
    if target:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=True)
        return
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
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_FLAG, None)
        else:
            os.environ[_CLUSTER_FLAG] = saved_env
