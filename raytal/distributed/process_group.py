"""The torch process group of the Ray Train workers, listening on the node's Ray address only.

Ray Train's ``TorchConfig`` starts the group through ``env://``: rank 0 then hosts torch's ``TCPStore``,
whose server binds the wildcard address (``::``, every interface) whatever ``MASTER_ADDR`` says; neither
torch nor Ray has an option or variable for the bind address. And gloo listens on the address the
machine's hostname resolves to, NCCL's bootstrap on the first interface it likes that is not loopback:
on many machines a LAN or public interface.

``NodeBoundTorchConfig`` changes only how the group is started: rank 0 binds the store's socket itself, to
its Ray node address, and hands it to ``TCPStore`` (``master_listen_fd``); every rank pins gloo and NCCL
to the interface carrying its node address (``GLOO_SOCKET_IFNAME``, ``NCCL_SOCKET_IFNAME``; a variable
the user set wins). The node address is 127.0.0.1 for the local Ray of ``ensure_ray`` and the node's
private address on a cluster (the one Ray itself uses), so the group listens on loopback locally and on
the private network on a cluster. Built on Ray's own extension point (a ``TorchConfig`` whose
``backend_cls`` is a ``_TorchBackend`` subclass, as Ray's ``TorchftConfig`` does); start-up, shutdown
and device handling stay Ray's.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import psutil
import ray
import torch.distributed as dist
from ray.train.torch.config import TorchConfig, _set_torch_distributed_env_vars, _TorchBackend

# Interface variables of the collective back-ends: gloo takes a name, NCCL a prefix unless "=" makes it exact.
IFNAME_ENVS = {"GLOO_SOCKET_IFNAME": "", "NCCL_SOCKET_IFNAME": "="}

# Rank 0's store server. It must outlive the remote call that creates it, so it lives in the worker
# process for the life of the worker (Ray starts new worker processes when it restarts the group).
_server: dist.TCPStore | None = None


def interface_of(address: str) -> str | None:
    """The name of this machine's network interface that holds ``address`` (None if none does)."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == address for a in addrs):
            return name
    return None


def _host_store(timeout_s: int) -> tuple[str, int]:
    """On rank 0: start the store server on a socket bound to this node's Ray address; returns it."""
    global _server
    addr = ray.util.get_node_ip_address()
    sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((addr, 0))
    sock.listen()
    port = sock.getsockname()[1]
    # detach: the store's event loop owns (and closes) the descriptor from now on.
    _server = dist.TCPStore(
        addr, port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=timeout_s),
        master_listen_fd=sock.detach(),
    )
    return addr, port


def _join_group(backend: str, rank: int, world_size: int, addr: str, port: int, timeout_s: int) -> None:
    iface = interface_of(ray.util.get_node_ip_address())
    if iface is not None:
        for env, prefix in IFNAME_ENVS.items():
            os.environ.setdefault(env, prefix + iface)
    timeout = timedelta(seconds=timeout_s)
    store = _server if rank == 0 else dist.TCPStore(addr, port, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def collective_backend(configured: str | None, resources_per_worker: dict) -> str:
    """The backend ``TorchConfig.backend`` means: as configured, else NCCL for workers holding a GPU and gloo
    otherwise (Ray's own rule for None, which ``_TorchBackend.on_start`` applies and this backend replaces)."""
    if configured is not None:
        return configured
    return "nccl" if resources_per_worker.get("GPU", 0) > 0 else "gloo"


class _NodeBoundTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        backend = collective_backend(backend_config.backend, worker_group.get_resources_per_worker())
        addr, port = worker_group.execute_single(0, _host_store, backend_config.timeout_s)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([
            worker_group.execute_single_async(
                rank, _join_group, backend, rank, len(worker_group), addr, port, backend_config.timeout_s,
            )
            for rank in range(len(worker_group))
        ])


class NodeBoundTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group listens on the workers' Ray node address only.

    ``backend`` None = gloo on CPU workers, NCCL on GPU workers (``collective_backend``), both pinned to the
    node's interface; ``init_method`` is not used (the group always starts from rank 0's store);
    ``timeout_s`` as in ``TorchConfig``.
    """

    @property
    def backend_cls(self):
        return _NodeBoundTorchBackend
