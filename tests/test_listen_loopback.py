"""A local run listens on loopback only (issue "Hostile and careless input").

The session's local Ray (``ensure_ray``, 127.0.0.1) runs a real 2-worker DDP stage through ``train_ray``
(the same ``TorchTrainer`` configuration every raytal run uses) while a thread in this process samples
every listening socket of every process of the run: this process (the driver) and all its descendants,
which for a Ray started here are GCS, raylet, dashboard and its agents, the runtime-env agent, the log
monitor and all workers, Ray Train's controller and workers and Ray Data's split coordinator and read
tasks among them. Listening = a TCP socket in LISTEN or a bound UDP socket without a peer. None may be
bound to a non-loopback or wildcard address.

The samples must catch the process group alive: the test requires one in which the two Train workers
hold a TCP connection from one to a socket the other listens on (the store or a gloo pair), which only
exists between ``init_process_group`` and the group's shutdown.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from raytal.config import load_config
from raytal.data.index import build_index
from raytal.distributed.process_group import collective_backend, interface_of
from raytal.distributed.ray_train import train_ray
from raytal.selftrain.local import LocalBackend
from raytal.selftrain.rounds import Rounds

REPO = Path(__file__).resolve().parents[1]
TRAIN_WORKER = "ray::RayTrainWorker"


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # a dual-stack socket shows 127.0.0.1 as ::ffff:127.0.0.1
    return (mapped or ip).is_loopback


def _proc_name(p: psutil.Process) -> str:
    cmd = p.cmdline()
    if not cmd:
        return p.name()
    if cmd[0].startswith("ray::"):  # a Ray worker is titled by its actor and task: "ray::RayTrainWorker.run_train_fn"
        return cmd[0].split()[0].split(".")[0]
    prog = Path(cmd[0]).name
    if prog.startswith("python"):  # a Python service is named by its script (dashboard.py, agent.py, ...)
        return next((Path(a).name for a in cmd[1:] if not a.startswith("-")), prog)
    return prog


@dataclass
class Sampler:
    """Samples the listening sockets of this process and its descendants until stopped."""

    listening: dict[tuple[str, str, str], set[int]] = field(default_factory=dict)  # (process, proto, addr) -> ports
    names: set[str] = field(default_factory=set)
    group_seen: bool = False
    samples: int = 0

    def sample(self) -> None:
        me = psutil.Process()
        listen: dict[int, set[int]] = {}  # pid -> listening TCP ports (train workers only)
        out: dict[int, set[int]] = {}  # pid -> remote ports of its established TCP connections (train workers)
        for p in [me, *me.children(recursive=True)]:
            try:
                name, conns = _proc_name(p), p.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # gone between listing and reading: nothing left to listen
            self.names.add(name)
            for c in conns:
                tcp = c.type == socket.SOCK_STREAM
                if (tcp and c.status == psutil.CONN_LISTEN) or (not tcp and not c.raddr):
                    key = (name, "tcp" if tcp else "udp", c.laddr.ip)
                    self.listening.setdefault(key, set()).add(c.laddr.port)
                    if tcp and name == TRAIN_WORKER:
                        listen.setdefault(p.pid, set()).add(c.laddr.port)
                elif tcp and c.status == psutil.CONN_ESTABLISHED and name == TRAIN_WORKER:
                    out.setdefault(p.pid, set()).add(c.raddr.port)
        # One worker connected to a port another worker listens on: the process group is up.
        if any(out.get(a, set()) & ports for b, ports in listen.items() for a in listen if a != b):
            self.group_seen = True
        self.samples += 1

    def __enter__(self) -> Sampler:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.1)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_loopback_interface_is_found():
    # Linux names its loopback interface "lo" (macOS "lo0"); 127.0.0.1 is always on it. An address no
    # interface holds (TEST-NET-3, RFC 5737) has none.
    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("203.0.113.77") is None


def test_gpu_workers_get_nccl_and_cpu_workers_gloo():
    # Ray's rule for TorchConfig(backend=None), kept by the node-bound start-up; a backend set explicitly wins.
    assert collective_backend(None, {"CPU": 0.5}) == "gloo"
    assert collective_backend(None, {"CPU": 4.0, "GPU": 1.0}) == "nccl"
    assert collective_backend(None, {"GPU": 0.5}) == "nccl"
    assert collective_backend("gloo", {"GPU": 1.0}) == "gloo"


@pytest.mark.ray
def test_local_run_listens_on_loopback_only(ray_session, tiny_data, tmp_path):
    cfg = load_config(REPO / "configs" / "tiny_npl.yaml", [
        f"data.root={tiny_data}", f"run.dir={tmp_path}", "train.epochs=1", "train.warmup_epochs=1",
        "data.labeled_ratio=0.3", "train.torch_threads=1", "ray.num_workers=2", "ray.cpus_per_worker=0.5",
    ])
    spec = Rounds(cfg, LocalBackend()).train_spec(build_index(cfg.data), "stage")  # a teacher stage, as a run builds it
    with Sampler() as sampler:
        train_ray(cfg, spec)

    # The samples covered the run: Ray's services and the 2 Train workers with their group alive.
    assert {"gcs_server", "raylet", TRAIN_WORKER} <= sampler.names, sampler.names
    assert sampler.group_seen, f"no sample ({sampler.samples}) caught the 2 Train workers connected to each other"
    offenders = sorted(
        f"{name} {proto} {addr} ports {sorted(ports)}"
        for (name, proto, addr), ports in sampler.listening.items() if not _is_loopback(addr)
    )
    assert not offenders, "listening on a non-loopback address:\n" + "\n".join(offenders)
