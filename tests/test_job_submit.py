"""`ray job submit` of the tiny self-training run to a local head bound to 127.0.0.1 (docs/cluster.md).

The head is a separate Ray instance from the pytest session's one (``ray_session``), so every port it
opens is picked free here, its temp dir is private, and it gets its own token (a file in its temp dir,
handed to head and client through ``RAY_AUTH_TOKEN_PATH`` with ``RAY_AUTH_MODE=token`` on both sides,
so ``~/.ray`` is never touched). It is started with ``ray start --block`` and stopped by signalling
that one process, which shuts down what it started: ``ray stop`` would stop every Ray on the machine,
the session's included.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from raytal.core.outputs import MANIFEST
from raytal.data.index import RunIndex
from raytal.data.pseudo_io import read_pseudo_labels

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).parent / "ray")
HOST = "127.0.0.1"
HEAD_START_POLLS = 120  # × 1 s: `ray start` on 2 busy cores takes ~10 s


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all sockets held open until every port is chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def run_cli(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([RAY_CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


class LocalHead:
    """``ray start --head --block`` on free loopback ports, with token auth; ``stop()`` ends it."""

    def __init__(self, workdir: Path):
        gcs, dash, client, agent, agent_grpc, runtime_env, metrics = free_ports(7)
        self.workdir = workdir
        token = workdir / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        self.dashboard = f"http://{HOST}:{dash}"
        self.log = open(workdir / "head.log", "w")
        self.proc = subprocess.Popen(
            [RAY_CLI, "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={gcs}",
             f"--dashboard-host={HOST}", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
             "--num-cpus=2", f"--temp-dir={workdir / 'ray'}", "--disable-usage-stats"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Until the job API answers (with the token) or the head process dies."""
        for _ in range(HEAD_START_POLLS):
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self.log.name}")
            if run_cli(["job", "list", "--address", self.dashboard], self.env, timeout=60).returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"the head's job API at {self.dashboard} never answered; see {self.log.name}")

    def diagnostics(self, lines: int = 40) -> str:
        """The last lines of the head's own log and of Ray's dashboard and job logs, for a failure message
        (the fixture deletes the head's directory afterwards)."""
        logs = self.workdir / "ray" / "session_latest" / "logs"
        out = []
        for path in [self.workdir / "head.log", *sorted(logs.glob("dashboard*")), *sorted(logs.glob("job-driver-*"))]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM makes `ray start --block` stop the processes it started; SIGKILL the group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def local_head() -> Iterator[LocalHead]:
    # a short path: Ray's unix sockets live under the temp dir and must fit in 107 characters
    workdir = Path(tempfile.mkdtemp(prefix="rt_head_", dir="/tmp"))
    head = LocalHead(workdir)
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.ray
def test_ray_job_submit_runs_the_tiny_selftraining(local_head, tmp_path):
    data, run_dir = tmp_path / "tiny", tmp_path / "run"
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(data)],
                   check=True, cwd=REPO, capture_output=True)
    job_id = f"raytal_test_{secrets.token_hex(4)}"
    entrypoint = [sys.executable, str(REPO / "jobs" / "selftrain.py"),
                  "--config", str(REPO / "configs" / "tiny_npl.yaml"),
                  "--set", f"data.root={data}", "--set", f"run.dir={run_dir}",
                  "--set", "train.epochs=2", "--set", "run.rounds=1"]
    try:
        submit = run_cli(["job", "submit", "--address", local_head.dashboard, "--submission-id", job_id,
                          "--", *entrypoint], local_head.env)
        status = run_cli(["job", "status", "--address", local_head.dashboard, job_id], local_head.env, timeout=60)
        # Ray's CLI prints exactly this line for JobStatus.SUCCEEDED (dashboard/modules/job/cli.py)
        assert f"Job '{job_id}' succeeded" in status.stdout, (submit.stdout[-3000:], submit.stderr[-3000:],
                                                              status.stdout, status.stderr, local_head.diagnostics())
    finally:
        # a failed test must not leave the job's driver running after the head is gone
        run_cli(["job", "stop", "--address", local_head.dashboard, job_id], local_head.env, timeout=60)
    assert submit.returncode == 0  # `ray job submit` exits 1 when the job it tailed did not succeed
    assert (run_dir / "metrics.json").exists()
    assert "Test mAP (%)" in submit.stdout
    # The run's layout: its split is an index over the dataset (no copy of it), and round 1's pseudo labels
    # are one shard=<k> directory per pseudo source with one row per unlabeled video, beside the manifest of
    # what the job wrote there.
    index = RunIndex.load(str(run_dir / "index.json"))
    assert not (run_dir / "data").exists()
    pseudo = run_dir / "round_1" / "pseudo"
    shards = [f"shard={k}" for k in range(len(index.pseudo_sources()))]
    assert sorted(p.name for p in pseudo.iterdir()) == sorted([MANIFEST, *shards])
    assert len(read_pseudo_labels(pseudo)) == index.count("unlabeled") > 0
