"""Self-training rounds: teacher → pseudo labels → student → evaluation, resumable stage by stage.

Round 0 trains the teacher on the labeled videos and evaluates it (the supervised baseline). Each
round r ≥ 1 makes pseudo labels for the unlabeled videos with the current teacher, measures their
quality against the hidden ground truth, trains a student on labeled + pseudo-labeled videos and
evaluates it; the student is the next teacher. Where the work runs is the back-end's business
(in-process, or Ray Train + Ray Data); what runs and in which order is decided here, once.

Every stage is recorded in ``<run>/stages.json`` when it finishes; re-running the same command skips
finished stages (a training stage interrupted mid-way resumes from its last epoch checkpoint).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from raytal.config import Config, ConfigError, save_config
from raytal.data.dataset import load_dataset, write_split_shards
from raytal.data.pseudo_io import apply_pseudo_labels, read_pseudo_labels
from raytal.data.shards import read_shards
from raytal.eval.quality import pseudo_label_quality
from raytal.core.segments import SegmentTable
from raytal.pseudo.delta import regeneration_epochs
from raytal.selftrain.common import evaluate_model, load_detector
from raytal.selftrain.labeling import ICDContext, fit_icd
from raytal.selftrain.report import percent, write_report
from raytal.selftrain.weak import (
    WEAK_TIOUS, eval_json, evaluate_weak, is_weak_checkpoint, load_weak, predict_checkpoint, train_weak_stage,
)

log = logging.getLogger("raytal.selftrain")


class Backend(Protocol):
    def train(
        self, cfg: Config, stage_dir: Path, split_dir: Path, pseudo_dir: Path | None, init: str | None,
        num_classes: int, input_dim: int, *, prev_pseudo_dir: Path | None = None, stop_epoch: int | None = None,
    ) -> str: ...

    def pseudolabel(
        self, cfg: Config, teacher: str, round_index: int, split_dir: Path, out_dir: Path, num_classes: int,
        icd: ICDContext | None,
    ) -> dict: ...


def run_dir_of(cfg: Config) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    return Path("runs") / (cfg.run.name or "selftrain")


def round_quality(cfg: Config, split_dir: Path, pseudo_dir: Path, num_classes: int) -> dict:
    """Pseudo-label quality against the unlabeled videos' hidden ground truth (SPEC §7)."""
    unlabeled = list(read_shards(split_dir / "unlabeled"))
    pseudo = apply_pseudo_labels(unlabeled, read_pseudo_labels(pseudo_dir))
    q = pseudo_label_quality(SegmentTable.from_videos(unlabeled), SegmentTable.from_videos(pseudo), num_classes)
    return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in q.items()}


def evaluate_checkpoint(cfg: Config, checkpoint: str, test) -> dict:
    if cfg.data.setting == "weak":  # base model or detector; the weak papers' tIoUs 0.1:0.1:0.7
        if is_weak_checkpoint(checkpoint):
            return eval_json(evaluate_weak(cfg, load_weak(checkpoint), test))
        return eval_json(evaluate_model(cfg, load_detector(cfg, checkpoint), test, WEAK_TIOUS))
    result = evaluate_model(cfg, load_detector(cfg, checkpoint), test)
    return result.to_json()


def run_selftrain(cfg: Config, backend: Backend, on_round: Callable[[int, dict], None] | None = None) -> dict:
    """Run (or resume) every round of ``cfg``; returns the run's metrics (also in ``metrics.json``).

    ``on_round(r, eval_result)`` is called after each round's evaluation (Tune reports it per round).
    """
    from raytal.selftrain.stages import StageLog

    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    stages = StageLog(run_dir / "stages.json")
    finished = f"finished_{cfg.run.rounds}_rounds"  # raising run.rounds later continues the run
    if stages.done(finished):
        log.info("run %s is already finished; metrics in %s", run_dir, run_dir / "metrics.json")
        return stages.result(finished)

    ds = load_dataset(cfg.data, load_test=cfg.run.eval_subset == "test")  # a val run never reads test
    num_classes, input_dim = ds.num_classes, ds.info.feature_dim
    split_dir = run_dir / "data"
    stages.run("split", lambda: {k: [str(p) for p in v] for k, v in write_split_shards(
        ds, split_dir, cfg.ray.rows_per_shard).items()})
    log.info("split: %d labeled, %d unlabeled, %d val, %d test videos",
             len(ds.labeled), len(ds.unlabeled), len(ds.val), len(ds.test))

    def train_dir(round_index: int) -> Path:
        return run_dir / f"round_{round_index}" / "train"

    def train(round_index: int, pseudo_dir: Path | None, init: str | None, prev_pseudo_dir: Path | None = None) -> str:
        name = f"round_{round_index}/train"
        log.info("%s: %s", name, "teacher on labeled videos" if pseudo_dir is None else "student on labeled + pseudo")
        return stages.run(name, backend.train, cfg, train_dir(round_index), split_dir,
                          pseudo_dir, init, num_classes, input_dim, prev_pseudo_dir=prev_pseudo_dir)

    def train_until(round_index: int, epoch: int, pseudo_dir: Path, init: str | None, prev: Path | None) -> str:
        """One segment of a student's training that stops at ``epoch``; its checkpoint is kept as
        ``epoch_<e>.pt`` (the stage's final.pt is rewritten by the next segment)."""
        final = backend.train(cfg, train_dir(round_index), split_dir, pseudo_dir, init, num_classes, input_dim,
                              prev_pseudo_dir=prev, stop_epoch=epoch)
        return str(shutil.copyfile(final, train_dir(round_index) / f"epoch_{epoch}.pt"))

    # GauFuse regenerates the pseudo labels with the student at these epochs and trains on the Δ labels.
    regen = _regeneration_epochs(cfg)

    def train_student(round_index: int, pseudo_dir: Path, init: str | None) -> str:
        # Δ labels compare two generations of the student itself: the teacher's labels (generation 0)
        # and the student's first generation are trained as they are, like any first generation.
        prev = None
        for i, epoch in enumerate(regen):
            student = stages.run(f"round_{round_index}/train_to_{epoch}", train_until, round_index, epoch,
                                 pseudo_dir, init, prev)
            gen_dir = run_dir / f"round_{round_index}" / f"pseudo_at_{epoch}"
            summary = stages.run(f"round_{round_index}/pseudo_at_{epoch}", backend.pseudolabel, cfg, student,
                                 round_index, split_dir, gen_dir, num_classes, icd)
            q = stages.run(f"round_{round_index}/quality_at_{epoch}", round_quality, cfg, split_dir, gen_dir, num_classes)
            log.info("round %d: pseudo labels regenerated at epoch %d: %d rows, %d instances, class acc %s %%, "
                     "positive acc %s %%", round_index, epoch, summary["rows_out"], q["num_pseudo"],
                     percent(q["class_accuracy"]), percent(q["positive_accuracy"]))
            prev, pseudo_dir = (pseudo_dir if i > 0 else None), gen_dir
        return train(round_index, pseudo_dir, init, prev)

    if cfg.run.eval_subset not in ("test", "val"):
        raise ConfigError(f"run.eval_subset: expected 'test' or 'val', got {cfg.run.eval_subset!r}")
    eval_videos = ds.test if cfg.run.eval_subset == "test" else ds.val
    if not eval_videos:
        raise ConfigError(f"run.eval_subset={cfg.run.eval_subset!r} but that split is empty"
                          + (" (set data.val_ratio > 0)" if cfg.run.eval_subset == "val" else ""))

    def evaluate(round_index: int, checkpoint: str) -> dict:
        res = stages.run(f"round_{round_index}/eval", evaluate_checkpoint, cfg, checkpoint, eval_videos)
        log.info("round %d: %s average mAP %.2f %%", round_index, cfg.run.eval_subset, 100 * res["average_mAP"])
        if on_round is not None:
            on_round(round_index, res)
        return res

    if cfg.run.teacher:  # a teacher shared between runs (Tune trials whose keys do not change round 0)
        teacher = stages.run("round_0/train", lambda: str(Path(cfg.run.teacher).resolve()))
    elif cfg.data.setting == "weak":  # video-level labels only: the base WTAL model is the first teacher
        teacher = stages.run("round_0/train", train_weak_stage, cfg, train_dir(0), split_dir,
                             num_classes)
    else:
        teacher = train(0, None, None)
    evaluate(0, teacher)
    icd = fit_icd(cfg, ds.labeled) if cfg.recipe.apl.enabled and cfg.recipe.apl.icd else None
    for r in range(1, cfg.run.rounds + 1):
        pseudo_dir = run_dir / f"round_{r}" / "pseudo"
        summary = stages.run(f"round_{r}/pseudo", backend.pseudolabel, cfg, teacher, r, split_dir, pseudo_dir,
                             num_classes, icd)
        log.info("round %d pseudo labels: %s", r, {k: summary[k] for k in ("videos_in", "rows_out", "num_errors")})
        stages.run(f"round_{r}/quality", round_quality, cfg, split_dir, pseudo_dir, num_classes)
        # A base-model teacher has another architecture: its student starts from scratch.
        init = teacher if cfg.train.student_init == "teacher" and not is_weak_checkpoint(teacher) else None
        teacher = train_student(r, pseudo_dir, init)
        evaluate(r, teacher)

    metrics = collect_metrics(cfg, stages)
    timelines = _timelines(cfg, stages, ds.unlabeled[:3], run_dir) if cfg.run.rounds > 0 else None
    write_report(run_dir, metrics, ds.info.classes, timelines)
    stages.record(finished, metrics, 0.0)
    return metrics


def _timelines(cfg: Config, stages, videos, run_dir: Path) -> list[dict]:
    """Ground truth, last teacher's predictions and the last round's pseudo labels of a few videos."""
    r = cfg.run.rounds
    teacher = stages.result(f"round_{r - 1}/train")
    preds = predict_checkpoint(cfg, teacher, videos)
    records = read_pseudo_labels(run_dir / f"round_{r}" / "pseudo")
    pseudo = {v.video_id: v for v in apply_pseudo_labels(videos, records)}
    out = []
    for v, p in zip(videos, preds):
        top = np.argsort(-p["scores"])[:20]
        pv = pseudo.get(v.video_id)  # absent when the video's pseudo-label row is an error row
        empty = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        seg, lab = (pv.segments, pv.labels) if pv is not None else empty
        out.append(dict(
            video_id=v.video_id, round=r, duration=v.duration, gt_segments=v.segments, gt_labels=v.labels,
            pred_segments=p["segments"][top], pred_labels=p["labels"][top], pred_scores=p["scores"][top],
            pseudo_segments=seg, pseudo_labels=lab,
        ))
    return out


def _regeneration_epochs(cfg: Config) -> list[int]:
    """The student epochs at which GauFuse regenerates its pseudo labels (none for other recipes)."""
    if not cfg.recipe.gaufuse.enabled:
        return []
    try:
        return regeneration_epochs(cfg.recipe.gaufuse.schedule, cfg.train.epochs)
    except ValueError as e:
        raise ConfigError(f"recipe.gaufuse.schedule: {e}") from e


def collect_metrics(cfg: Config, stages) -> dict:
    """metrics.json content: per round mAP per threshold, pseudo-label quality and stage timings.

    With a GauFuse regeneration schedule, ``regenerations`` lists each generation's epoch, pipeline summary
    and quality, and the training and pseudo-labeling timings include every segment and regeneration.
    """
    rounds = []
    regen = _regeneration_epochs(cfg)
    for r in range(cfg.run.rounds + 1):
        entry: dict = {"round": r, "eval": stages.result(f"round_{r}/eval"), "timings": {}}
        for stage in ("pseudo", "quality", "train", "eval"):
            extra = [f"round_{r}/{stage}_{'to' if stage == 'train' else 'at'}_{e}" for e in regen] if r > 0 else []
            names = [n for n in (f"round_{r}/{stage}", *extra) if stages.done(n)]
            if names:
                entry["timings"][stage] = round(sum(stages.seconds(n) for n in names), 3)
        if r > 0:
            entry["pseudo"] = stages.result(f"round_{r}/pseudo")
            entry["quality"] = stages.result(f"round_{r}/quality")
            entry["regenerations"] = [
                {"epoch": e, "pseudo": stages.result(f"round_{r}/pseudo_at_{e}"),
                 "quality": stages.result(f"round_{r}/quality_at_{e}")} for e in regen
            ]
        rounds.append(entry)
    return {"run": cfg.run.name, "rounds": rounds, "finished_at": time.time()}
