"""The main job at two pool sizes, side by side: memory per process and time per unit must not grow with
the unlabeled pool (issue 19), and streaming training keeps up with an in-memory loop.

For each pool size (tiny preset at --feature-dim, plus --small / --large synthetic unlabeled videos), in a
fresh driver process of its own, one round of the main job runs through Ray (a local Ray, 1 Train worker, 2 pseudo-label actors): a short
teacher, pseudo labels for the split's unlabeled videos and the whole pool, then a student of a fixed
number of steps (``train.steps_per_epoch``), so both runs do the same training work. Meanwhile a sampler
reads the proportional set size (PSS: shared pages split between the processes that map them) of the
driver, of every Ray Train worker and of every pseudo-label actor every 0.5 s, in total and without the
pages of Ray's object store (a shared-memory file every Ray process maps, bounded by its size: a process's
share of it follows what the store held, not what the process keeps). Printed, large vs small:
  - peak PSS of the driver and of each Train worker (target <= 1.2x), in total and without the store;
  - rows out = videos in of the pseudo-label stage, for both;
  - time per pseudo-labeled video and per student training step (target within 1.15x), both as the stage's
    wall time over its work (fixed start-up included, which favours the large pool) and once running
    (output file write times; the last epoch as the Train worker reported it, with the part of
    each step spent waiting for batches: whether Ray Data keeps up, target <= 10 % of the step);
  - each Train stage's wait for its first batch (``first_batch_s``, target <= 5 s);
  - as a control, the teacher's time per training step: it trains on the labeled videos alone, the same
    work at both sizes, so its ratio is how much the machine's speed differed between the two runs.
Then, on the small run's round (its pseudo labels), the student's training throughput in this process:
streaming (``training_data.local_streams``: shard files joined with their pseudo labels through the
shuffle buffer) vs an in-memory loop (the loop before the streaming data path: every video loaded into
memory first), on the same videos in the same order with the same model and steps. The two loops run
together, each in a thread of its own, taking turns of about a second (one trains while the other waits),
and each is timed over its own turns only: this VM's speed drifts by 20-30 % within minutes and even
between two 10-second runs back to back, which separate runs (best-of, or pairs) mistook for a difference
between the loops; turns spread over the same minutes see the same machine. --repeats such measurements;
the ratio is their median (target >= 0.95x), printed with each loop's time per step waiting on its video
streams. Then the same comparison under Ray Train (1 worker): the student stage with its Ray Data datasets
read as the worker asks, or materialized into the object store first, in --ray-repeats alternating runs.

    .venv/bin/python benchmarks/bench_scale.py [--small 2000] [--large 20000] [--feature-dim 256]

Datasets are built once into --data-dir (default data/bench_scale). The ratios are only meaningful on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.config import load_config  # noqa: E402
from raytal.core import storage  # noqa: E402
from raytal.data.index import RunIndex  # noqa: E402
from raytal.distributed.backend import RayBackend  # noqa: E402
from raytal.distributed.session import ensure_ray  # noqa: E402
from raytal.selftrain.ledger import StageLog  # noqa: E402
from raytal.selftrain.local import LocalBackend  # noqa: E402
from raytal.selftrain.rounds import Rounds  # noqa: E402
from raytal.selftrain.spec import LabelSpec, pseudo_sources  # noqa: E402
from raytal.data.stream import endless_passes, read_file_rows, shuffled  # noqa: E402
from raytal.selftrain.train_stage import run_training  # noqa: E402
from raytal.selftrain.training_data import local_streams, stage_streams, training_videos  # noqa: E402

from bench_train import first_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROLES = {"driver": None, "train worker": "RayTrainWorker", "pseudo-label actor": "MapWorker"}
RESULT_TAG = "bench_scale result: "
ROLE_KEYS = {"driver": "driver", "train worker": "worker", "pseudo-label actor": "actor"}


def pss_parts(pid: int) -> tuple[int, int]:
    """(PSS, PSS of shared-memory pages) of a process, bytes, from /proc/<pid>/smaps_rollup. Ray's object
    store is a shared-memory file every Ray process maps: its pages count in PSS, split between the
    processes that touched them, and how many are touched depends on what the store has held (bounded by
    its size), not on anything the process keeps."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Pss_Shmem"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields["Pss"], fields.get("Pss_Shmem", 0)


class PeakPss:
    """Peak PSS (bytes) per process, by role, sampled in a thread while a block runs: with the object
    store's shared pages (``peaks``) and without them (``private``: the process's own heap and files)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peaks, self.private = interval, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _role(self, p: psutil.Process) -> str | None:
        if p.pid == psutil.Process().pid:
            return "driver"
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.Error, OSError):
            return None
        return next((r for r, key in ROLES.items() if key and key in cmd), None)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in psutil.process_iter():
                role = self._role(p)
                if role is None:
                    continue
                try:
                    pss, shmem = pss_parts(p.pid)
                except (OSError, KeyError, ValueError):
                    continue
                key = (role, p.pid)
                self.peaks[key] = max(self.peaks.get(key, 0), pss)
                self.private[key] = max(self.private.get(key, 0), pss - shmem)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakPss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, role: str, private: bool = False) -> int:
        """The largest peak of any process of ``role`` (0 when none ran)."""
        peaks = self.private if private else self.peaks
        return max((v for (r, _), v in peaks.items() if r == role), default=0)


def make_data(out: Path, pool: int, dim: int) -> Path:
    if not (out / "dataset.yaml").exists():
        subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(out),
                        "--feature-dim", str(dim), "--num-unlabeled", str(pool), "--rows-per-shard", "64"],
                       check=True, capture_output=True)
    return out


def config(data: Path, run_dir: Path, args: argparse.Namespace):
    return load_config(REPO / "configs" / "tiny_ntc.yaml", [
        f"data.root={data}", f"run.dir={run_dir}", "run.rounds=1", f"train.epochs={args.epochs}",
        f"train.steps_per_epoch={args.steps}", "recipe.min_score=0.05", "train.warmup_epochs=1",
        "ray.num_workers=1", "ray.actor_pool_size=2",
    ])


def steady_per_video(pseudo_dir: Path) -> float:
    """Seconds per pseudo-labeled video once the pipeline runs: the output files' write times against the
    rows they hold (after the first write, so Ray Data's and the actors' start-up are excluded)."""
    files = sorted((f.stat().st_mtime, pq.ParquetFile(f).metadata.num_rows) for f in pseudo_dir.rglob("*.parquet"))
    first = files[0][0]
    later = [(t, n) for t, n in files if t > first]
    return (later[-1][0] - first) / sum(n for _, n in later) if later else float("nan")


def last_epoch(stage_dir: Path) -> dict:
    """The last epoch's seconds per step, all of it and the part waiting for batches, as the Train worker
    reported them (Ray Train's ledger of the kept checkpoints' metrics): start-up excluded; and the stage's
    wait for its first batch (its first epoch's TensorBoard scalar)."""
    ledger = json.loads((stage_dir / "ray_train" / "checkpoint_manager_snapshot.json").read_text())
    metrics = max((r["metrics"] for r in ledger["checkpoint_results"]), key=lambda m: m["epoch"])
    return {"step_s": metrics["step_s"], "data_wait_s": metrics["data_wait_s"],
            "first_batch_s": first_batch(stage_dir / "tb")}


def main_job(data: Path, run_dir: Path, args: argparse.Namespace) -> dict:
    cfg = config(data, run_dir, args)
    with PeakPss() as mem:
        run = Rounds(cfg, RayBackend(cfg))
        try:
            metrics = run.run()
        finally:
            run.close()  # the run directory's lock: student_spec opens the run again
    r1 = metrics["rounds"][1]
    stages = StageLog(str(run_dir / "stages.json"))

    def per_step(round_: str) -> float:
        """Seconds per training step of a round's train stage, on its wall time (start-up included)."""
        return stages.seconds(f"{round_}/train") / (args.epochs * args.steps)

    return {
        "videos_in": r1["pseudo"]["videos_in"], "rows_out": r1["pseudo"]["rows_out"],
        "per_video": stages.seconds("round_1/pseudo") / r1["pseudo"]["videos_in"],
        "steady_video": steady_per_video(run_dir / "round_1" / "pseudo"),
        "per_step": per_step("round_1"), "teacher_step": per_step("round_0"),
        **{f"student_{k}": v for k, v in last_epoch(run_dir / "round_1" / "train").items()},
        **{f"teacher_{k}": v for k, v in last_epoch(run_dir / "round_0" / "train").items()},
        **{name: mem.peak(role, private) for role, short in ROLE_KEYS.items()
           for name, private in ((short, False), (short + "_private", True))},
    }


def student_spec(cfg, run_dir: Path):
    """The finished run's round-1 student stage, rebuilt from its index and pseudo labels."""
    index = RunIndex.load(str(run_dir / "index.json"))
    stages = StageLog(str(run_dir / "stages.json"))
    label = LabelSpec("", 1, str(run_dir / "round_1" / "pseudo"), index.num_classes, index.setting,
                      tuple(index.pseudo_sources()))
    run = Rounds(cfg, LocalBackend())
    try:
        spec = run.train_spec(index, "round_1/train", pseudo=pseudo_sources(label),
                              num_pseudo=stages.result("round_1/pseudo")["usable"])
    finally:
        run.close()
    return dataclasses.replace(spec, stage_dir=str(run_dir / "bench_student"))


def in_memory_streams(cfg, spec) -> dict:
    """The loop before streaming: every training video loaded into memory first (read, joined and decoded
    once per file); then the streaming loop's seeded passes and shuffle buffer over them, so both loops train
    on the same videos in the same order (the per-step compute follows the videos' lengths) and differ only
    in where the videos come from."""
    out = {}
    for name, stream in stage_streams(cfg, spec).items():
        loaded = {f: list(training_videos([stream.rows(read_file_rows(f))])) for f in stream.files}
        videos = (v for f in endless_passes(stream.files, stream.seed) for v in loaded[f])
        out[name] = shuffled(videos, cfg.train.shuffle_buffer, stream.shuffle_seed())
    return out


class Timed:
    """An iterator that adds up the time spent in its ``next`` (the video stream's share of a step)."""

    def __init__(self, it) -> None:
        self.it, self.seconds = it, 0.0

    def __iter__(self) -> "Timed":
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t


class Turns:
    """Loops in threads of their own take turns of about ``slice_s`` seconds (one runs, the others wait),
    handing over when they next read a video; ``clock(name)`` is the time of ``name``'s turns so far. Once a
    loop has finished the others run on without turns."""

    def __init__(self, names: list[str], slice_s: float) -> None:
        self.cv = threading.Condition()
        self.queue, self.slice_s = list(names), slice_s
        self.holder: str | None = None
        self.since = 0.0
        self.held = dict.fromkeys(names, 0.0)
        self.finished = False

    def take(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.holder is None and (self.finished or self.queue[0] == name))
            self.holder, self.since = name, time.perf_counter()

    def give(self, name: str, finished: bool = False) -> None:
        with self.cv:
            self.held[name] += time.perf_counter() - self.since
            self.holder = None
            self.queue = [n for n in self.queue if n != name] + ([] if finished else [name])
            self.finished |= finished
            self.cv.notify_all()

    def clock(self, name: str) -> float:
        return self.held[name] + time.perf_counter() - self.since

    def turned(self, name: str, it):
        """``it``, handing the turn over at a ``next`` once this turn has lasted ``slice_s``."""
        for item in it:
            yield item
            if not self.finished and time.perf_counter() - self.since >= self.slice_s:
                self.give(name)
                self.take(name)


def throughput(cfg, spec, loops: dict, steps: int, slice_s: float = 1.0) -> dict[str, tuple[float, float]]:
    """{loop: (training steps per second, seconds per step spent waiting on the video streams)} of loops
    ({name: the streams' maker}) trained together in turns (see ``Turns``), each timed over its own turns in
    the epoch after a warm-up one (model construction and the first batches excluded)."""
    spec = dataclasses.replace(spec, stop_epoch=2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2, steps_per_epoch=steps))
    turns, out, errors = Turns(list(loops), slice_s), {}, []

    def run(name: str, make) -> None:
        turns.take(name)
        try:
            streams = {k: Timed(v) for k, v in make(cfg, spec).items()}
            marks = []
            run_training(cfg, spec, {k: turns.turned(name, v) for k, v in streams.items()},
                         on_epoch=lambda e, m, t: marks.append((turns.clock(name), sum(s.seconds for s in streams.values()))))
            (t0, d0), (t1, d1) = marks
            out[name] = steps / (t1 - t0), (d1 - d0) / steps
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)
        finally:
            turns.give(name, finished=True)

    threads = [threading.Thread(target=run, args=item) for item in loops.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def one_size(size: int, args: argparse.Namespace) -> dict:
    """One pool size's main job, in this process (a fresh driver: ``main`` runs each size in its own)."""
    ensure_ray(num_cpus=2)
    data = make_data(Path(args.data_dir) / f"pool_{size}", size, args.feature_dim)
    run_dir = Path(args.run_dir) / f"pool_{size}"
    storage.delete_dir(str(run_dir), missing_ok=True)
    return main_job(data, run_dir, args)


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def compare_throughput(args: argparse.Namespace) -> None:
    """Student training on the small pool's finished round: streaming vs the in-memory loop, in turns."""
    run_dir = Path(args.run_dir) / f"pool_{args.small}"
    cfg = config(Path(args.data_dir) / f"pool_{args.small}", run_dir, args)
    spec = student_spec(cfg, run_dir)
    loops = {"streaming": local_streams, "in-memory": in_memory_streams}
    runs = []
    for i in range(args.repeats):
        first = dict(list(loops.items())[:: 1 if i % 2 == 0 else -1])  # each loop takes the first turn in turn
        runs.append(r := throughput(cfg, spec, first, args.throughput_steps))
        print(f"  measurement {i + 1}: " + ", ".join(f"{n} {r[n][0]:.2f} steps/s" for n in loops)
              + f" ({r['streaming'][0] / r['in-memory'][0]:.2f}x)", flush=True)
    ratios = sorted(r["streaming"][0] / r["in-memory"][0] for r in runs)

    def median(name: str, i: int) -> float:
        return statistics.median(r[name][i] for r in runs)

    print(f"\nstudent training on the {args.small}-video round, in this process, in turns, {args.repeats} "
          f"measurements of {args.throughput_steps} steps: " + ", ".join(
              f"{n} {median(n, 0):.2f} steps/s ({1000 * median(n, 1):.2f} ms per step waiting on the videos)" for n in loops))
    print(f"  streaming vs in-memory, median: {statistics.median(ratios):.2f}x (measurements {ratios[0]:.2f}-"
          f"{ratios[-1]:.2f}x)   (target >= 0.95x)")


def compare_ray_throughput(args: argparse.Namespace) -> None:
    """Student training on the small pool's finished round under Ray Train (1 worker), streaming vs in-memory:
    the stage's datasets as ``train_ray`` builds them (read as the worker asks) or materialized into Ray's
    object store before the worker starts, in alternating runs; each run's last epoch as the worker reports it."""
    from raytal.distributed import ray_train

    run_dir = Path(args.run_dir) / f"pool_{args.small}"
    cfg = config(Path(args.data_dir) / f"pool_{args.small}", run_dir, args)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2, steps_per_epoch=args.steps))
    spec = student_spec(cfg, run_dir)
    streaming = ray_train.stage_datasets
    variants = {"streaming": streaming,
                "in-memory": lambda c, s: {k: d.materialize() for k, d in streaming(c, s).items()}}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    ensure_ray(num_cpus=2)
    try:
        for i in range(args.ray_repeats):
            for name in list(variants)[:: 1 if i % 2 == 0 else -1]:
                ray_train.stage_datasets = variants[name]
                stage = dataclasses.replace(spec, stage_dir=str(run_dir / f"ray_{name}_{i}"))
                storage.delete_dir(stage.stage_dir, missing_ok=True)
                ray_train.train_ray(cfg, stage)
                runs[name].append(last_epoch(Path(stage.stage_dir)))
    finally:
        ray_train.stage_datasets = streaming

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    ratio = median("in-memory", "step_s") / median("streaming", "step_s")
    print(f"\nstudent training on the {args.small}-video round under Ray Train (1 worker), {args.ray_repeats} runs "
          f"of each, alternating: " + ", ".join(
              f"{n} {1000 * median(n, 'step_s'):.1f} ms per step ({1000 * median(n, 'data_wait_s'):.2f} ms waiting "
              f"for batches)" for n in variants))
    print(f"  streaming vs in-memory, throughput: {ratio:.2f}x   (target >= 0.95x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--feature-dim", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    # 100 steps (~7 s) per epoch: the last epoch's time per step is the worker's mean over them; 20 were mostly noise
    ap.add_argument("--steps", type=int, default=100, help="student steps per epoch")
    ap.add_argument("--throughput-steps", type=int, default=400, help="throughput: timed steps of each loop")
    ap.add_argument("--repeats", type=int, default=5, help="throughput: measurements (both loops, in turns)")
    ap.add_argument("--ray-repeats", type=int, default=2, help="throughput under Ray Train: runs of each loop")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the streaming vs in-memory comparison, on the small pool's finished run in --run-dir")
    ap.add_argument("--data-dir", default="data/bench_scale")
    ap.add_argument("--run-dir", default="runs/bench_scale")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # internal: one size, JSON on stdout
    args = ap.parse_args(argv)
    if args.one:
        print(RESULT_TAG + json.dumps(one_size(args.one, args)))
        return 0
    if args.throughput_only:
        compare_throughput(args)
        compare_ray_throughput(args)
        return 0
    results = {}
    for size in (args.small, args.large):
        # Each size in a fresh driver process, so neither inherits the other's heap.
        out = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--one", str(size)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        results[size] = r = json.loads(next(line for line in out.splitlines() if line.startswith(RESULT_TAG))[len(RESULT_TAG):])
        print(f"pool {size}: {r['videos_in']} videos in, {r['rows_out']} rows out; {1000 * r['per_video']:.2f} ms per "
              f"pseudo-labeled video ({1000 * r['steady_video']:.2f} once running), {1000 * r['per_step']:.1f} ms per "
              f"training step ({1000 * r['student_step_s']:.1f} in the last epoch, "
              f"{1000 * r['student_data_wait_s']:.1f} of it waiting for batches); peak PSS (without the object "
              f"store's shared pages) driver {mib(r['driver'])} ({mib(r['driver_private'])}), train worker "
              f"{mib(r['worker'])} ({mib(r['worker_private'])}), pseudo-label actor {mib(r['actor'])} "
              f"({mib(r['actor_private'])})", flush=True)
    s, l = results[args.small], results[args.large]

    def ratio(key: str) -> str:
        return f"{l[key] / s[key]:.2f}x ({l[key + '_private'] / s[key + '_private']:.2f}x)"

    print(f"\npool {args.large} vs {args.small}:")
    print(f"  peak PSS (without the object store's shared pages), driver: {ratio('driver')}   train worker: "
          f"{ratio('worker')}   (target <= 1.2x)   pseudo-label actor: {ratio('actor')}")
    print(f"  rows out = videos in: {s['rows_out'] == s['videos_in'] and l['rows_out'] == l['videos_in']}")
    print(f"  time per pseudo-labeled video: {l['per_video'] / s['per_video']:.2f}x (stage wall time), "
          f"{l['steady_video'] / s['steady_video']:.2f}x (once running)   per training step: "
          f"{l['per_step'] / s['per_step']:.2f}x (stage wall time), {l['student_step_s'] / s['student_step_s']:.2f}x "
          "(last epoch)   (target within 1.15x)")
    # The teacher trains on the labeled videos alone, the same work at both sizes: its ratio is how much this
    # VM's speed differed between the two runs.
    print(f"  control, teacher's time per training step (the same work at both sizes): "
          f"{l['teacher_step'] / s['teacher_step']:.2f}x (stage wall time), "
          f"{l['teacher_step_s'] / s['teacher_step_s']:.2f}x (last epoch)")
    for size, r in ((args.small, s), (args.large, l)):
        print(f"  pool {size}: student's wait for batches per step, last epoch: {1000 * r['student_data_wait_s']:.1f} ms "
              f"of {1000 * r['student_step_s']:.1f} ms = {100 * r['student_data_wait_s'] / r['student_step_s']:.1f} % "
              f"(target <= 10 %); wait for the first batch: teacher {r['teacher_first_batch_s']:.2f} s, student "
              f"{r['student_first_batch_s']:.2f} s (target <= 5 s)")

    compare_throughput(args)
    compare_ray_throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
