"""Feature extraction from video files: the Ray Data pipeline vs the plain loop (issue 33).

Data: --templates distinct H.264 mp4 clips (--size, --seconds at 30 fps: a moving square on a noise
background, written with PyAV), hard-linked under as many names as a run needs (each name is a video of its
own to the extraction; no disk space per copy). Backbone: a randomly initialised torchvision --model at
--frames frames of --crop pixels (--fps 15, a window every --frames frames), sized so that decoding and the
network take comparable time, as on a GPU node where the network is fast; the split is printed, so the
regime is plain.

Prints, in one run:
  - throughput (videos/s) of the plain loop (``--in-process``: decode, then the network, one video after the
    other; torch on 1 thread, as the actor) with the split of its time between decoding, the network and
    writing, and of the same loop with torch on 2 threads;
  - throughput of the pipeline with 2 decode tasks (0.5 CPU each) + 1 backbone actor (1 CPU), and its ratio
    to each plain loop (target >= 1.5x on 2 cores);
  - peak memory (PSS summed over the job's whole process tree: driver, GCS, raylet, workers; summed RSS too)
    of the pipeline on --mem-large vs --mem-small videos (target <= 1.2x).

    .venv/bin/python benchmarks/bench_extract.py [--videos 200] [--mem-small 100] [--mem-large 1000] [--gpu]
        [--only throughput|memory]

--gpu puts the backbone actor (and the plain loop's network) on the GPU (ray.use_gpu). The machine must be
otherwise idle for the ratios to mean anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pseudolabel import measured  # noqa: E402  (peak PSS/RSS of a command's process tree, from /proc)

from raytal.video.backbones import BackboneSpec  # noqa: E402
from raytal.video.extraction import plan_extraction, run_extraction  # noqa: E402
from raytal.video.stages import EmbedStage, extract_in_process  # noqa: E402

SRC_FPS, FPS = 30, 15.0


def write_template(path: Path, seconds: float, width: int, height: int, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (height, width, 3), np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(SRC_FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        side = height // 6
        for j in range(int(seconds * SRC_FPS)):
            image = background.copy()
            x = (7 * j) % (width - side)
            image[side:2 * side, x:x + side] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def video_dir(root: Path, templates: list[Path], count: int) -> Path:
    """``count`` names for the templates, hard links in a directory of their own."""
    d = root / f"videos_{count}"
    d.mkdir()
    for i in range(count):
        os.link(templates[i % len(templates)], d / f"v{i:06d}.mp4")
    return d


def backbone(args) -> BackboneSpec:
    size = (args.crop, args.crop)
    return BackboneSpec(args.model, random_init=True, resize=(args.crop + args.crop // 8,), crop=size)


def plan(args, videos: Path, out: Path):
    return plan_extraction([str(videos)], [], backbone(args), fps=FPS, num_frames=args.frames,
                           feat_stride=args.frames, out=str(out))


class TimedStage(EmbedStage):
    """The backbone stage, timing its calls (the network's share of the plain loop)."""

    seconds = 0.0

    def __call__(self, table):
        start = time.perf_counter()
        try:
            return super().__call__(table)
        finally:
            self.seconds += time.perf_counter() - start


def run_plain(args, videos: Path, out: Path, threads: int) -> tuple[float, float, float]:
    """(seconds, network seconds, writing seconds) of the plain loop."""
    p = plan(args, videos, out)
    stage = TimedStage(p.net, (args.frames, args.crop, args.crop), threads, "cuda" if args.gpu else "cpu")
    write = p.output.write
    written = [0.0]

    def timed_write(batch):
        start = time.perf_counter()
        write(batch)
        written[0] += time.perf_counter() - start

    p.output.write = timed_write
    start = time.perf_counter()
    run_extraction(p, lambda v, spec, sink: extract_in_process(v, spec, sink, stage=stage,
                                                               clips_per_batch=args.clips_per_batch), 64)
    return time.perf_counter() - start, stage.seconds, written[0]


def run_pipeline(args, videos: Path, out: Path) -> float:
    from raytal.distributed.extract_pipeline import run_extract_pipeline

    p = plan(args, videos, out)
    start = time.perf_counter()
    summary = run_extraction(p, lambda v, spec, sink: run_extract_pipeline(
        v, spec, sink, backbone=p.backbone, decode_tasks=2, model_actors=1, clips_per_batch=args.clips_per_batch,
        actor_cpus=1.0, decode_cpus=0.5, use_gpu=args.gpu), 64)
    if summary.output.errors:
        raise RuntimeError(f"extraction failed: {summary.format()}")
    return time.perf_counter() - start


def peak_memory(args, videos: Path, out: Path) -> tuple[int, int, float]:
    """The pipeline in a child process (its own local Ray); (peak tree RSS, peak tree PSS, seconds)."""
    cmd = [sys.executable, __file__, "--child-videos", str(videos), "--child-out", str(out), "--model", args.model,
           "--frames", str(args.frames), "--crop", str(args.crop), "--clips-per-batch", str(args.clips_per_batch),
           *(["--gpu"] if args.gpu else [])]
    return measured(cmd)


def throughput(args, root: Path, templates: list[Path]) -> None:
    """The plain loop (1 and 2 torch threads) and the pipeline on the same --videos videos."""
    from raytal.distributed.session import ensure_ray

    thr = video_dir(root, templates, args.videos)
    n = args.videos
    plain, net, write = run_plain(args, thr, root / "plain1", threads=1)
    decode = plain - net - write
    print(f"plain loop, torch 1 thread: {n / plain:.2f} videos/s; time: decoding {100 * decode / plain:.0f} %, "
          f"network {100 * net / plain:.0f} %, writing {100 * write / plain:.0f} %")
    plain2, net2, _ = run_plain(args, thr, root / "plain2", threads=2)
    print(f"plain loop, torch 2 threads: {n / plain2:.2f} videos/s (network {100 * net2 / plain2:.0f} %)")
    ensure_ray(num_cpus=2)
    run_pipeline(args, video_dir(root, templates, 4), root / "warm")  # worker processes and imports
    pipe = run_pipeline(args, thr, root / "pipeline")
    import ray

    ray.shutdown()
    print(f"pipeline, 2 decode tasks + 1 backbone actor: {n / pipe:.2f} videos/s: {plain / pipe:.2f}x the plain "
          f"loop on 1 thread, {plain2 / pipe:.2f}x on 2 threads (target >= 1.5x)")


def memory(args, root: Path) -> None:
    """Peak memory of the pipeline on --mem-small and --mem-large short clips."""
    (root / "short").mkdir()
    short = [root / "short" / f"s{i}.mp4" for i in range(args.templates)]
    for i, path in enumerate(short):
        write_template(path, args.mem_seconds, *args.size, seed=i)
    small_rss, small, ts = peak_memory(args, video_dir(root / "short", short, args.mem_small), root / "mem_small")
    large_rss, large, tl = peak_memory(args, video_dir(root / "short", short, args.mem_large), root / "mem_large")
    print(f"peak memory (PSS of the whole process tree), clips of {args.mem_seconds:g} s: {args.mem_small} videos "
          f"{small / 2**20:.0f} MiB ({ts:.0f} s) | {args.mem_large} videos {large / 2**20:.0f} MiB ({tl:.0f} s) | "
          f"ratio {large / small:.2f}x (target <= 1.2x)")
    print(f"  (summed RSS: {small_rss / 2**20:.0f} | {large_rss / 2**20:.0f} MiB, ratio {large_rss / small_rss:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=200, help="videos of the throughput runs")
    p.add_argument("--templates", type=int, default=8, help="distinct encoded clips")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    p.add_argument("--size", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"), help="source frame size")
    p.add_argument("--model", default="mc3_18")
    p.add_argument("--frames", type=int, default=8, help="frames per window (and between windows)")
    p.add_argument("--crop", type=int, default=32, help="the network's frame size (square)")
    p.add_argument("--clips-per-batch", type=int, default=16)
    p.add_argument("--mem-small", type=int, default=100)
    p.add_argument("--mem-large", type=int, default=1000)
    p.add_argument("--mem-seconds", type=float, default=1.0, help="length of the memory runs' short clips")
    p.add_argument("--gpu", action="store_true", help="the backbone on the GPU")
    p.add_argument("--only", choices=("throughput", "memory"), help="run only these measurements")
    p.add_argument("--child-videos", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from raytal.distributed.session import ensure_ray

    if args.child_videos:
        ensure_ray(num_cpus=2)
        run_pipeline(args, Path(args.child_videos), Path(args.child_out))
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(tmp)
        (root / "templates").mkdir()
        templates = [root / "templates" / f"t{i}.mp4" for i in range(args.templates)]
        for i, path in enumerate(templates):
            write_template(path, args.seconds, *args.size, seed=i)
        print(f"{args.templates} clips of {args.seconds:g} s at {args.size[0]}x{args.size[1]}, {SRC_FPS} fps "
              f"({time.perf_counter() - t0:.1f} s); {args.model} on {args.frames}x{args.crop}x{args.crop} clips at "
              f"{FPS:g} fps, device {'cuda' if args.gpu else 'cpu'}")
        if args.only != "memory":
            throughput(args, root, templates)
        if args.only != "throughput":
            memory(args, root)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
