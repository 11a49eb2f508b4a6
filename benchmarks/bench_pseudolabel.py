"""Ray Data pseudo-label pipeline vs the same stages in one plain Python process (issue 7).

Data: tiny-preset synthetic unlabeled videos (D=32, ~70 snippets, stream_unlabeled) in shards of 250, given
to the pipeline as a run's pool (one ``LabelSpec`` source per shard file). Teacher: a seeded 1-D conv net
(D -> width x layers -> C, torch, 1 thread per worker); labeling: per-class runs of snippets scoring > 0.5
become segments. The plain loop calls the very same stage code (``InferLabelStage``, which the pipeline runs
in its CPU actors) on the same blocks of shard rows (``input_blocks``) and writes with one ParquetWriter, so
the ratios measure Ray's parallelism and overhead, nothing else.

Prints, in one run:
  - throughput (videos/s) of the Ray pipeline with 2 CPU workers vs the plain loop (target >= 1.6x);
  - Ray's overhead with 1 worker vs the plain loop (target <= 15 %);
  - the machine's ceiling for the first ratio: two plain loops at once, each on half of the videos (no Ray);
  - peak memory (PSS summed over the job's whole process tree: driver, GCS, raylet, workers, sampled
    every 0.2 s; summed RSS is printed too) of the pipeline on --mem-large vs --mem-small streamed
    videos (target <= 1.2x). The memory runs use a narrow teacher (--mem-width): memory depends on data
    flow, not on compute.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--videos 4000] [--mem-small 1000] [--mem-large 10000]

The 2-core machine may be shared: the ratios are only meaningful when it is otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raytal.core.grid import grid_to_seconds
from raytal.core.video import Video
from raytal.data.index import Source
from raytal.data.shards import open_shard, write_shards
from raytal.data.synthetic import class_sets_of, make_world, stream_unlabeled, tiny_timelines
from raytal.distributed.pseudo_pipeline import run_pseudolabel_pipeline
from raytal.distributed.session import ensure_ray
from raytal.selftrain.pseudo_stage import OUT_SCHEMA, InferLabelStage, input_blocks
from raytal.selftrain.spec import InferenceInput, LabelSpec

D, C = 32, 5
ROWS_PER_SHARD = 250
BATCH = 8


class ConvTeacher:
    """make_infer for the benchmark: building it is 'loading the checkpoint' (seeded weights)."""

    def __init__(self, width: int, layers: int) -> None:
        self.width, self.layers = width, layers

    def __call__(self):
        import torch

        torch.manual_seed(0)
        mods: list[torch.nn.Module] = [torch.nn.Conv1d(D, self.width, 3, padding=1), torch.nn.ReLU()]
        for _ in range(self.layers):
            mods += [torch.nn.Conv1d(self.width, self.width, 3, padding=1), torch.nn.ReLU()]
        net = torch.nn.Sequential(*mods, torch.nn.Conv1d(self.width, C, 1)).eval()

        @torch.no_grad()
        def infer(videos: list[Video]) -> list[dict]:
            out = []
            for v in videos:
                x = torch.from_numpy(v.features.T[None].copy())
                dense = torch.sigmoid(net(x))[0].T.numpy()  # [T, C]
                out.append({"scores": dense.max(axis=0), "dense": {"scores": dense}})
            return out

        return infer


def label_runs(video: Video, pred: dict) -> dict:
    """Runs of snippets with score > 0.5, per class (loop over classes; vectorized over snippets)."""
    dense = pred["dense"]["scores"]
    segs, labels, scores = [], [], []
    for c in range(dense.shape[1]):
        on = np.concatenate([[0], (dense[:, c] > 0.5).astype(np.int8), [0]])
        d = np.diff(on)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        if len(starts):
            csum = np.concatenate([[0.0], np.cumsum(dense[:, c])])
            segs.append(np.stack([starts, ends], axis=1).astype(np.float64))
            labels.append(np.full(len(starts), c))
            scores.append((csum[ends] - csum[starts]) / (ends - starts))
    grid = np.concatenate(segs) if segs else np.zeros((0, 2))
    sec = grid_to_seconds(grid, video.fps, video.feat_stride, video.num_frames, video.duration)
    keep = sec[:, 1] > sec[:, 0]
    k = int(keep.sum())
    return {
        "segments": sec[keep],
        "labels": np.concatenate(labels)[keep] if labels else np.zeros(0, np.int64),
        "scores": np.concatenate(scores)[keep] if scores else np.zeros(0),
        "weights": np.ones(k),
        "origins": ["runs"] * k,
    }


def make_shards(out: Path, count: int) -> list[str]:
    _, timelines = tiny_timelines(seed=0)
    world = make_world(C, D, class_sets_of(timelines), seed=0)
    train = [v for v in timelines if v.subset == "train"]
    return [str(p) for p in write_shards(stream_unlabeled(world, train, count, seed=1), out, ROWS_PER_SHARD)]


def label_spec(files: list[str], out: Path) -> LabelSpec:
    """The shard files as a round's pseudo sources (a pool: every row of each file)."""
    sources = tuple(("pool", Source(f, None, open_shard(f).metadata.num_rows)) for f in files)
    return LabelSpec("bench", 1, str(out), C, "semi", sources)


def run_plain(files: list[str], out: Path, teacher: ConvTeacher) -> float:
    """The same stages in this process, one batch at a time; returns seconds."""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    stage = InferLabelStage(teacher, None, 1, "semi", label_video=label_runs, round=1, teacher="bench")
    out.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out / "plain.parquet", OUT_SCHEMA) as writer:
        for k, (part, src) in enumerate(label_spec(files, out).sources):
            for block in input_blocks(InferenceInput(k, part, src.file, src.ids, src.count), BATCH):
                writer.write_table(stage(block))
    return time.perf_counter() - start


def run_plain_pair(files: list[str], out: Path, teacher: ConvTeacher) -> float:
    """Two plain loops in two processes at once, on alternate shard files; returns seconds until both end."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh interpreter each, like a Ray worker (no forked torch state)
    start = time.perf_counter()
    with ctx.Pool(2) as pool:
        pool.starmap(run_plain, [(files[i::2], out / str(i), teacher) for i in range(2)])
    return time.perf_counter() - start


def run_ray(files: list[str], out: Path, teacher: ConvTeacher, pool: int) -> float:
    s = run_pseudolabel_pipeline(
        label_spec(files, out), make_infer=teacher, label_video=label_runs, batch_size=BATCH, pool_size=pool,
        actor_cpus=0.5, use_gpu=False,
    )
    if s.rows_out != s.videos_in or s.num_errors:
        raise RuntimeError(f"pipeline lost videos or failed: {s.format()}")
    return s.elapsed


def _tree_memory(root: int) -> tuple[int, int]:
    """(RSS, PSS) bytes summed over ``root`` and all its descendants (from /proc). RSS counts a shared
    page once per process that maps it — Ray's object store is shared memory mapped by the raylet and
    every worker — so its sum overstates the job; PSS splits each shared page among its mappers."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f if line[:4] in ("Rss:", "Pss:"))
        except OSError:  # the process has exited
            continue
        rss += int(fields["Rss"].split()[0]) * 1024
        pss += int(fields["Pss"].split()[0]) * 1024
    return rss, pss


def peak_memory(files: list[str], out: Path, width: int) -> tuple[int, int, float]:
    """Run the pipeline in a child process (its own local Ray); (peak tree RSS, peak tree PSS, seconds)."""
    return measured([sys.executable, __file__, "--child-out", str(out), "--mem-width", str(width), "--child-files", *files])


def measured(cmd: list[str]) -> tuple[int, int, float]:
    """Run ``cmd``, sampling its process tree every 0.2 s: (peak tree RSS, peak tree PSS, seconds)."""
    start = time.perf_counter()
    # The child's output goes to a file: a pipe nobody reads until the end would block a chatty child.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak_rss = peak_pss = 0
        while proc.poll() is None:
            rss, pss = _tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.2)
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"memory run failed ({proc.returncode}): {log.read()[-4000:]}")
    return peak_rss, peak_pss, time.perf_counter() - start


def child(files: list[str], out: str, width: int) -> int:
    ensure_ray(num_cpus=2)
    run_ray(files, Path(out), ConvTeacher(width, 1), pool=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=4000,
                   help="videos for the throughput runs (each Ray run pays a fixed actor start-up of a few seconds)")
    p.add_argument("--width", type=int, default=512, help="teacher channels (throughput runs)")
    p.add_argument("--layers", type=int, default=12, help="teacher conv layers (~20 ms per video on one core)")
    p.add_argument("--mem-small", type=int, default=1000)
    p.add_argument("--mem-large", type=int, default=10000)
    p.add_argument("--mem-width", type=int, default=16, help="teacher channels (memory runs)")
    p.add_argument("--child-files", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_files:
        return child(args.child_files, args.child_out, args.mem_width)
    if min(args.videos, args.mem_small, args.mem_large) < ROWS_PER_SHARD:
        p.error(f"sizes must be >= {ROWS_PER_SHARD} (one shard)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_pseudolabel_") as tmp:
        tmp_path = Path(tmp)
        largest = max(args.videos, args.mem_small, args.mem_large)
        files = make_shards(tmp_path / "shards", largest)

        def first(n: int) -> list[str]:  # the first n videos (whole shards)
            return files[: -(-n // ROWS_PER_SHARD)]

        print(f"wrote {largest} videos in {len(files)} shards ({time.perf_counter() - t0:.1f} s)")

        teacher = ConvTeacher(args.width, args.layers)
        thr = first(args.videos)
        plain = run_plain(thr, tmp_path / "plain", teacher)
        pair = run_plain_pair(thr, tmp_path / "pair", teacher)
        ensure_ray(num_cpus=2)
        run_ray(first(ROWS_PER_SHARD), tmp_path / "warm", teacher, pool=2)  # worker processes + imports
        one = run_ray(thr, tmp_path / "ray1", teacher, pool=1)
        two = run_ray(thr, tmp_path / "ray2", teacher, pool=2)
        import ray

        ray.shutdown()
        n = args.videos
        print(f"throughput, {n} videos: plain loop {n / plain:.1f} videos/s | Ray 1 worker {n / one:.1f} | "
              f"Ray 2 workers {n / two:.1f}")
        print(f"Ray 2 workers vs plain loop: {plain / two:.2f}x (target >= 1.6x)")
        print(f"ceiling on this machine, two plain loops at once (no Ray): {plain / pair:.2f}x")
        print(f"Ray 1 worker overhead vs plain loop: {100 * (one / plain - 1):+.1f} % (target <= 15 %)")

        small_rss, small, ts = peak_memory(first(args.mem_small), tmp_path / "mem_small", args.mem_width)
        large_rss, large, tl = peak_memory(first(args.mem_large), tmp_path / "mem_large", args.mem_width)
        print(f"peak memory (PSS of the whole process tree): {args.mem_small} videos {small / 2**20:.0f} MiB "
              f"({ts:.0f} s) | {args.mem_large} videos {large / 2**20:.0f} MiB ({tl:.0f} s) | "
              f"ratio {large / small:.2f}x (target <= 1.2x)")
        print(f"  (summed RSS, which counts shared object-store pages once per process: {small_rss / 2**20:.0f} | "
              f"{large_rss / 2**20:.0f} MiB, ratio {large_rss / small_rss:.2f}x)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
