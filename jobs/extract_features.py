"""Extract snippet features from video files with a video backbone: the step before make_dataset.py.

    python jobs/extract_features.py videos/ --out feats/                       # torchvision R(2+1)D-18, Kinetics weights
    python jobs/extract_features.py s3://bucket/videos/ --out s3://bucket/feats/ --set ray.use_gpu=true
    python jobs/extract_features.py --list my_videos.txt --model swin3d_t --num-frames 32 --out feats/
    python jobs/extract_features.py videos/ --torchscript my_i3d.pt --crop-size 224 224 --out feats/
    python jobs/extract_features.py more_videos/ --dataset data/mine        # straight into a dataset's pool

Inputs: directories or s3:// / gs:// prefixes (searched recursively), video files, and --list files (one path
or URI per line); mp4, mkv, avi, webm. A video's id is its file name without the extension.

Each video is decoded (PyAV), resampled to --fps, resized and centre-cropped to the sizes of the backbone's own
transform (its weights' metadata, which also gives the normalisation),
and cut into windows of --num-frames frames every --feat-stride frames: snippet i is centred at frame
i*feat_stride + num_frames/2, where raytal's time grid puts it. A video shorter than one window gives one
window padded with its last frame (and a warning). The feature of a window is the backbone's pooled embedding
before its classifier (D: 512 for R(2+1)D / R3D / MC3, 1024 for S3D, 768 for MViT and Swin3D-T/S).

Output (--out DIR): DIR/<id>.npy float32 [T, D] (--format npy) or Parquet shards DIR/extract-*.parquet
(--format shards), DIR/video_info.csv (duration, fps, feat_stride, num_frames, T, D per video) and
DIR/errors.csv. Then:

    python jobs/make_dataset.py --annotations my.json --features labeled_feats/ --feat-stride 8 --num-frames 16 \\
        --fps 15 --force-fps --unlabeled-features feats/ --video-info feats/video_info.csv --out data/mine

--dataset ROOT writes shards straight into that dataset's unlabeled pool (its grid and D must match).
A video that cannot be decoded (corrupt, truncated, empty, unreadable) is an error row in errors.csv, not a
failed job. --config / --set give ray.use_gpu and ray.address (nothing else of a config is read). Re-running the same command resumes: videos already written (same path, size and modification
time) are skipped; the job never removes or overwrites a file it did not write.

Runs on Ray Data (decode tasks on CPUs, the backbone in an actor pool: one GPU per actor with ray.use_gpu=true;
cluster from --address / ray.address / RAY_ADDRESS, else a local Ray on 127.0.0.1), or with --in-process as a
plain loop in this process. Both give the same features. Needs the `video` extra (torchvision, av).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_config, run_job  # noqa: E402
from raytal.config import add_config_args  # noqa: E402
from raytal.core.errors import InputError  # noqa: E402

VIDEO_EXTRA = ("torchvision", "av")
INSTALL_HINT = ("pip install -e '.[video]' with the torch of torchvision's release (make video installs a "
                "matching pair: VIDEO_SPEC in the Makefile)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, required=False)
    p.add_argument("--address", default=None, help="Ray cluster address (overrides ray.address / RAY_ADDRESS)")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="video directories / prefixes / files (local or URI)")
    p.add_argument("--list", action="append", default=[], metavar="FILE", help="a file naming one video per line")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="output directory (local or URI)")
    dest.add_argument("--dataset", metavar="ROOT", help="a dataset directory: add the videos to its unlabeled pool")
    p.add_argument("--format", choices=("npy", "shards"), default="npy", help="with --out: <id>.npy files or shards")
    net = p.add_argument_group("backbone")
    net.add_argument("--model", default="r2plus1d_18", help="a torchvision video model (default r2plus1d_18)")
    net.add_argument("--weights", default="DEFAULT",
                     help="torchvision weights (DEFAULT or an enum name, downloaded) or a state-dict file")
    net.add_argument("--torchscript", default="", metavar="PATH",
                     help="a TorchScript module [B, 3, T, H, W] -> [B, D] instead of --model (needs --crop-size)")
    net.add_argument("--random-init", action="store_true",
                     help="random weights from --seed: for tests only, the features mean nothing")
    net.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    net.add_argument("--resize", type=int, nargs="+", metavar="N",
                     help="resize frames to H W, or the short side to N (default: the model's transform)")
    net.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), help="centre crop (default: the model's)")
    net.add_argument("--mean", type=float, nargs=3, help="normalisation mean (default: the model's)")
    net.add_argument("--std", type=float, nargs=3, help="normalisation std (default: the model's)")
    grid = p.add_argument_group("snippet grid")
    grid.add_argument("--fps", type=float, default=15.0, help="frames per second after resampling (0 = each video's own)")
    grid.add_argument("--num-frames", type=int, default=16, help="frames per window (the backbone's clip length)")
    grid.add_argument("--feat-stride", type=int, default=8, help="frames between consecutive windows")
    run = p.add_argument_group("running")
    run.add_argument("--in-process", action="store_true",
                     help="a plain loop in this process, without Ray (torch on every core)")
    run.add_argument("--clips-per-batch", type=int, default=16, help="windows per backbone call")
    run.add_argument("--decode-tasks", type=int, default=2, help="concurrent decode tasks (Ray)")
    run.add_argument("--decode-cpus", type=float, default=0.5, help="CPUs per decode task (Ray)")
    run.add_argument("--model-actors", type=int, default=1, help="backbone actors (Ray; one GPU each with ray.use_gpu)")
    run.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per backbone actor (its torch threads)")
    run.add_argument("--chunk-windows", type=int, default=8, help="windows per decoded chunk (decode memory)")
    run.add_argument("--rows-per-shard", type=int, default=64, help="videos per output batch (shard file / record)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if not args.inputs and not args.list:
        p.error("give the videos: INPUT directories / files, or --list FILE")
    for name in ("num_frames", "feat_stride", "clips_per_batch", "decode_tasks", "model_actors", "chunk_windows",
                 "rows_per_shard"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.fps < 0 or args.decode_cpus <= 0 or args.actor_cpus <= 0:
        p.error("--fps must be >= 0, --decode-cpus and --actor-cpus > 0")
    if args.resize and len(args.resize) > 2:
        p.error("--resize takes H W, or one number for the short side")
    if args.dataset and args.format != "npy":
        p.error("--dataset writes shards into the dataset's pool; --format goes with --out")
    missing = [m for m in VIDEO_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"extracting features needs {' and '.join(missing)}: {INSTALL_HINT}")
    cfg = job_config(args)
    from raytal.video.backbones import BackboneSpec
    from raytal.video.extraction import plan_extraction, run_extraction
    from raytal.video.stages import EmbedStage, extract_in_process

    backbone = BackboneSpec(args.model, args.weights, args.torchscript, args.random_init, args.seed,
                            tuple(args.resize) if args.resize else None,
                            tuple(args.crop_size) if args.crop_size else None,
                            tuple(args.mean) if args.mean else None, tuple(args.std) if args.std else None)
    plan = plan_extraction(args.inputs, args.list, backbone, fps=args.fps, num_frames=args.num_frames,
                           feat_stride=args.feat_stride, chunk_windows=args.chunk_windows, out=args.out or "",
                           fmt=args.format, dataset=args.dataset or "")
    print(f"{len(plan.videos)} videos, {len(plan.pending)} to extract (D = {plan.feature_dim})")
    clip = plan.clip
    if args.in_process:
        stage = EmbedStage(plan.net, (clip.num_frames, *clip.crop), torch_threads=0,  # torch's own: every core
                           device="cuda" if cfg.ray.use_gpu else "cpu")
        backend = functools.partial(extract_in_process, stage=stage, clips_per_batch=args.clips_per_batch)
    else:
        from raytal.distributed.extract_pipeline import run_extract_pipeline
        from raytal.distributed.session import ensure_ray

        ensure_ray(cfg.ray.address)
        backend = functools.partial(run_extract_pipeline, backbone=plan.backbone, decode_tasks=args.decode_tasks,
                                    model_actors=args.model_actors, clips_per_batch=args.clips_per_batch,
                                    actor_cpus=args.actor_cpus, decode_cpus=args.decode_cpus, use_gpu=cfg.ray.use_gpu)
    summary = run_extraction(plan, backend, args.rows_per_shard)
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
