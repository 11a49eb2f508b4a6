"""Multi-node and fault scenarios, each run in a fresh Python process by tests/test_multinode.py and
tests/test_faults.py:

    python tests/cluster_scenarios.py SCENARIO WORKDIR DATASET_ROOT      -> prints one JSON line (RESULT ...)

Why a separate process: a driver holds one Ray connection for its whole life. The pytest session
already holds the shared local Ray of ``tests/conftest.py``; a ``ray.cluster_utils.Cluster`` (or a
local Ray started with a fault-injection environment variable, which only reaches workers when it is set
before Ray starts) would need that connection shut down and the session's Ray restarted afterwards, in
the right order, and a scenario that hangs or crashes (they kill workers and nodes on purpose) would
take the whole test session down with it. In its own process a scenario gets its own Ray, cannot
disturb the session's, and everything it started is torn down when it exits.

The scenarios use the real back-end (``RayBackend``: Ray Train for training, the Ray Data pipeline for
pseudo labels) on the run's index over a tiny dataset whose training subset is written in shards of 8
videos (``make_tiny``), so a round labels several pseudo sources, each into its own ``shard=<k>``. Only the
fault injection is test code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

SCENARIO_TIMEOUT_S = 900  # a hung scenario fails its test instead of hanging CI

# Small and fast: a tiny detector, 2-3 epochs of 2 steps, fractional CPUs so everything fits on a 2-core
# machine. Ray Train reads its data with one Ray Data task per unit per pass, and the passes cover the steps
# plus the shuffle buffer: with the defaults (buffer 64, 15 steps), the 3 labeled videos (3 shard files)
# of the multinode scenario's student took 132 read tasks, each waiting ~15 s to be scheduled on the
# simulated cluster of a loaded 2-core machine: the scenario timed out.
SMALL = ["train.epochs=3", "train.warmup_epochs=1", "train.steps_per_epoch=2", "train.shuffle_buffer=4",
         "ray.infer_batch_size=2"]
ROWS_PER_SHARD = 8  # the tiny training subset's 32 videos in 4 shard files: the split's unlabeled videos span all 4


def _config(root: str, run_dir: Path, *extra: str):
    """tiny_npl on the dataset at ``root``, made small by SMALL and ``extra`` (``key=value`` overrides)."""
    from raytal.config import load_config

    return load_config(REPO / "configs" / "tiny_npl.yaml", [f"data.root={root}", f"run.dir={run_dir}", *SMALL, *extra])


def make_tiny(out: Path) -> Path:
    """The tiny synthetic dataset (jobs/make_dataset.py --preset tiny) in shards of ROWS_PER_SHARD videos."""
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(out),
                    "--rows-per-shard", str(ROWS_PER_SHARD)], check=True, capture_output=True)
    return out


def _run(cfg):
    """The run of ``cfg`` on the Ray back-end and its index (what run_selftrain does first)."""
    from raytal.distributed.backend import RayBackend
    from raytal.selftrain.rounds import Rounds

    run = Rounds(cfg, RayBackend(cfg))
    return run, run.load_index()


def untrained_teacher(cfg, path: Path, num_classes: int, input_dim: int) -> str:
    """A round-0 checkpoint without the training (the pseudo-label scenarios test plumbing, not quality)."""
    from raytal.engine.checkpoint import save_checkpoint
    from raytal.selftrain.models import build_detector, detector_state

    save_checkpoint(path, detector_state(build_detector(cfg, num_classes, input_dim), None, num_classes, input_dim, 0))
    return str(path)


def rows_by_source(out_dir: str | Path) -> dict[str, list[str]]:
    """{"shard=<k>": every video id in that directory, duplicates kept} (read_pseudo_labels would refuse
    duplicates), plus any file outside a source directory under "stray". Local or a storage URI."""
    from raytal.core import storage

    root = storage.resolve(out_dir)
    out: dict[str, list[str]] = {}
    for f in storage.list_files(root, suffix=".parquet"):
        parent = storage.parent(f)
        name = storage.name(parent)
        key = name if storage.parent(parent) == root and name.startswith("shard=") else "stray"
        table = pq.read_table(storage.open_input_file(f), columns=["video_id"])
        out.setdefault(key, []).extend(table.column("video_id").to_pylist())
    return out


def _source_ids(spec) -> dict[str, list[str]]:
    """{"shard=<k>": the ids source k of a LabelSpec holds}: what its pseudo-label directory must hold."""
    from raytal.data.index import source_ids

    return {f"shard={k}": source_ids(src) for k, (_, src) in enumerate(spec.sources)}


def _actor_nodes(class_fragment: str) -> dict[str, list[str]]:
    """{actor class name: sorted distinct node ids} of every actor (alive or dead) whose class matches."""
    from ray.util.state import list_actors

    out: dict[str, set[str]] = {}
    for a in list_actors(limit=10_000, raise_on_missing_output=False):
        if class_fragment in a.class_name:
            out.setdefault(a.class_name, set()).add(a.node_id)
    return {k: sorted(v) for k, v in out.items()}


def _task_nodes(name_fragment: str) -> list[str]:
    """Sorted distinct node ids of every task whose name matches."""
    from ray.util.state import list_tasks

    return sorted({t.node_id for t in list_tasks(limit=10_000, raise_on_missing_output=False)
                   if name_fragment in t.name and t.node_id})


def _free_port() -> int:
    """A free loopback port (Ray's default dashboard port 8265 is taken by any other Ray on the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster(worker_cpus: int, head_cpus: int = 0):
    """A head (no CPUs: the driver's node does no work) and 2 worker nodes, each declaring one GPU that
    does not exist: a resource Ray schedules by (1 GPU per inference actor, so one actor per node, as on
    the real cluster), while the teacher itself runs on the CPU (the CPU build of torch sees no GPU)."""
    from ray.cluster_utils import Cluster

    # The dashboard (loopback only) serves the state API that tells which node ran each actor and task.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": True,
                                                            "dashboard_host": "127.0.0.1",
                                                            "dashboard_port": _free_port()})
    # Ray's own helpers inside the workers (e.g. Ray Train's placement-group cleaner) call ray.init() with
    # no address; with other Rays running on this machine they must find this cluster, not "the latest".
    os.environ["RAY_ADDRESS"] = cluster.address
    workers = [cluster.add_node(num_cpus=worker_cpus, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    import ray

    ray.init(address=cluster.address)
    return cluster, workers


def _shutdown(cluster) -> None:
    import ray

    ray.shutdown()  # the driver first: Cluster refuses to remove the node its own driver is connected to
    cluster.shutdown()


def _node_ids(nodes) -> list[str]:
    return [n.node_id for n in nodes]


# ------------------------------------------------------------------------ driver side (pytest)


def child_env(**extra: str) -> dict[str, str]:
    """The child starts its own Ray: no inherited cluster address, tests/ importable by its workers."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_scenario(name: str, work: Path, tiny: Path, **env: str) -> dict:
    """Run one scenario in a child process; its JSON result (the assertions are the caller's)."""
    proc = subprocess.run([sys.executable, str(Path(__file__)), name, str(work), str(tiny)], capture_output=True,
                          text=True, env=child_env(**env), timeout=SCENARIO_TIMEOUT_S, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# -------------------------------------------------------------------------------------- scenarios


def multinode(work: Path, root: str) -> dict:
    """The main job (jobs/selftrain.py, round 1 from a given teacher) on a head + 2 worker nodes, its run
    directory at ``SCENARIO_RUN_DIR`` (the caller's S3 endpoint): pseudo labels and DDP training."""
    import raytal.distributed.backend as backend
    from raytal.core import storage
    from raytal.data.index import RunIndex, source_ids
    from raytal.engine.checkpoint import load_checkpoint

    sys.path.insert(0, str(REPO / "jobs"))
    import selftrain as selftrain_job

    run_dir = os.environ["SCENARIO_RUN_DIR"]
    cluster, workers = _cluster(worker_cpus=2)
    # Placement by resources, as on a GPU cluster: an inference actor takes a node's one GPU, so a pool of
    # 2 runs on both nodes; a train worker takes 1.5 of a node's 2 CPUs, so the 2 DDP workers do too (on
    # CPU: Ray Train would move the model to the GPU it was given, and these GPUs do not exist).
    overrides = [*SMALL, "ray.num_workers=2", "ray.cpus_per_worker=1.5", "ray.actor_pool_size=2",
                 "ray.actor_cpus=0.5", "train.epochs=2"]
    # Round 0 from an untrained teacher (run.teacher): the scenario tests where the work runs, not quality.
    teacher = untrained_teacher(_config(root, work / "unused", *overrides[len(SMALL):]), work / "teacher.pt", 5, 32)
    marks = work / "marks"
    marks.mkdir(parents=True)
    pipeline = backend.run_pseudolabel_pipeline

    def probed_pipeline(spec, *, make_infer, use_gpu, **kw):
        # The probe around the job's own teacher, and the inference actors on the nodes' GPUs (training
        # stays on the CPU: ray.use_gpu would give the Train workers GPUs too).
        return pipeline(spec, make_infer=ProbedInfer(make_infer, str(marks), delay=3.0, busy_until_nodes=2),
                        use_gpu=True, **kw)

    backend.run_pseudolabel_pipeline = probed_pipeline
    _eager_pool()
    argv = ["--config", str(REPO / "configs" / "tiny_npl.yaml"), "--set", f"data.root={root}",
            "--set", f"run.dir={run_dir}", "--set", f"run.teacher={teacher}",
            *[a for o in overrides for a in ("--set", o)]]
    assert selftrain_job.main(argv) == 0
    stages = json.loads(storage.read_text(storage.join(run_dir, "stages.json")))["stages"]
    index = RunIndex.load(storage.join(run_dir, "index.json"))
    rows = rows_by_source(storage.join(run_dir, "round_1", "pseudo"))
    summary = stages["round_1/pseudo"]["result"]
    pseudo = {key: summary[key] for key in ("videos_in", "rows_out", "num_errors", "usable")}
    pseudo.update(ids=[v for ids in rows.values() for v in ids], by_source=rows,
                  source_ids={f"shard={k}": source_ids(src) for k, (_, src) in enumerate(index.pseudo_sources())},
                  unlabeled=index.count("unlabeled"), infer_nodes=sorted({n for ns in _seen(marks).values() for n in ns}),
                  actors=_actor_nodes("MapWorker"), label_tasks=_task_nodes("label_batch"))
    final = load_checkpoint(storage.join(run_dir, "round_1", "train", "final.pt"))
    metrics = json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))
    train = {"final_epoch": int(final["epoch"]), "workers": _actor_nodes("RayTrainWorker")}
    result = {"worker_nodes": _node_ids(workers), "head_node": cluster.head_node.node_id, "pseudo": pseudo,
              "train": train, "rounds": [r["round"] for r in metrics["rounds"]],
              "round_1_map": metrics["rounds"][1]["eval"]["average_mAP"],
              "local_files": sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()
                                    and not p.is_relative_to(marks))}
    _shutdown(cluster)
    return result


class ProbedInfer:
    """Teacher wrapper for the scenarios: marks every video it infers with the node and process that ran
    it (``marks/seen-<video>-<node>-<pid>``); sleeps ``delay`` s per video (a slow GPU model, so Ray
    Data's actor pool has a reason to grow) until ``busy_until_nodes`` nodes have inferred something, so
    the test does not depend on how fast this machine starts the second actor; optionally SIGKILLs its
    own process once the pool has seen ``kill_at`` distinct videos, as the OOM killer or a reclaimed spot
    instance would. Ray restarts the actor and retries its batch; the ``killed`` marker makes it once."""

    def __init__(self, make_infer, marks: str, kill_at: int | None = None, delay: float = 0.0,
                 busy_until_nodes: int = 1 << 30):
        self.make_infer, self.marks, self.kill_at, self.delay = make_infer, marks, kill_at, delay
        self.busy_until_nodes = busy_until_nodes

    def __call__(self):
        import ray

        infer = self.make_infer()
        marks = Path(self.marks)
        node = ray.get_runtime_context().get_node_id()

        def run(videos):
            if len({n for ns in _seen(marks).values() for n in ns}) < self.busy_until_nodes:
                time.sleep(self.delay * len(videos))
            for v in videos:
                (marks / f"seen-{v.video_id}-{node}-{os.getpid()}").touch()
            if self.kill_at is not None and len(_seen(marks)) >= self.kill_at and not (marks / "killed").exists():
                (marks / "killed").write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return infer(videos)

        return run


def _seen(marks: Path) -> dict[str, set[str]]:
    """{video id: nodes whose teacher inferred it} from the ProbedInfer marks."""
    out: dict[str, set[str]] = {}
    for p in marks.glob("seen-*"):
        _, vid, node, _pid = p.name.split("-")
        out.setdefault(vid, set()).add(node)
    return out


def _eager_pool() -> None:
    """Make the tiny set look like a big one to Ray Data: the pool grows as soon as one block waits instead
    of at Ray's utilization 1.75, which a job of a few seconds never reaches."""
    import ray.data

    ray.data.DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold = 0.5


def _pipeline(cfg, index, teacher: str, out: Path, marks: Path, kill_at: int | None = None, delay: float = 0.0,
              use_gpu: bool = False, busy_until_nodes: int = 1 << 30):
    """The Ray back-end's pseudo-label round on the run's pseudo sources (the recipe's real teacher and
    labeling stages) with a probe -> what it wrote."""
    from raytal.distributed.pseudo_pipeline import run_pseudolabel_pipeline
    from raytal.recipes.labeling import prepare_labeling
    from raytal.selftrain.models import DETECTOR
    from raytal.selftrain.spec import LabelSpec
    from raytal.selftrain.teacher import labeling_callables

    context = prepare_labeling(cfg, lambda: index.videos("labeled"), DETECTOR)
    spec = LabelSpec(teacher, 1, str(out), index.num_classes, index.setting, tuple(index.pseudo_sources()), context)
    make_infer, label_fn = labeling_callables(cfg, teacher, index.num_classes, context)
    marks.mkdir(parents=True, exist_ok=True)
    s = run_pseudolabel_pipeline(
        spec, make_infer=ProbedInfer(make_infer, str(marks), kill_at, delay, busy_until_nodes), label_video=label_fn,
        batch_size=cfg.ray.infer_batch_size, pool_size=cfg.ray.actor_pool_size, actor_cpus=cfg.ray.actor_cpus,
        use_gpu=use_gpu,
    )
    rows = rows_by_source(out)
    nodes = sorted({n for ns in _seen(marks).values() for n in ns})
    return {"videos_in": s.videos_in, "rows_out": s.rows_out, "num_errors": s.num_errors, "usable": s.usable,
            "ids": [v for ids in rows.values() for v in ids], "by_source": rows, "source_ids": _source_ids(spec),
            "infer_nodes": nodes}


def _reference_labels(out: Path) -> dict:
    from raytal.data.pseudo_io import read_pseudo_labels

    return {vid: {"segments": r.segments.tolist(), "labels": r.labels.tolist(), "error": r.error}
            for vid, r in read_pseudo_labels(out).items()}


def actor_killed(work: Path, root: str) -> dict:
    """An inference actor SIGKILLed mid-pipeline: the round must still give every video exactly one row,
    and the same rows as an undisturbed run."""
    from raytal.distributed.session import ensure_ray

    ensure_ray(num_cpus=2)
    cfg = _config(root, work / "run", "ray.actor_pool_size=2")
    _, index = _run(cfg)
    n_unlabeled = index.count("unlabeled")
    teacher = untrained_teacher(cfg, work / "teacher.pt", index.num_classes, index.feature_dim)
    clean = _pipeline(cfg, index, teacher, work / "clean", work / "marks_clean")
    faulty = _pipeline(cfg, index, teacher, work / "faulty", work / "marks", kill_at=n_unlabeled // 2)
    killed = (work / "marks" / "killed").read_text() if (work / "marks" / "killed").exists() else None
    marks_per_video: dict[str, int] = {}
    for p in (work / "marks").glob("seen-*"):
        vid = p.name.split("-")[1]
        marks_per_video[vid] = marks_per_video.get(vid, 0) + 1
    return {"unlabeled": n_unlabeled, "clean": clean, "faulty": faulty, "killed_pid": killed,
            "reinferred": sum(n > 1 for n in marks_per_video.values()),
            "same_labels": _reference_labels(work / "clean") == _reference_labels(work / "faulty")}


def node_removed(work: Path, root: str) -> dict:
    """The worker node running the teacher removed mid-round (a spot node reclaimed): the round finishes
    on the other node with every video's row."""
    cluster, workers = _cluster(worker_cpus=1)
    cfg = _config(root, work / "run", "ray.actor_pool_size=2", "ray.infer_batch_size=1")
    _, index = _run(cfg)
    n_unlabeled = index.count("unlabeled")
    teacher = untrained_teacher(cfg, work / "teacher.pt", index.num_classes, index.feature_dim)
    marks = work / "marks"
    marks.mkdir(parents=True)
    removed: dict = {}

    def remove_a_node_mid_round() -> None:
        # Wait for a third of the videos, then remove the node the teacher is running on: its actor, its
        # queued blocks and its finished-but-unwritten outputs all go with it.
        deadline = time.monotonic() + 600  # never wait for ever if the pipeline died first
        while time.monotonic() < deadline and len(_seen(marks)) < n_unlabeled // 3:
            time.sleep(0.05)
        busy = {n for ns in _seen(marks).values() for n in ns}
        victim = next(w for w in workers if w.node_id in busy)
        removed.update(node=victim.node_id, seen=len(_seen(marks)))
        cluster.remove_node(victim, allow_graceful=False)

    t = threading.Thread(target=remove_a_node_mid_round, daemon=True)
    t.start()
    _eager_pool()
    res = _pipeline(cfg, index, teacher, work / "out", marks, delay=0.5, use_gpu=True)
    t.join(timeout=60)
    import ray

    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    result = {"unlabeled": n_unlabeled, "pipeline": res, "removed": removed, "alive_nodes": alive,
              "worker_nodes": _node_ids(workers), "actors": _actor_nodes("MapWorker")}
    _shutdown(cluster)
    return result


def train_worker_fails(work: Path, root: str) -> dict:
    """Rank 0 of a 2-worker DDP run raises at epoch 1 (RAYTAL_FAIL_ONCE_AT_EPOCH, set by the caller before
    Ray starts so the workers inherit it): Ray Train restarts the group from the epoch-1 checkpoint."""
    from raytal.distributed.session import ensure_ray
    from raytal.engine.checkpoint import load_checkpoint

    ensure_ray(num_cpus=2)
    cfg = _config(root, work / "run", "ray.num_workers=2", "ray.max_failures=1", "train.epochs=3")
    run, index = _run(cfg)
    spec = run.train_spec(index, "round_0/train")
    stage = Path(spec.stage_dir)
    final = run.backend.train(cfg, spec)
    state = load_checkpoint(final)
    ckpts = sorted(stage.rglob("state.pt"))
    # Ray Train's ledger of reports: one per finished epoch, across the failure and the restart.
    ledger = json.loads((stage / "ray_train" / "checkpoint_manager_snapshot.json").read_text())
    return {"final_epoch": int(state["epoch"]),
            "checkpoint_epochs": sorted(int(load_checkpoint(p)["epoch"]) for p in ckpts),
            "reports": int(ledger["current_report_index"])}


SCENARIOS = {f.__name__: f for f in (multinode, actor_killed, node_removed, train_worker_fails)}


def main() -> int:
    name, work, root = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    import torch

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    result = SCENARIOS[name](work, root)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
