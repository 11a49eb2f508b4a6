"""Apply a trained checkpoint (a detector, or the weak setting's base model) to new videos: batch inference.

    python jobs/predict.py --config configs/tiny_apl.yaml --checkpoint runs/tiny_apl/round_1/train/final.pt \
        --features my_feats/ --out results.json
    python jobs/predict.py --config configs/thumos14_apl_ntc.yaml --checkpoint s3://b/runs/x/round_1/train/final.pt \
        --shards s3://b/data/pool/shards/unlabeled --out s3://b/predictions/pool.parquet

Inputs: ``--features DIR`` (``<video_id>.npy`` float32 [T, D], local or s3:// / gs://; with ``--video-info FILE``
giving per-video duration and fps as for ``make_dataset.py --unlabeled-features``) or ``--shards`` (shard
directories or files). The features must be extracted as the training dataset's (``data.root``'s dataset.yaml
gives D, feat_stride, num_frames, fps and the class names). Post-processing is the run's own: the config's
``infer.*`` and recipes (GauFuse's fusion at test time), as in the run's evaluation.

Runs as the pseudo-label pipeline's inference stage on Ray Data's actor pool (``ray.*`` sizes it; cluster
from ``--address`` / ``ray.address`` / RAY_ADDRESS, else a local Ray on 127.0.0.1), or in this process with
``--in-process``; both give the same detections. Output: ``--out X.json`` writes the ActivityNet results format
(seconds, labels by name; videos that could not be read under ``errors``) for sets that fit in memory;
``--out X.parquet`` (a directory of Parquet files: video_id, detections, error) for any size. A bad video
(missing or non-finite features, wrong width) is an error row, never a dead job; a video given twice (in two
shard files) is refused before anything runs. A ``--video-info`` duration shorter than the video's features
would clip its detections: it is replaced by the features' span with a warning (``--strict``: refused).

The output is checked before any work (``raytal/core/outputs.py``): it must not overlap an input; an
existing ``X.json`` is replaced only if raytal wrote it; ``X.parquet`` is replaced only if raytal made it
(its files raytal did not write are never removed: ``--overwrite`` writes beside them), and only once the
new predictions are complete. Inside a run directory the run's lock is respected. Exit status 0 when every
video has a row, 2 for bad arguments or input.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_backend, job_config, job_parser, run_job  # noqa: E402
from raytal.config import ConfigError  # noqa: E402
from raytal.core import storage  # noqa: E402
from raytal.core.outputs import OutputDir, check_output_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = job_parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="a stage's final.pt (detector or weak base model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", help="directory of <video_id>.npy feature files (local or URI)")
    src.add_argument("--shards", nargs="+", help="shard directories or files (local or URI)")
    p.add_argument("--video-info", default=None, help="CSV/JSON with per-video duration and fps (with --features)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a --video-info duration shorter than the video's features (default: use the "
                        "features' span, with a warning)")
    p.add_argument("--out", required=True, help="results: X.json (ActivityNet format) or X.parquet (a directory)")
    args = p.parse_args(argv)
    if not args.out.endswith((".json", ".parquet")):
        p.error("--out must end in .json (ActivityNet results) or .parquet (a directory of Parquet files)")
    if args.video_info and not args.features:
        p.error("--video-info describes the files of --features; give that too")
    cfg = job_config(args)
    from raytal.data.dataset import load_dataset_info
    from raytal.data.pool import checked_durations, read_video_info
    from raytal.data.shards import check_unique_videos, list_shards
    from raytal.selftrain.predict import (
        RESULTS_SIGNATURE, Grid, feature_inputs, read_detections, read_feature_input, shard_inputs, summarize,
        write_results_json,
    )
    from raytal.selftrain.pseudo_stage import input_blocks
    from raytal.selftrain.run_lock import lock_enclosing_run
    from raytal.selftrain.spec import DetectSpec
    from raytal.selftrain.teacher import Predictor

    sources = [("--checkpoint", args.checkpoint), ("data.root", cfg.data.root), ("--features", args.features),
               ("--video-info", args.video_info), *(("--shards", s) for s in args.shards or [])]
    as_json = args.out.endswith(".json")
    # The output is checked before anything is read or run: a results file raytal did not write is never
    # replaced, a folder is claimed as raytal's (raytal.core.outputs).
    if as_json:
        out = check_output_file(args.out, flag="--out", signature=RESULTS_SIGNATURE, inputs=sources)
        output = None
    else:
        output = OutputDir(args.out, kind="predictions", inputs=sources, overwrite=args.overwrite,
                           owns=("*.parquet",))
        out = output.path
    if not storage.is_file(storage.join(cfg.data.root, "dataset.yaml")):
        raise ConfigError(f"data.root={cfg.data.root!r}: the training dataset's dataset.yaml is needed for the "
                          "feature grid and the class names")
    info = load_dataset_info(cfg.data.root)
    # refuses a checkpoint of another class count or feature width, early
    Predictor(cfg, args.checkpoint, len(info.classes), info.feature_dim)
    grid = Grid(info.feature_dim, info.feat_stride, info.num_frames, info.fps)
    if args.features:
        inputs = feature_inputs(args.features)
        video_info = read_video_info(args.video_info) if args.video_info else {}
        if video_info:
            video_info, warnings = checked_durations(
                [(vid, storage.join(args.features, f"{vid}.npy")) for u in inputs for vid in u.ids], video_info,
                feat_stride=grid.feat_stride, num_frames=grid.num_frames, default_fps=grid.fps,
                source=args.video_info, strict=args.strict)
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
            if warnings:
                print(f"{len(warnings)} video-info durations fixed (shorter than their features)", file=sys.stderr)
        read = functools.partial(read_feature_input, info=video_info, grid=grid)
    else:
        files = [f for s in args.shards for f in list_shards(s)]
        check_unique_videos(files)
        inputs = shard_inputs(files)
        read = input_blocks
    start = time.perf_counter()
    with lock_enclosing_run(out), (output or contextlib.nullcontext()), (
            tempfile.TemporaryDirectory(prefix="raytal-predict-") if as_json else output.staged()) as staged:
        job_backend(args, cfg).detect(cfg, DetectSpec(args.checkpoint, tuple(inputs), read, staged, len(info.classes),
                                                      info.feature_dim))
        summary = summarize(staged, start)
        if as_json:
            write_results_json(read_detections(staged), info.classes, out)
        else:
            output.commit(staged)
    print(summary.format(out))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
