"""Build a dataset directory: synthetic features on real/generated timelines, or convert real features.

    python jobs/make_dataset.py --preset tiny --out data/tiny
    python jobs/make_dataset.py --preset thumos14-synth --annotations thumos14.json --out data/thumos14-synth
    python jobs/make_dataset.py --preset synth --annotations anet.json --out data/anet-synth --fps 30
    python jobs/make_dataset.py --preset thumos14-synth --out data/t --num-unlabeled 100000  # $RAYTAL_THUMOS14_JSON
    python jobs/make_dataset.py --annotations my.json --features my_feats/ --feat-stride 4 \
        --num-frames 16 --out data/mine          # real features: check + convert to shards

Writes DIR/annotations.json, DIR/features/<id>.npy, DIR/shards/<subset>/part-*.parquet, DIR/dataset.yaml
(see raytal/data/dataset.py) and prints per-class feature statistics. DIR is local; it must not hold or lie
inside the inputs, and a DIR that holds files raytal did not write is refused (``--overwrite`` writes beside
them, deleting none). Re-running replaces the dataset raytal wrote there once the new one is complete,
removing only the files its manifest (DIR/.raytal-output.json, with each shard's sha256) lists.
``--num-unlabeled N`` also streams N synthetic unlabeled videos (timelines sampled from the training subset),
and ``--unlabeled-features DIR`` a directory of the user's own unannotated <video_id>.npy files (optional
``--video-info`` CSV/JSON with per-video duration and fps; see raytal/data/pool.py), into
DIR/shards/unlabeled/, one shard at a time, for synthetic and converted datasets alike. The generative model is documented in raytal/data/synthetic.py.

    python jobs/make_dataset.py --annotations my.json --features my_feats/ --feat-stride 4 --num-frames 16 \
        --unlabeled-features my_unlabeled_feats/ --video-info video_info.csv --out data/mine
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from raytal.cli import add_overwrite_arg, run_job
from raytal.core import storage
from raytal.core.outputs import OutputDir
from raytal.data.annotations import Annotations, load_annotations, save_annotations
from raytal.data.dataset import DatasetInfo, convert_to_shards, save_dataset_info
from raytal.core.errors import DataError
from raytal.core.protocols import THUMOS14, parse_tious, protocol_for
from raytal.core.video import Video
from raytal.data.features import load_features, save_features
from raytal.data.pool import POOL_SUBSET, read_video_info, unlabeled_videos
from raytal.data.shards import write_shards
from raytal.selftrain.run_lock import lock_enclosing_run
from raytal.data.synthetic import (
    class_sets_of,
    feature_statistics,
    format_statistics,
    make_world,
    stream_unlabeled,
    synthesize_video,
    tiny_timelines,
)

# The file thumos14-synth takes its timelines from, when --annotations is not given.
THUMOS14_ENV = "RAYTAL_THUMOS14_JSON"
THUMOS14_SOURCE = (
    "ActionFormer's THUMOS14 annotation file thumos14.json (data/thumos/annotations/thumos14.json in "
    "thumos.tar.gz, linked from the README of https://github.com/happyharrycn/actionformer_release)"
)
PRESETS = {
    # name: (feature_dim, feat_stride, num_frames, env var naming the default annotation file, default difficulty)
    # thumos14-synth's 2.6 is calibrated (benchmarks/RESULTS.md): the supervised detector reaches ~60 avg mAP
    # (0.3:0.1:0.7) with 100 % labels and ~28 with 10 %, the regime of the papers.
    "tiny": (32, 16, 16, None, 1.0),
    "thumos14-synth": (64, 16, 16, THUMOS14_ENV, 2.6),
    "synth": (64, 16, 16, None, 2.6),
}
SUBSET_PAIRS = [("Validation", "Test"), ("training", "validation"), ("train", "test")]
STATS_SNIPPETS_PER_VIDEO = 64  # statistics use a bounded sample per video
DATASET_FILES = ("annotations.json", "dataset.yaml", "features/*", "shards/*")  # where the job writes in --out


def pick_subsets(ann: Annotations, train: str | None, test: str | None) -> tuple[str, str]:
    names = ann.subsets()
    if train and test:
        return train, test
    for a, b in SUBSET_PAIRS:
        if a in names and b in names:
            return train or a, test or b
    raise DataError(f"cannot tell the train/test subsets among {names}; pass --train-subset/--test-subset")


def report_fixes(ann: Annotations) -> None:
    """One warning per fixed annotation problem, then the summary line (stderr)."""
    for w in ann.warnings:
        print(f"warning: {w}", file=sys.stderr)
    summary = ann.fix_summary()
    if summary:
        print(summary, file=sys.stderr)


def load_user_annotations(args: argparse.Namespace, path: str, stride: int, nframes: int) -> Annotations:
    """The annotation file with the grid parameters, its fixes reported, fps forced when asked."""
    ann = load_annotations(path, strict=args.strict, default_fps=args.fps, feat_stride=stride, num_frames=nframes)
    report_fixes(ann)
    if args.force_fps:
        for v in ann.videos.values():
            v.fps = float(args.fps)
    return ann


def write_unlabeled_pool(
    args: argparse.Namespace,
    out: Path,
    dim: int,
    stride: int,
    nframes: int,
    annotated: dict[str, str],
    hashes: dict[str, str],
    synthetic: Iterator[Video] | None = None,
) -> str:
    """Stream the unlabeled pool (``synthetic`` videos when --num-unlabeled > 0, then the files of
    --unlabeled-features) into DIR/shards/unlabeled; returns that path for dataset.yaml, or "" if none.
    ``hashes`` receives each shard's sha256."""
    pools: list[Iterable[Video]] = []
    if args.num_unlabeled > 0 and synthetic is not None:
        pools.append(synthetic)
    if args.unlabeled_features:
        info = read_video_info(args.video_info) if args.video_info else None
        pools.append(unlabeled_videos(
            args.unlabeled_features, feature_dim=dim, feat_stride=stride, num_frames=nframes,
            default_fps=args.fps, info=info, annotated=annotated, feature_prefix=args.feature_prefix,
            force_fps=args.force_fps, info_source=args.video_info or "", strict=args.strict,
            warn=lambda w: print(f"warning: {w}", file=sys.stderr),
        ))
    if not pools:
        return ""
    if POOL_SUBSET in annotated.values():
        raise DataError(f"an annotated subset is named '{POOL_SUBSET}', the name of the unlabeled pool's shards")
    t0 = time.time()
    count = 0

    def counted() -> Iterator[Video]:
        nonlocal count
        for v in itertools.chain(*pools):
            count += 1
            yield v

    paths = write_shards(counted(), out / "shards" / POOL_SUBSET, args.rows_per_shard, dim, hashes=hashes)
    print(f"streamed {count} unlabeled videos -> {len(paths)} shards in {time.time() - t0:.1f} s")
    return f"shards/{POOL_SUBSET}"


def dataset_tious(args: argparse.Namespace, ann: Annotations | None) -> list[float]:
    """The evaluation protocol recorded in dataset.yaml: ``--tious``, else ActivityNet's for an official
    ActivityNet file (or its subset names), else THUMOS14's."""
    if args.tious:
        return parse_tious(args.tious, "--tious")
    return list(protocol_for(ann.subsets(), ann.official) if ann is not None else THUMOS14)


def build_synthetic(args: argparse.Namespace, out: Path, hashes: dict[str, str]) -> None:
    """The synthetic dataset into ``out`` (a fresh folder); ``hashes`` receives each shard's sha256."""
    dim, stride, nframes, ann_env, default_difficulty = PRESETS[args.preset]
    if args.difficulty is None:
        args.difficulty = default_difficulty
    dim = args.feature_dim or dim
    stride = args.feat_stride or stride
    nframes = args.num_frames or nframes
    ann = None
    if args.preset == "tiny" and not args.annotations:
        classes, timelines = tiny_timelines(args.seed, args.num_videos, feat_stride=stride, num_frames=nframes)
        train_subset, test_subset, source = "train", "test", "generated"
    else:
        path = args.annotations or (os.environ.get(ann_env) if ann_env else None)
        if not path:
            if ann_env:
                raise DataError(f"--preset {args.preset} needs {THUMOS14_SOURCE}: pass --annotations FILE or set {ann_env}")
            raise DataError(f"--preset {args.preset} needs --annotations FILE")
        ann = load_user_annotations(args, path, stride, nframes)
        classes, timelines = ann.classes, list(ann.videos.values())
        train_subset, test_subset = pick_subsets(ann, args.train_subset, args.test_subset)
        source = str(path)

    train_vids = [v for v in timelines if v.subset == train_subset]
    world = make_world(len(classes), dim, class_sets_of(train_vids or timelines), args.seed, args.difficulty)
    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    index = {v.video_id: j for j, v in enumerate(timelines)}
    stat_feats: list[np.ndarray] = []
    stat_labels: list[np.ndarray] = []
    rng_stats = np.random.default_rng([args.seed, 99])

    def one_subset(subset: str):
        vids = [v for v in timelines if v.subset == subset]
        for v in vids:
            v2, lab = synthesize_video(world, v, args.seed, index[v.video_id])
            save_features(feat_dir, v2.video_id, v2.features)
            T = len(lab)
            take = rng_stats.choice(T, min(T, STATS_SNIPPETS_PER_VIDEO), replace=False)
            stat_feats.append(v2.features[take])
            stat_labels.append(lab[take])
            yield v2

    for subset in dict.fromkeys(v.subset for v in timelines):
        paths = write_shards(one_subset(subset), out / "shards" / subset, args.rows_per_shard, dim, hashes=hashes)
        print(f"subset {subset}: {sum(v.subset == subset for v in timelines)} videos -> {len(paths)} shards")
    save_annotations(out / "annotations.json", Annotations(classes, {v.video_id: v for v in timelines}))

    synthetic = stream_unlabeled(world, train_vids or timelines, args.num_unlabeled, args.seed)
    unl = write_unlabeled_pool(args, out, dim, stride, nframes, {v.video_id: v.subset for v in timelines}, hashes,
                               synthetic)

    info = DatasetInfo(
        name=args.name or args.preset,
        feat_stride=stride,
        num_frames=nframes,
        feature_dim=dim,
        classes=classes,
        train_subset=train_subset,
        test_subset=test_subset,
        fps=float(args.fps),
        unlabeled_shards=unl,
        tious=dataset_tious(args, ann),
        generator={
            "preset": args.preset,
            "seed": args.seed,
            "difficulty": float(args.difficulty),
            "latent_dim": world.latent_dim,
            "timelines": source,
            "confusion_share": round(world.share, 4),
        },
    )
    save_dataset_info(out, info)
    stats = feature_statistics(stat_feats, stat_labels, classes, seed=args.seed)
    print(f"feature statistics (sample of <= {STATS_SNIPPETS_PER_VIDEO} snippets per video, centred):")
    print(format_statistics(stats))


def convert_real(args: argparse.Namespace, out: Path, hashes: dict[str, str]) -> None:
    """The user's features converted into ``out`` (a fresh folder); ``hashes`` receives each shard's sha256."""
    if not (args.feat_stride and args.num_frames):
        raise DataError("converting real features needs --feat-stride and --num-frames")
    ann = load_user_annotations(args, args.annotations, args.feat_stride, args.num_frames)
    train_subset, test_subset = pick_subsets(ann, args.train_subset, args.test_subset)
    first = next(iter(ann.videos.values()))
    dim = args.feature_dim or int(load_features(args.features, first, prefix=args.feature_prefix).shape[1])
    paths = convert_to_shards(ann, args.features, out / "shards", dim, args.rows_per_shard, args.feature_prefix,
                              hashes=hashes)
    for subset, p in paths.items():
        print(f"subset {subset}: {len(ann.subset(subset))} videos -> {len(p)} shards")
    save_annotations(out / "annotations.json", ann)
    unl = write_unlabeled_pool(args, out, dim, args.feat_stride, args.num_frames,
                               {v.video_id: v.subset for v in ann.videos.values()}, hashes)
    info = DatasetInfo(
        name=args.name or Path(args.out).name,
        feat_stride=args.feat_stride,
        num_frames=args.num_frames,
        feature_dim=dim,
        classes=ann.classes,
        train_subset=train_subset,
        test_subset=test_subset,
        fps=float(args.fps),
        features_dir=str(Path(args.features).resolve()),
        unlabeled_shards=unl,
        tious=dataset_tious(args, ann),
        generator={"source": str(Path(args.annotations).resolve()), "feature_prefix": args.feature_prefix},
    )
    save_dataset_info(out, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="synthesize features (omit with --features)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--annotations", help="ActivityNet-style annotation JSON (either dialect)")
    p.add_argument("--features", help="directory of real <video_id>.npy features: convert instead of synthesize")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=None,
                   help="noise/confusion/blur knob (>= 0; default: the preset's, 2.6 for thumos14-synth, 1.0 for tiny)")
    p.add_argument("--feature-dim", type=int, default=0, help="D (0 = the preset's)")
    p.add_argument("--feat-stride", type=int, default=0, help="frames per snippet step (0 = the preset's)")
    p.add_argument("--num-frames", type=int, default=0, help="frames per snippet clip (0 = the preset's)")
    p.add_argument("--fps", type=float, default=30.0, help="fps for videos whose annotation has none")
    p.add_argument("--train-subset", default=None)
    p.add_argument("--test-subset", default=None)
    p.add_argument("--num-videos", type=int, default=48, help="tiny preset: annotated videos (2/3 train, 1/3 test)")
    p.add_argument("--num-unlabeled", type=int, default=0, help="stream this many extra synthetic unlabeled videos")
    p.add_argument("--unlabeled-features", metavar="DIR",
                   help="directory of unannotated <video_id>.npy features: stream them into DIR/shards/unlabeled")
    p.add_argument("--video-info", metavar="FILE",
                   help="CSV or JSON with per-video duration and fps for --unlabeled-features (raytal/data/pool.py; "
                        "default: fps --fps, duration from T)")
    p.add_argument("--feature-prefix", default="",
                   help="feature files are <prefix><video_id>.npy (ActionFormer's ActivityNet features: v_)")
    p.add_argument("--force-fps", action="store_true",
                   help="use --fps for every video, ignoring the files' fps (ActionFormer's default_fps)")
    p.add_argument("--rows-per-shard", type=int, default=64)
    p.add_argument("--name", default="")
    p.add_argument("--tious", default=None, metavar="T",
                   help="the evaluation protocol's tIoU thresholds, start:step:stop or a comma list (default: "
                        "ActivityNet's 0.5:0.05:0.95 for an official ActivityNet file, else THUMOS14's 0.3:0.1:0.7)")
    p.add_argument("--strict", action="store_true",
                   help="refuse benign annotation defects (zero-length segments, segments past the end, "
                        "unannotated videos in a labeled subset) and --video-info durations shorter than the "
                        "features, instead of fixing each with a warning")
    add_overwrite_arg(p)
    args = p.parse_args(argv)
    if args.difficulty is not None and args.difficulty < 0:
        p.error("--difficulty must be >= 0")
    for flag, value, least in (("--rows-per-shard", args.rows_per_shard, 1), ("--num-unlabeled", args.num_unlabeled, 0),
                               ("--feature-dim", args.feature_dim, 0), ("--feat-stride", args.feat_stride, 0),
                               ("--num-frames", args.num_frames, 0)):
        if value < least:
            p.error(f"{flag} must be >= {least}, got {value}")
    if args.feature_dim == 1:
        p.error("--feature-dim must be >= 2 (0 = the preset's)")
    if not (args.fps > 0 and np.isfinite(args.fps)):
        p.error(f"--fps must be a positive number, got {args.fps}")
    if args.num_videos < 3:
        p.error(f"--num-videos must be >= 3 (train and test videos), got {args.num_videos}")
    if args.num_videos != 48 and (args.preset != "tiny" or args.annotations):
        p.error("--num-videos sizes the tiny preset's generated timelines; other presets take --annotations")
    if args.video_info and not args.unlabeled_features:
        p.error("--video-info describes the files of --unlabeled-features; give that too")
    if args.features:
        if not args.annotations:
            p.error("--features needs --annotations")
        if args.num_unlabeled:
            p.error("--num-unlabeled synthesizes videos (--preset); own unlabeled files: --unlabeled-features")
        build = convert_real
    elif args.preset:
        build = build_synthetic
    else:
        p.error("give --preset NAME (synthetic) or --annotations FILE --features DIR (real)")
    for flag, value in (("--out", args.out), ("--annotations", args.annotations), ("--features", args.features),
                        ("--unlabeled-features", args.unlabeled_features), ("--video-info", args.video_info)):
        if value and (storage.is_uri(value) or storage.location_error(value)):
            raise DataError(f"{flag} {value}: expected a local path (make_dataset.py reads and writes local files; "
                            "copy the dataset to object storage afterwards)")
    # The dataset folder: checked before anything is read, replaced only when the new dataset is complete, and
    # only the files raytal wrote there are removed (raytal/core/outputs.py).
    output = OutputDir(args.out, kind="dataset", overwrite=args.overwrite, owns=DATASET_FILES,
                       inputs=[("--annotations", args.annotations), ("--features", args.features),
                               ("--unlabeled-features", args.unlabeled_features), ("--video-info", args.video_info)])
    t0 = time.time()
    hashes: dict[str, str] = {}
    with lock_enclosing_run(output.path), output, output.staged() as staged:
        build(args, Path(staged), hashes)
        output.commit(staged, hashes)
    print(f"wrote {args.out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
