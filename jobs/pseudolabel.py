"""Make one round's pseudo labels with a teacher checkpoint: the main job's pseudo-label stage on its own.

    python jobs/pseudolabel.py --config configs/tiny_apl.yaml --checkpoint runs/tiny_apl/round_0/train/final.pt \
        --round 1 [--shards DIR_OR_FILE ...] [--out DIR] [--in-process] [--stages MODULE:FUNCTION] [--set key=value ...]

By default it labels what round ``--round`` of the main job labels: the split's unlabeled videos and the
dataset's pool (the run's ``index.json`` when the run exists, else the split of ``--config``), with the
recipes of the config (APL's ICD is trained on the split's labeled videos first), into
``<run>/round_<r>/pseudo/``. The output is replaced only when the pass has finished (a failed or
interrupted pass leaves the previous labels), and only files raytal wrote there are removed
(``raytal/core/outputs.py``): a folder holding other files is refused unless ``--overwrite`` (which writes
beside them, deleting none), and so is an ``--out`` that overlaps an input. Writing into a run directory
(its own, or one ``--out`` lies in) is refused while another job works in it.
``--shards`` labels the videos of other shard files or directories instead (local or s3:// / gs://).
``--stages MODULE:FUNCTION`` replaces the recipes' stages:
``FUNCTION(cfg, checkpoint, num_classes, context) -> (make_infer, label_video)``, the signature of
``raytal.selftrain.teacher.labeling_callables`` (the default). Runs on the cluster of ``--address`` /
``ray.address`` / RAY_ADDRESS, else a local Ray on 127.0.0.1, or without Ray with ``--in-process``.

Exit status: 0 when every video has a row (error rows included: they are listed in the summary),
1 when a shard file was unreadable (its videos have no rows), 2 for bad arguments or input.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import job_backend, job_config, job_parser, run_job  # noqa: E402
from raytal.core import storage  # noqa: E402
from raytal.config import ConfigError  # noqa: E402
from raytal.core.errors import DataError  # noqa: E402


def load_stages(spec: str):
    """'package.module:function' -> the function (imported, not evaluated from text)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"--stages must look like 'package.module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ImportError as e:
        raise ConfigError(f"--stages: cannot import {module}: {e}") from e
    if not callable(fn):
        raise ConfigError(f"--stages: {module} has no function {name!r}")
    return fn


def _whole_file(path: str):
    """A ``--shards`` file as a source of all its rows. An unreadable file stays in (0 rows): the pass
    reports it as a file error and labels the other files (exit 1), as it does for the run's own shards."""
    from raytal.data.index import Source
    from raytal.data.shards import open_shard

    try:
        return Source(path, None, open_shard(path).metadata.num_rows)
    except DataError:
        return Source(path, None, 0)


def main(argv: list[str] | None = None) -> int:
    p = job_parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="teacher checkpoint, detector or weak base model (its path is the teacher id)")
    p.add_argument("--round", type=int, required=True, help="self-training round r (output round_<r>/pseudo)")
    p.add_argument("--stages", default="raytal.selftrain.teacher:labeling_callables",
                   help="MODULE:FUNCTION building (make_infer, label_video) (default: the config's recipes)")
    p.add_argument("--shards", nargs="+", default=None,
                   help="shard dirs/files to label, local or s3:// (default: the split's unlabeled videos and the pool)")
    p.add_argument("--out", default=None, help="output dir (default <run>/round_<r>/pseudo)")
    args = p.parse_args(argv)
    if args.round < 1:
        p.error("--round must be >= 1 (round 0 trains the teacher)")
    cfg = job_config(args)
    from raytal.data.index import RunIndex, build_index
    from raytal.data.shards import check_unique_videos, list_shards
    from raytal.recipes.labeling import prepare_labeling
    from raytal.selftrain.pseudo_stage import PipelineSummary
    from raytal.selftrain.rounds import label_into, pseudo_output, run_dir_of, run_output
    from raytal.selftrain.run_lock import lock_enclosing_run
    from raytal.selftrain.spec import LabelSpec
    from raytal.selftrain.teacher import teacher_kind

    build = load_stages(args.stages)  # a bad --stages is refused before anything runs
    run = run_dir_of(cfg)
    out = args.out or storage.join(run, f"round_{args.round}", "pseudo")
    inputs = [("--checkpoint", args.checkpoint), ("data.root", cfg.data.root),
              *(("--shards", s) for s in args.shards or [])]
    output = pseudo_output(out, inputs, args.overwrite)  # the output's location, checked before anything runs
    if args.out is None:  # the run's own folder: made a run directory, so a later selftrain.py resumes there
        run_output(cfg).claim().release()
    saved = storage.join(run, "index.json")
    index = RunIndex.load(saved) if storage.is_file(saved) else build_index(cfg.data, with_test=False)
    if args.shards:
        files = [f for s in args.shards for f in list_shards(s)]
        check_unique_videos(files)
        sources = tuple(("pool", _whole_file(f)) for f in files)
    else:
        sources = tuple(index.pseudo_sources())
    if not sources:
        raise DataError(f"nothing to label: no shard files under {args.shards or index.root}")
    backend = job_backend(args, cfg)
    # Writing into a run directory (its own, or one that --out lies in): not while a job works there
    # (raytal.selftrain.run_lock). The folder is claimed before the teacher is loaded or anything runs.
    with lock_enclosing_run(output.path), output:
        kind = teacher_kind(args.checkpoint)
        context = prepare_labeling(cfg, lambda: index.videos("labeled"), kind)
        if cfg.recipe.min_score_rule == "val_count":  # the teacher's threshold, counted on the split's val videos
            from raytal.data.dataset import load_dataset_info
            from raytal.selftrain.evaluate import count_threshold_on

            threshold = count_threshold_on(cfg, backend, args.checkpoint, index.parts.get("val", []),
                                           load_dataset_info(cfg.data.root))
            context = dataclasses.replace(context, min_score=threshold)
            print(f"pseudo labels from score {threshold:.4f} (as many detections on the val videos as their instances)")
        spec = LabelSpec(args.checkpoint, args.round, output.path, index.num_classes, index.setting, sources, context,
                         stages=build)
        summary = PipelineSummary(**label_into(output, spec, lambda s: backend.pseudolabel(cfg, s)))
    summary = dataclasses.replace(summary, out_dir=output.path)
    print(summary.format())
    if summary.file_errors:
        print(f"error: {len(summary.file_errors)} shard file(s) unreadable; their videos have no rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
