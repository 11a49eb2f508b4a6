"""The full-size detector on one GPU: training and pseudo-labeling throughput, peak GPU memory, and one
training stage through Ray Train on that GPU (issue 30). About 3-5 minutes on one recent GPU.

    .venv/bin/python benchmarks/bench_gpu.py [--config configs/thumos14_i3d_supervised.yaml] [--steps 30]

Without a CUDA device it prints that it skipped and exits 0 (nothing is measured on CPU).

1. Training at the preset's size (batch 2 of T = data.max_seq_len = 2304 snippets x D = 2048, random
   features, 10 actions each) with the project's ``Trainer`` (AdamW, clipping, EMA, the loss normaliser,
   pinned non-blocking batch copies), in fp32 (TF32 on, ``train.tf32``) and bf16: steps/s over ``--steps``
   steps after ``--warmup`` (CUDA synchronised around the timed steps) and the peak GPU memory
   (``torch.cuda.max_memory_allocated``).
2. Pseudo-labeling: the teacher's inference (``predict_videos`` with the recipe's labeling settings, batches
   of ``ray.infer_batch_size``) over ``--videos`` videos of 1,000-5,000 snippets, fp32 and bf16: videos/s.
3. One training stage through Ray Train on 1 GPU (``jobs/train.py --workers 1`` on the tiny preset with
   ``ray.use_gpu=true``: a local Ray, one Train worker holding the GPU, the NCCL process group bound as
   ``raytal.distributed.process_group`` binds it): wall time and whether it finished.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raytal.config import load_config  # noqa: E402
from raytal.core.video import Video  # noqa: E402
from raytal.engine.trainer import Trainer  # noqa: E402
from raytal.model.batch import collate  # noqa: E402
from raytal.model.inference import predict_videos  # noqa: E402
from raytal.recipes.labeling import labeling_infer  # noqa: E402
from raytal.recipes.objective import make_objective  # noqa: E402
from raytal.selftrain.models import build_detector  # noqa: E402

CLASSES = 20


def video(i: int, t: int, dim: int, rng: np.random.Generator) -> Video:
    stride, frames, fps = 4, 16, 30.0
    duration = ((t - 1) * stride + frames) / fps
    starts = np.sort(rng.uniform(0, duration * 0.9, 10))
    segs = np.stack([starts, np.minimum(starts + rng.uniform(1, 25, 10), duration)], 1)
    return Video(f"v{i}", "train", duration, fps, stride, frames, features=rng.standard_normal((t, dim)).astype(np.float32),
                 segments=segs, labels=rng.integers(0, CLASSES, 10))


def train_throughput(cfg, precision: str, steps: int, warmup: int) -> tuple[float, float]:
    cfg.train.precision = precision
    model = build_detector(cfg, CLASSES, cfg.model.input_dim)
    rng = np.random.default_rng(0)
    batch = collate([video(i, cfg.data.max_seq_len, cfg.model.input_dim, rng) for i in range(cfg.train.batch_size)],
                    pad_multiple=model.pad_multiple)
    trainer = Trainer(cfg.train, model, make_objective(cfg), steps_per_epoch=warmup, ema_momentum=cfg.train.ema_momentum,
                      device="cuda")
    trainer.train_epoch(0, iter([batch] * warmup))
    trainer.steps_per_epoch = steps
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train_epoch(1, iter([batch] * steps))
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - start), torch.cuda.max_memory_allocated() / 2**30


def labeling_throughput(cfg, precision: str, count: int) -> float:
    model = build_detector(cfg, CLASSES, cfg.model.input_dim).cuda().eval()
    rng = np.random.default_rng(1)
    videos = [video(i, int(rng.integers(1000, 5000)), cfg.model.input_dim, rng) for i in range(count)]
    predict_videos(model, videos[:2], labeling_infer(cfg), batch_size=cfg.ray.infer_batch_size, precision=precision)
    torch.cuda.synchronize()
    start = time.perf_counter()
    predict_videos(model, videos, labeling_infer(cfg), batch_size=cfg.ray.infer_batch_size, precision=precision)
    torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def ray_train_stage() -> tuple[int, float, str]:
    with tempfile.TemporaryDirectory() as d:
        data, run = Path(d) / "tiny", Path(d) / "run"
        subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--preset", "tiny", "--out", str(data)],
                       check=True, capture_output=True)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--config",
                              str(REPO / "configs" / "tiny_supervised.yaml"), "--workers", "1",
                              "--set", "ray.use_gpu=true", "--set", f"data.root={data}", "--set", f"run.dir={run}",
                              "--set", "train.epochs=3"], capture_output=True, text=True)
        return out.returncode, time.perf_counter() - start, (out.stderr or out.stdout).strip().splitlines()[-1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "thumos14_i3d_supervised.yaml"))
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per precision")
    ap.add_argument("--warmup", type=int, default=5, help="training steps before the timed ones")
    ap.add_argument("--videos", type=int, default=16, help="videos pseudo-labeled per precision")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here: skipped (nothing measured)")
        return 0
    print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    for precision in ("fp32", "bf16"):
        cfg = load_config(args.config)
        rate, peak = train_throughput(cfg, precision, args.steps, args.warmup)
        print(f"train {precision} (tf32 {cfg.train.tf32}): {rate:.2f} steps/s, batch {cfg.train.batch_size} x "
              f"T {cfg.data.max_seq_len} x D {cfg.model.input_dim}, peak GPU memory {peak:.2f} GiB", flush=True)
        torch.cuda.empty_cache()
    for precision in ("fp32", "bf16"):
        rate = labeling_throughput(load_config(args.config), precision, args.videos)
        print(f"pseudo-labeling {precision}: {rate:.2f} videos/s ({args.videos} videos of 1,000-5,000 snippets)",
              flush=True)
        torch.cuda.empty_cache()
    rc, wall, last = ray_train_stage()
    print(f"Ray Train, 1 GPU worker, tiny preset, 3 epochs: {'finished' if rc == 0 else f'FAILED (exit {rc})'} in "
          f"{wall:.0f} s{'' if rc == 0 else ': ' + ' '.join(last)}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
