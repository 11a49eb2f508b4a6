"""Self-training rounds: teacher → pseudo labels → student → evaluation, resumable stage by stage.

Round 0 trains the teacher on the labeled videos and evaluates it (the supervised baseline; with
``run.rounds: 0`` that is the whole run, which is what ``jobs/train.py`` runs). Each round r ≥ 1 makes
pseudo labels for the unlabeled videos — the split's and the dataset's pool — with the current teacher,
measures their quality against the split's hidden ground truth, trains a student on labeled +
pseudo-labeled videos and evaluates it; the student is the next teacher. Every round is evaluated on the
split's validation part (labeled training videos held out of everything else) and, with ``run.eval_test``,
on the test subset. The run's model, copied to ``<run>/final/``, is the round best on val
(``raytal.selftrain.selection``); the run stops early when val mAP stops improving (``run.patience``) and
after round 0 when there is nothing to pseudo-label. Where the work runs is the back-end's business
(in-process, or Ray Train + Ray Data): each stage is one ``TrainSpec`` or ``LabelSpec`` handed to it; what
runs and in which order is decided here, once.

The run's split is an index over the dataset's shards (``index.json``), never a copy of its features.
Every stage is recorded in ``<run>/stages.json`` when it finishes; re-running the same command skips
finished stages (a training stage interrupted mid-way resumes from its last epoch checkpoint). Before its
first stage a run records the config and the data it is made from; a re-run with another config or on
changed data is refused, naming what differs (``raytal.selftrain.run_record``), and only one job works in
a run directory at a time (``raytal.selftrain.run_lock``). The run directory may be a local path or a
storage URI.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from raytal.config import Config, ConfigError
from raytal.core import storage
from raytal.core.errors import CheckpointError, DataError, RunStateError
from raytal.core.outputs import OutputDir
from raytal.core.segments import SegmentTable
from raytal.core.video import Video
from raytal.data.dataset import load_dataset_info
from raytal.data.index import RunIndex, Source, build_index, source_ids
from raytal.data.pseudo_io import (
    PSEUDO_FILES, PSEUDO_KIND, check_source_rows, join_pseudo_labels, read_pseudo_labels, read_pseudo_table,
    source_dir,
)
from raytal.data.shards import read_shard_tables, rows_to_videos
from raytal.data.splits import view_rows
from raytal.eval.quality import pseudo_label_quality
from raytal.pseudo.delta_labels import regeneration_epochs
from raytal.recipes.labeling import prepare_labeling
from raytal.recipes.registry import LabelingContext
from raytal.core.protocols import format_tious
from raytal.selftrain.backend import Backend
from raytal.selftrain.evaluate import count_threshold_on, eval_tious, evaluate_checkpoint
from raytal.selftrain.ledger import StageLog
from raytal.selftrain.models import DETECTOR, load_detector, load_weak_base
from raytal.selftrain.report import percent, write_report
from raytal.selftrain.run_lock import LOCK_NAME, RUN_KIND, RUN_RECORDS, RunLock
from raytal.selftrain.run_record import RECORD_NAME, open_record
from raytal.selftrain.selection import best_round, describe, patience_exhausted
from raytal.selftrain.spec import LabelSpec, TrainSpec, pseudo_sources
from raytal.selftrain.teacher import Predictor, teacher_kind
from raytal.selftrain.weak_round import train_weak_stage

log = logging.getLogger("raytal.selftrain")
T = TypeVar("T")


def run_dir_of(cfg: Config) -> str:
    """The run directory: ``run.dir``, else ``runs/<run.name>`` (``runs/run`` without a name)."""
    return storage.resolve(cfg.run.dir or storage.join("runs", cfg.run.name or "run"))


def labeled_videos(src: Source, part: str, setting: str, labels: str, count: int | None = None
                   ) -> tuple[list[Video], list[Video]]:
    """(the videos of ``src`` with their ground truth, the same videos with their pseudo labels of ``labels``;
    a video whose pseudo-label row is an error row, or holds no labels, is left out of the second), for the
    first ``count`` videos of the source (all when None)."""
    gts, pseudos = [], []
    records = read_pseudo_table(labels)
    for table in read_shard_tables(src.file, src.ids):
        rows = view_rows(table.slice(0, count - len(gts) if count is not None else None), part, setting)
        gts += rows_to_videos(rows, src.file)
        pseudos += rows_to_videos(join_pseudo_labels(rows, records, source=labels), src.file)
        if count is not None and len(gts) >= count:
            break
    return gts, pseudos


def round_quality(index: RunIndex, label: LabelSpec) -> dict:
    """Pseudo-label quality against the hidden ground truth of the split's unlabeled videos; the pool's
    videos have none."""
    gts, pseudos = [], []
    for k, (part, src) in enumerate(label.sources):
        if part != "unlabeled":
            continue
        directory = source_dir(label.out_dir, k)
        check_source_rows(read_pseudo_labels(directory, index.num_classes), set(source_ids(src)), directory)
        truth, pseudo = labeled_videos(src, part, index.setting, directory)
        gts.append(SegmentTable.from_videos(truth))
        pseudos.append(SegmentTable.from_videos(pseudo))
    q = pseudo_label_quality(SegmentTable.concat(gts), SegmentTable.concat(pseudos), index.num_classes)
    return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in q.items()}


def check_pseudo_labels(label: LabelSpec) -> None:
    """Every pseudo source's rows are for its videos and hold only values a student can train on
    (``read_pseudo_labels``, ``check_source_rows``), checked before a student trains on them: the files may
    have been written by an earlier job (a resumed run, jobs/pseudolabel.py) or edited since."""
    for k, (_, src) in enumerate(label.sources):
        directory = source_dir(label.out_dir, k)
        check_source_rows(read_pseudo_labels(directory, label.num_classes), set(source_ids(src)), directory)


class Rounds:
    """One run's stages over its index, with the back-end that executes them (see the module docstring)."""

    def __init__(self, cfg: Config, backend: Backend, on_round: Callable[[int, dict], None] | None = None,
                 overwrite: bool = False):
        """Claims the run directory (``run_output``; ``overwrite``: beside files raytal did not write), takes
        its lock and checks the run's record (``raytal.selftrain.run_record``) before anything is written;
        ``close`` releases them."""
        self.cfg, self.backend, self.on_round = cfg, backend, on_round
        self.dir = run_dir_of(cfg)
        self.info = load_dataset_info(cfg.data.root)
        self._contexts: dict[str, LabelingContext] = {}
        self.output = run_output(cfg, overwrite).claim()
        try:
            self.lock = RunLock(self.dir)
            self.lock.acquire()
        except BaseException:
            self.output.release()
            raise
        try:
            self.stages = StageLog(self.path("stages.json"), guard=self.lock.check)  # a damaged ledger: before writes
            open_record(cfg, self.dir, self.info)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.lock.release()
        self.output.release()

    def path(self, *parts: str) -> str:
        return storage.join(self.dir, *parts)

    # ------------------------------------------------------------------------ the split

    def load_index(self) -> RunIndex:
        """The run's split (index.json). An index that is missing or unreadable after the split finished is
        rebuilt: the split is a function of the config and the data, both checked unchanged by the record,
        so it comes out the same (its counts are compared with the ledger's)."""
        cfg = self.cfg
        path = self.path("index.json")

        def build() -> RunIndex:
            return build_index(cfg.data, with_test=cfg.run.eval_test)  # without eval_test, test is never read

        def split() -> dict:
            index = build()
            index.save(path)
            return {"index": path, "videos": {p: index.count(p) for p in index.parts}}

        counts = self.stages.run("split", split)["videos"]
        log.info("split: %s", ", ".join(f"{n} {p}" for p, n in counts.items()))
        try:
            return RunIndex.load(path)
        except DataError as e:
            index = build()
            rebuilt = {p: index.count(p) for p in index.parts}
            if rebuilt != counts:
                raise RunStateError(f"{e}; rebuilding it gave {rebuilt} videos per part, the run's ledger records "
                                    f"{counts}: give this run another run.dir") from None
            log.warning("%s; rebuilt it from the config and the unchanged dataset (same counts: %s)", e, counts)
            index.save(path)
            return index

    # ------------------------------------------------------------------------ stages

    def train_spec(self, index: RunIndex, name: str, **kw) -> TrainSpec:
        """A stage on the labeled part (and ``pseudo`` sources, when given)."""
        labeled = tuple(("labeled", s) for s in index.parts.get("labeled", []))
        return TrainSpec(name=name, stage_dir=self.path(*name.split("/")), num_classes=index.num_classes,
                         input_dim=index.feature_dim, setting=index.setting, labeled=labeled,
                         num_labeled=index.count("labeled"), **kw)

    def pretrain(self, index: RunIndex) -> str | None:
        """APL's ACP pre-training on every training video, labels unread: the round-0 teacher starts from it
        (a shared teacher, ``run.teacher``, was pre-trained in its own run)."""
        apl = self.cfg.recipe.apl
        if not (apl.enabled and apl.acp and apl.acp_pretrain_epochs > 0 and self.cfg.data.setting == "semi"
                and not self.cfg.run.teacher):
            return None
        parts = ("labeled", "unlabeled", "pool")
        sources = tuple((p, s) for p in parts for s in index.parts.get(p, []))
        spec = dataclasses.replace(
            self.train_spec(index, "round_0/pretrain"), labeled=sources,
            num_labeled=sum(index.count(p) for p in parts), objective="acp_pretraining",
        )
        tr = self.cfg.train
        pcfg = dataclasses.replace(self.cfg, train=dataclasses.replace(
            tr, epochs=apl.acp_pretrain_epochs, warmup_epochs=min(tr.warmup_epochs, apl.acp_pretrain_epochs)))
        log.info("round_0/pretrain: ACP on %d videos without their labels", spec.num_labeled)
        return self.stages.run("round_0/pretrain", self.backend.train, pcfg, spec)

    def teacher(self, index: RunIndex, init: str | None) -> str:
        cfg = self.cfg
        if cfg.run.teacher:  # a teacher shared between runs (Tune trials whose keys do not change round 0)
            return self.stages.run("round_0/train", self.shared_teacher, index)
        if cfg.data.setting == "weak":  # video-level labels only: the base WTAL model is the first teacher
            return self.stages.run("round_0/train", train_weak_stage, cfg, index, self.path("round_0", "train"))
        log.info("round_0/train: teacher on %d labeled videos", index.count("labeled"))
        return self.stages.run("round_0/train", self.backend.train, cfg, self.train_spec(index, "round_0/train", init=init))

    def shared_teacher(self, index: RunIndex) -> str:
        """``run.teacher``, loaded once before the run records it as its round 0: a file that is not the
        teacher this run needs (kind, class count, feature width, model size) would otherwise fail only
        when first used, with the stage already recorded."""
        path = storage.resolve(self.cfg.run.teacher)
        try:
            if self.cfg.data.setting == "weak":
                load_weak_base(path, index.num_classes, index.feature_dim)
            else:
                load_detector(self.cfg, path, index.num_classes, index.feature_dim)
        except CheckpointError as e:
            raise CheckpointError(f"run.teacher: {e}") from None
        return path

    def evaluate(self, index: RunIndex, r: int, checkpoint: str) -> dict:
        """Round r's model on the validation part (``val``: model selection) and, with ``run.eval_test``, on the
        test subset (``eval``, its detections in ``round_<r>/predictions.json``)."""
        entry = {}
        if index.count("val"):
            entry["val"] = self.stages.run(f"round_{r}/val", lambda: evaluate_checkpoint(
                self.cfg, self.backend, checkpoint, index.parts["val"], self.info, part="val"))
        if self.cfg.run.eval_test:
            entry["eval"] = self.stages.run(f"round_{r}/eval", lambda: evaluate_checkpoint(
                self.cfg, self.backend, checkpoint, index.parts.get("test", []), self.info,
                self.path(f"round_{r}", "predictions.json"), "test"))
        log.info("round %d: average mAP (tIoU %s) %s", r, format_tious(eval_tious(self.cfg, self.info)),
                 ", ".join(f"{'test' if k == 'eval' else k} {100 * v['average_mAP']:.2f} %" for k, v in entry.items()))
        if self.on_round is not None:
            self.on_round(r, entry)
        return entry

    def label(self, label: LabelSpec) -> dict:
        """The back-end's pass into the pseudo-label folder, replacing its earlier output (``label_into``)."""
        with pseudo_output(label.out_dir) as out:
            summary = label_into(out, label, lambda staged: self.backend.pseudolabel(self.cfg, staged))
        return {**summary, "out_dir": label.out_dir}

    def context(self, index: RunIndex, teacher: str, name: str) -> LabelingContext:
        """What the recipes prepare for labeling (APL's ICD, NPL's N_pos), once per kind of teacher; with
        ``recipe.min_score_rule: val_count`` this teacher's plain threshold, counted on the val videos in a stage of
        its own (``round_<r>/threshold``: a resumed run labels with the same one)."""
        kind = teacher_kind(teacher)
        if kind not in self._contexts:
            self._contexts[kind] = prepare_labeling(self.cfg, lambda: index.videos("labeled"), kind)
        if self.cfg.recipe.min_score_rule == "fixed":
            return self._contexts[kind]
        threshold = self.stages.run(name.replace("pseudo", "threshold"), lambda: count_threshold_on(
            self.cfg, self.backend, teacher, index.parts["val"], self.info))
        log.info("%s: pseudo labels from score %.4f (as many detections on the val videos as their instances)",
                 name, threshold)
        return dataclasses.replace(self._contexts[kind], min_score=threshold)

    def pseudolabel(self, index: RunIndex, name: str, teacher: str, r: int) -> tuple[LabelSpec, dict]:
        label = LabelSpec(teacher, r, self.path(*name.split("/")), index.num_classes, index.setting,
                          tuple(index.pseudo_sources()), self.context(index, teacher, name))
        summary = self.stages.run(name, self.label, label)
        quality = self.stages.run(name.replace("pseudo", "quality"), round_quality, index, label)
        log.info("%s: %d videos, %d error rows, %d with labels; class acc %s %%, positive acc %s %%", name,
                 summary["videos_in"], summary["num_errors"], summary["usable"], percent(quality["class_accuracy"]),
                 percent(quality["positive_accuracy"]))
        return label, summary

    def student(self, index: RunIndex, r: int, label: LabelSpec, summary: dict, init: str | None) -> str:
        """The round's student; with a GauFuse regeneration schedule, trained in segments, the student
        relabelling the videos at each scheduled epoch and the next segment training on Δ labels."""
        regen = regeneration_schedule(self.cfg)
        previous: str | None = None
        start = 0
        for i, epoch in enumerate(regen):
            name = f"round_{r}/train_to_{epoch}"
            spec = self.train_spec(index, f"round_{r}/train", pseudo=pseudo_sources(label, previous),
                                   num_pseudo=summary["usable"], init=init, start_epoch=start, stop_epoch=epoch,
                                   delta_targets=previous is not None)
            if not self.stages.done(name):
                check_pseudo_labels(label)
            checkpoint = self.stages.run(name, self.train_until, spec, epoch)
            gen, gen_summary = self.pseudolabel(index, f"round_{r}/pseudo_at_{epoch}", checkpoint, r)
            # Δ labels compare two generations of the student itself: the teacher's labels (generation 0)
            # and the student's first generation are trained as they are.
            previous = label.out_dir if i > 0 else None
            label, summary, start = gen, gen_summary, epoch
        spec = self.train_spec(index, f"round_{r}/train", pseudo=pseudo_sources(label, previous),
                               num_pseudo=summary["usable"], init=init, start_epoch=start,
                               delta_targets=previous is not None)
        log.info("round_%d/train: student on %d labeled + %d pseudo-labeled videos", r, spec.num_labeled,
                 spec.num_pseudo)
        if not self.stages.done(f"round_{r}/train"):
            check_pseudo_labels(label)
        return self.stages.run(f"round_{r}/train", self.backend.train, self.cfg, spec)

    def train_until(self, spec: TrainSpec, epoch: int) -> str:
        """One segment of a student's training; its checkpoint is kept as ``epoch_<e>.pt`` (the stage's
        final.pt is rewritten by the next segment)."""
        final = self.backend.train(self.cfg, spec)
        kept = storage.join(spec.stage_dir, f"epoch_{epoch}.pt")
        storage.write_bytes(kept, storage.read_bytes(final))
        return kept

    # ------------------------------------------------------------------------ the run

    def run(self) -> dict:
        cfg = self.cfg
        finished = f"finished_{cfg.run.rounds}_rounds"  # raising run.rounds later continues the run
        if self.stages.done(finished):
            log.info("run %s is already finished; metrics in %s", self.dir, self.path("metrics.json"))
            return self.stages.result(finished)
        index = self.load_index()
        teacher = self.teacher(index, self.pretrain(index))
        models = [teacher]
        val = [self.evaluate(index, 0, teacher).get("val", {}).get("average_mAP")]
        stopped = None
        if cfg.run.rounds > 0 and not index.pseudo_sources():
            stopped = "after round 0: nothing to pseudo-label (every training video is labeled and there is no pool)"
        while stopped is None and len(models) <= cfg.run.rounds:
            r = len(models)
            label, summary = self.pseudolabel(index, f"round_{r}/pseudo", teacher, r)
            # A base-model teacher has another architecture: its student starts from scratch.
            from_teacher = cfg.train.student_init == "teacher" and teacher_kind(teacher) == DETECTOR
            teacher = self.student(index, r, label, summary, teacher if from_teacher else None)
            models.append(teacher)
            val.append(self.evaluate(index, r, teacher).get("val", {}).get("average_mAP"))
            if r < cfg.run.rounds and patience_exhausted(val, cfg.run.patience):
                stopped = (f"after round {r} of {cfg.run.rounds}: val average mAP did not improve for "
                           f"{cfg.run.patience} round(s) (run.patience)")
        chosen = best_round(val)
        selection = {"round": chosen, "why": describe(val, chosen), "stopped": stopped}
        log.info("the run's model is %s%s", selection["why"], f"; stopped {stopped}" if stopped else "")
        self.keep_final(models[chosen], chosen)
        metrics = collect_metrics(cfg, self.stages, len(models) - 1, selection, self.info.name)
        write_report(self.dir, metrics, self.info.classes, self.timelines(index, len(models) - 1))
        self.stages.record(finished, metrics, 0.0)
        return metrics

    def keep_final(self, checkpoint: str, r: int) -> None:
        """``<run>/final/``: the chosen round's checkpoint (``model.pt``) and, when the run read the test subset,
        its detections there (``predictions.json``)."""
        storage.write_bytes(self.path("final", "model.pt"), storage.read_bytes(checkpoint))
        predictions = self.path(f"round_{r}", "predictions.json")
        if self.cfg.run.eval_test and storage.exists(predictions):
            storage.write_bytes(self.path("final", "predictions.json"), storage.read_bytes(predictions))

    def timelines(self, index: RunIndex, r: int, count: int = 3) -> list[dict] | None:
        """Ground truth, the detections of round r's teacher and round r's pseudo labels of a few videos (None for
        a run that made no pseudo labels)."""
        if r == 0:
            return None
        sources = index.pseudo_sources()
        if not sources or sources[0][0] != "unlabeled":
            return []
        part, src = sources[0]
        videos, pseudo_videos = labeled_videos(src, part, index.setting, source_dir(self.path(f"round_{r}", "pseudo"), 0),
                                               count)
        preds = Predictor(self.cfg, self.stages.result(f"round_{r - 1}/train"))(videos)
        pseudo = {v.video_id: v for v in pseudo_videos}
        out = []
        for v, p in zip(videos, preds):
            top = np.argsort(-p["scores"])[:20]
            pv = pseudo.get(v.video_id)  # absent when the video's pseudo-label row is an error row
            seg, lab = (pv.segments, pv.labels) if pv is not None else (np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
            out.append(dict(
                video_id=v.video_id, round=r, duration=v.duration, gt_segments=v.segments, gt_labels=v.labels,
                pred_segments=p["segments"][top], pred_labels=p["labels"][top], pred_scores=p["scores"][top],
                pseudo_segments=seg, pseudo_labels=lab,
            ))
        return out


def run_selftrain(cfg: Config, backend: Backend, on_round: Callable[[int, dict], None] | None = None,
                  overwrite: bool = False) -> dict:
    """Run (or resume) every round of ``cfg``; returns the run's metrics (also in ``metrics.json``).

    ``on_round(r, eval_result)`` is called after each round's evaluation (Tune reports it per round);
    ``overwrite`` lets a new run write beside files raytal did not write in its directory (``run_output``).
    """
    run = Rounds(cfg, backend, on_round, overwrite)
    try:
        return run.run()
    finally:
        run.close()


# Where a run writes in its directory: with --overwrite, a file raytal did not write is refused there.
RUN_FILES = ("config.yaml", RECORD_NAME, LOCK_NAME, "index.json", "stages.json", "metrics.json", "report.md",
             "plots/*", "round_*")


def run_output(cfg: Config, overwrite: bool = False) -> OutputDir:
    """The run directory as a job's output (``raytal.core.outputs``): not the dataset's folder or inside it, not
    holding the shared teacher, and a folder raytal made (or a new one) unless ``overwrite``."""
    return OutputDir(run_dir_of(cfg), kind=RUN_KIND, flag="run.dir", what="run directory", overwrite=overwrite,
                     inputs=[("data.root", cfg.data.root), ("run.teacher", cfg.run.teacher)], owns=RUN_FILES,
                     legacy=(*RUN_RECORDS, LOCK_NAME), lists_files=False)


def label_into(output: OutputDir, label: LabelSpec, run: Callable[[LabelSpec], T]) -> T:
    """A pseudo-label pass into ``output`` (its folder is ``label.out_dir``), replacing its earlier output
    (``raytal.core.outputs``): ``run(spec)`` writes into a staging folder, whose files then replace the previous
    pass's; a pass that fails or is interrupted leaves the previous labels as they were. Returns ``run``'s
    result (whose ``out_dir`` names the staging folder)."""
    with output.staged() as staged:
        result = run(dataclasses.replace(label, out_dir=staged))
        output.commit(staged)
    return result


def pseudo_output(out_dir: str, inputs: list[tuple[str, str]] = (), overwrite: bool = False) -> OutputDir:
    """A pseudo-label folder as a job's output: it holds ``shard=<k>/`` folders of Parquet files."""
    return OutputDir(out_dir, kind=PSEUDO_KIND, inputs=inputs, overwrite=overwrite, owns=PSEUDO_FILES)


def regeneration_schedule(cfg: Config) -> list[int]:
    """The student epochs at which GauFuse regenerates its pseudo labels (none for other recipes)."""
    if not cfg.recipe.gaufuse.enabled:
        return []
    try:
        return regeneration_epochs(cfg.recipe.gaufuse.schedule, cfg.train.epochs)
    except ValueError as e:
        raise ConfigError(f"recipe.gaufuse.schedule: {e}") from e


def collect_metrics(cfg: Config, stages: StageLog, last: int, selection: dict, dataset: str) -> dict:
    """metrics.json content: per round (0..``last``) mAP per threshold on val (``val``) and test (``eval``),
    pseudo-label quality and stage timings; which round is the run's model and why (``selection``).

    With a GauFuse regeneration schedule, ``regenerations`` lists each generation's epoch, pipeline summary
    and quality, and the training and pseudo-labeling timings include every segment and regeneration.
    """
    rounds = []
    regen = regeneration_schedule(cfg)
    for r in range(last + 1):
        entry: dict = {"round": r, "timings": {}}
        entry.update({k: stages.result(f"round_{r}/{k}") for k in ("val", "eval") if stages.done(f"round_{r}/{k}")})
        for stage in ("pretrain", "pseudo", "quality", "train", "val", "eval"):
            extra = [f"round_{r}/{stage}_{'to' if stage == 'train' else 'at'}_{e}" for e in regen] if r > 0 else []
            names = [n for n in (f"round_{r}/{stage}", *extra) if stages.done(n)]
            if names:
                entry["timings"][stage] = round(sum(stages.seconds(n) for n in names), 3)
        if r > 0:
            if stages.done(f"round_{r}/threshold"):  # recipe.min_score_rule: val_count
                entry["min_score"] = stages.result(f"round_{r}/threshold")
            entry["pseudo"] = stages.result(f"round_{r}/pseudo")
            entry["quality"] = stages.result(f"round_{r}/quality")
            entry["regenerations"] = [
                {"epoch": e, "pseudo": stages.result(f"round_{r}/pseudo_at_{e}"),
                 "quality": stages.result(f"round_{r}/quality_at_{e}")} for e in regen
            ]
        rounds.append(entry)
    return {"run": cfg.run.name, "dataset": dataset, "labeled_ratio": cfg.data.labeled_ratio, "rounds": rounds,
            "selection": selection, "finished_at": time.time()}
