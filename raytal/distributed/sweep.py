"""Ray Tune sweeps (docs/design.md §6 "Ray Tune"): each trial is one self-training run, scheduled with ASHA on
val mAP.

A sweep over ``cfg.tune.space`` (dotted config keys -> ``{grid|uniform|loguniform|choice: ...}``) runs
``run_selftrain`` once per trial with the trial's values applied, evaluated on the run's validation part
only (``run.eval_test = false``; a seeded held-out part of the *training* videos, ``data.val_ratio > 0``, the
same one every run selects its model on), every round (``run.patience = 0``) and its own run directory
``<sweep>/trials/<trial_id>``. Training stages go through Ray Train and pseudo-labeling through Ray Data,
exactly as ``jobs/selftrain.py`` does: the Tune trial is only the driver of that run (Ray Train V2 + Tune:
the trainable launches the ``TorchTrainer`` itself), so it asks for a small CPU share (``TRIAL_CPUS``) and
the training workers / inference actors bring their own fractional resources. After every round's
evaluation each trial reports the val metrics of its model so far (the round best on val up to then, which is
what the run would hand out: ``raytal.selftrain.selection``); ASHA (``training_iteration`` = rounds evaluated,
round 0 included) stops weak trials early.

Teacher reuse: when every swept key is one that cannot change the round-0 *checkpoint* (see
``TEACHER_FREE_PREFIXES``), the teacher is trained once into ``<sweep>/teacher`` before the sweep and
every trial starts from it (``run.teacher``). Each trial still evaluates round 0 itself, since inference
keys (``infer.*``) change that evaluation but not the checkpoint.

Resuming: the sweep lives in ``<sweep>/tune``; re-running the same command restores it with
``Tuner.restore`` (finished trials are kept, unfinished ones restart and their run resumes from its stage
ledger). The test subset is never read by the sweep (``build_index(..., with_test=False)`` in val runs).
At the end the best trial (highest val mAP among trials that ran every round) is written as a
ready-to-run YAML and its model (``final/model.pt``) is evaluated once on test — the very model that was
selected, at no retraining cost; the YAML reproduces it from scratch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from raytal.config import (
    Config, ConfigError, apply_overrides, from_dict, load_config, save_config, to_dict, tune_space,
)
from raytal.core import storage
from raytal.core.outputs import OutputDir
from raytal.data.dataset import load_dataset_info
from raytal.data.index import build_index
from raytal.distributed.backend import RayBackend
from raytal.distributed.session import ensure_ray, quiet_console
from raytal.selftrain.evaluate import evaluate_checkpoint
from raytal.selftrain.ledger import StageLog
from raytal.selftrain.rounds import run_dir_of, run_selftrain
from raytal.selftrain.selection import best_round

log = logging.getLogger("raytal.tune")

TRIAL_CPUS = 0.25  # the trial drives its run and evaluates; workers and actors reserve their own CPUs
EXPERIMENT = "tune"  # Tune's experiment directory under the sweep directory
# Test hook: "<N>:<marker file>" makes the driver stop the sweep (as Ctrl+C would) once N trials have
# finished, the first time only (the marker file records that it happened).
INTERRUPT_ENV = "RAYTAL_TUNE_INTERRUPT_AFTER"

# Keys that cannot change the round-0 teacher checkpoint: the teacher is trained on labeled videos with
# the supervised loss only. NPL/NTC/GauFuse/NoCo settings act on pseudo labels and the unlabeled loss;
# APL's ICD (tau_icd, sigma_icd, icd_*), tau_neg and beta act on pseudo labels; infer.* changes
# evaluation and pseudo-label inference, never training; the student-only train keys likewise. Not
# here (they do change the teacher): data.*, model.*, other train.*, APL's eps/lambda_*/acp* (ALQA and
# ACP are part of the teacher's loss), ray.*, run.seed.
TEACHER_FREE_PREFIXES = (
    "recipe.npl.", "recipe.ntc.", "recipe.gaufuse.", "recipe.min_score",
    # NoCo's labeling and online-correction keys; not recipe.noco.enabled / ema_momentum, which set the EMA
    # the teacher is evaluated with.
    "recipe.noco.cala", "recipe.noco.aic", "recipe.noco.mic", "recipe.noco.hpm", "recipe.noco.theta_",
    "recipe.noco.gamma",
    "recipe.apl.tau_icd", "recipe.apl.sigma_icd", "recipe.apl.icd", "recipe.apl.tau_neg", "recipe.apl.beta",
    "infer.", "train.student_init", "train.unlabeled_per_batch", "run.rounds",
)
REPORTED_METRICS = ("val_average_mAP", "val_mAP_0.5")  # what a trial reports after every round


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every trial finished; re-running the same command resumes it."""


def teacher_free(key: str) -> bool:
    """True when ``key`` cannot change the round-0 checkpoint (so trials may share one teacher)."""
    return any(key == p or key.startswith(p) for p in TEACHER_FREE_PREFIXES)


def validate_space(cfg: Config) -> dict[str, tuple[str, list]]:
    """``cfg.tune.space`` as {key: (kind, values)}, every key and value checked against the schema
    (``raytal.config.tune_space``), and the sweep's own settings; before Ray starts."""
    out = tune_space(cfg)
    if cfg.tune.num_samples < 1 or cfg.tune.max_concurrent < 1 or cfg.tune.grace_period < 1:
        raise ConfigError("tune.num_samples, tune.max_concurrent and tune.grace_period must be >= 1")
    if cfg.tune.metric not in REPORTED_METRICS:
        raise ConfigError(f"tune.metric: expected one of {', '.join(REPORTED_METRICS)}, got {cfg.tune.metric!r}")
    if not cfg.data.val_ratio > 0:
        raise ConfigError("tune needs a validation split: set data.val_ratio > 0 (test is never used to select)")
    return out


def _param_space(space: dict[str, tuple[str, list]]) -> dict[str, Any]:
    make = {
        "grid": lambda v: tune.grid_search(v),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "choice": lambda v: tune.choice(v),
    }
    return {"overrides": {key: make[kind](values) for key, (kind, values) in space.items()}}


def _absolute(cfg: Config, sweep_dir: Path) -> Config:
    """Paths made absolute: Tune trials do not run in the driver's working directory."""
    cfg = from_dict(to_dict(cfg))
    cfg.data.root = storage.resolve(cfg.data.root)
    cfg.run.dir = str(sweep_dir)
    if cfg.run.teacher:
        cfg.run.teacher = storage.resolve(cfg.run.teacher)
    return cfg


def trial_config(base: Config, overrides: dict[str, Any], run_dir: Path, teacher: str) -> Config:
    """The self-training config of one trial: overrides applied, evaluated on val, in its own run dir."""
    cfg = apply_overrides(base, overrides, source="tune trial")
    cfg.run.dir = str(run_dir)
    cfg.run.name = f"{base.run.name or 'sweep'}_{run_dir.name}"
    cfg.run.eval_test, cfg.run.patience = False, 0  # never read test; ASHA is the sweep's early stopping
    if teacher:
        cfg.run.teacher = teacher
    return cfg


def _round_metrics(r: int, vals: list[dict]) -> dict[str, float]:
    """What a trial reports after round r, given the val results of rounds 0..r: its model's (the best so far)."""
    res = vals[best_round([v["average_mAP"] for v in vals])]
    mAP50 = float(res["mAP"].get("0.5", math.nan))
    return {"round": r, "val_average_mAP": float(res["average_mAP"]), "val_mAP_0.5": mAP50}


def _log_event(sweep_dir: Path, **event: Any) -> None:
    """``<sweep>/trial_log.jsonl``: one line per trial start/finish, the sweep's own history."""
    storage.append_text(sweep_dir / "trial_log.jsonl", json.dumps({**event, "time": time.time()}) + "\n")


def _trial(config: dict, base: dict, sweep_dir: str, teacher: str) -> None:
    """The Tune trainable: one self-training run through Ray Train / Ray Data, reporting val mAP per round."""
    trial_id = tune.get_context().get_trial_id()
    sweep = Path(sweep_dir)
    cfg = trial_config(from_dict(base), config["overrides"], sweep / "trials" / trial_id, teacher)
    _log_event(sweep, trial=trial_id, event="start")
    reported: set[int] = set()
    vals: list[dict] = []

    def on_round(r: int, entry: dict) -> None:
        vals.append(entry["val"])
        # Tune ends the trainable at its last report (ASHA's max_t), so the last round is reported only
        # after run_selftrain has written the run's metrics, report and "finished" ledger entry.
        if r < cfg.run.rounds:
            reported.add(r)
            tune.report(_round_metrics(r, vals))

    metrics = run_selftrain(cfg, RayBackend(cfg), on_round=on_round)
    _log_event(sweep, trial=trial_id, event="finish")
    vals = [entry["val"] for entry in metrics["rounds"]]
    for entry in metrics["rounds"]:  # also every round of a run that had finished before a restart
        if entry["round"] not in reported:
            tune.report(_round_metrics(entry["round"], vals[: entry["round"] + 1]))


def _interrupt_callback():
    class InterruptAfter(Callback):
        """Sends this process SIGUSR1 (Tune's graceful stop, like Ctrl+C) after N finished trials, once."""

        def __init__(self, spec: str):
            at, self.marker = spec.split(":", 1)
            self.at, self.done = int(at), 0

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            if self.done == self.at and not Path(self.marker).exists():
                Path(self.marker).write_text("interrupted once")
                os.kill(os.getpid(), signal.SIGUSR1)

    spec = os.environ.get(INTERRUPT_ENV)
    return [InterruptAfter(spec)] if spec else []


@dataclass
class SweepResult:
    sweep_dir: Path
    rows: list[dict]  # one per trial: trial_id, swept values, val metric, rounds, state, run_dir
    best: dict | None
    best_config: Path | None
    test: dict | None  # best model's test evaluation (DetectionResult.to_json())
    timings: dict


def train_shared_teacher(cfg: Config, sweep_dir: Path) -> tuple[str, float]:
    """Round 0 once, into ``<sweep>/teacher`` (resumable via its stage ledger); (checkpoint, seconds)."""
    tcfg = from_dict(to_dict(cfg))
    tcfg.run.rounds, tcfg.run.dir, tcfg.run.eval_test, tcfg.run.teacher = 0, str(sweep_dir / "teacher"), False, ""
    tcfg.run.name = f"{cfg.run.name or 'sweep'}_teacher"
    run_selftrain(tcfg, RayBackend(tcfg))
    stages = StageLog(str(sweep_dir / "teacher" / "stages.json"))
    return stages.result("round_0/train"), stages.seconds("round_0/train")


# Where a sweep writes in its directory: with --overwrite, a file raytal did not write is refused there.
SWEEP_FILES = ("sweep_config.yaml", "trial_log.jsonl", "results.csv", "results.md", "val_map.png", "best_*",
               "summary.json", f"{EXPERIMENT}/*", "trials/*", "teacher/*")


def sweep_output(cfg: Config, overwrite: bool = False) -> OutputDir:
    """The sweep directory as a job's output (``raytal.core.outputs``): not the dataset's folder, and a folder
    raytal made (or a new one) unless ``overwrite``."""
    return OutputDir(run_dir_of(cfg), kind="sweep", flag="run.dir", what="sweep directory", overwrite=overwrite,
                     inputs=[("data.root", cfg.data.root), ("run.teacher", cfg.run.teacher)], owns=SWEEP_FILES,
                     legacy=("sweep_config.yaml",), lists_files=False)


def run_sweep(cfg: Config, *, evaluate_test: bool = True, overwrite: bool = False,
              verbose: bool = False) -> SweepResult:
    """Run (or resume) the sweep of ``cfg``; write the table, plot, best config and its test result.
    ``overwrite``: a new sweep may write beside files raytal did not write in its directory. ``verbose``: Ray's
    own output on the console too (``raytal.distributed.session``)."""
    space = validate_space(cfg)
    with sweep_output(cfg, overwrite) as output:
        return _sweep(cfg, space, Path(output.path), evaluate_test, verbose)


def _sweep(cfg: Config, space: dict[str, tuple[str, list]], sweep_dir: Path, evaluate_test: bool,
           verbose: bool) -> SweepResult:
    cfg = _absolute(cfg, sweep_dir)
    saved = sweep_dir / "sweep_config.yaml"
    if saved.exists() and load_config(saved).tune.space != cfg.tune.space:
        # Tuner.restore would silently carry on with the old space.
        raise ConfigError(f"{sweep_dir} holds a sweep over a different tune.space; choose another run.dir")
    save_config(cfg, saved)
    if not verbose and not ray.is_initialized():
        quiet_console()
    ensure_ray(cfg.ray.address, verbose=verbose)
    timings: dict[str, Any] = {}
    teacher = ""
    blocking = [k for k in space if not teacher_free(k)]
    if cfg.run.teacher:
        teacher = cfg.run.teacher
    elif cfg.tune.reuse_teacher and not blocking:
        teacher, timings["teacher_seconds"] = train_shared_teacher(cfg, sweep_dir)
    elif cfg.tune.reuse_teacher:
        log.info("teacher not shared: %s can change round 0, so every trial trains its own", ", ".join(blocking))
    timings["shared_teacher"] = bool(teacher)

    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=to_dict(cfg), sweep_dir=str(sweep_dir), teacher=teacher),
        {"CPU": TRIAL_CPUS},
    )
    path = sweep_dir / EXPERIMENT
    start = time.perf_counter()
    if tune.Tuner.can_restore(str(path)):
        log.info("resuming the sweep in %s", path)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=cfg.run.rounds + 1,
            grace_period=min(cfg.tune.grace_period, cfg.run.rounds + 1),
            reduction_factor=2,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(space),
            tune_config=tune.TuneConfig(
                metric=cfg.tune.metric, mode="max", scheduler=scheduler, num_samples=cfg.tune.num_samples,
                max_concurrent_trials=cfg.tune.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT, storage_path=str(sweep_dir), callbacks=_interrupt_callback(), verbose=0,
            ),
        )
    grid = tuner.fit()
    timings["sweep_seconds"] = round(time.perf_counter() - start, 3)
    # Trials are created lazily (max_concurrent), so an interrupted sweep may hold fewer than expected.
    expected = cfg.tune.num_samples * math.prod(len(v) for kind, v in space.values() if kind == "grid")
    if len(grid) < expected or grid.num_terminated + grid.num_errors < len(grid):
        raise SweepInterrupted(f"sweep {sweep_dir} stopped with unfinished trials; re-run the same command to resume")

    rows = _rows(grid, list(space), cfg, sweep_dir)
    write_table(rows, list(space), cfg.tune.metric, sweep_dir)
    plot_sweep(rows, space, cfg.tune.metric, sweep_dir / "val_map.png")
    best = _best(rows, cfg.tune.metric, cfg.run.rounds)
    best_path = test = None
    if best is not None:
        best_cfg = apply_overrides(cfg, best["overrides"], source="best trial")
        best_cfg.run.eval_test, best_cfg.run.teacher = True, ""
        best_cfg.run.dir = str(sweep_dir / "best_run")
        best_cfg.run.name = f"{cfg.run.name or 'sweep'}_best"
        best_cfg.tune.space = {}
        best_path = sweep_dir / "best_config.yaml"
        save_config(best_cfg, best_path)
        if evaluate_test:
            test = evaluate_best_on_test(best_cfg, best, sweep_dir)
    summary = {"best": best, "test": test, "timings": timings, "num_trials": len(rows)}
    storage.write_text(sweep_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return SweepResult(sweep_dir, rows, best, best_path, test, timings)


def _rows(grid, keys: list[str], cfg: Config, sweep_dir: Path) -> list[dict]:
    rows = []
    for result in grid:
        m = result.metrics or {}
        trial_id = m.get("trial_id") or Path(result.path).name
        rounds_done = int(m.get("training_iteration", 0))
        if result.error is not None:
            state = "ERROR"
        elif rounds_done >= cfg.run.rounds + 1:
            state = "TERMINATED"
        else:
            state = "STOPPED (ASHA)"
        overrides = result.config["overrides"]
        rows.append({
            "trial_id": trial_id, **{k: overrides[k] for k in keys},
            cfg.tune.metric: m.get(cfg.tune.metric, math.nan), "rounds_evaluated": rounds_done, "state": state,
            "run_dir": str(sweep_dir / "trials" / trial_id), "overrides": overrides,
        })
    def order(r: dict) -> list:  # numbers by value, anything else by text
        return [(0, r[k], "") if isinstance(r[k], (int, float)) else (1, 0, str(r[k])) for k in keys] + [r["trial_id"]]

    return sorted(rows, key=order)


def _best(rows: list[dict], metric: str, rounds: int) -> dict | None:
    """Highest final val metric among trials that evaluated every round (ASHA-stopped ones did not)."""
    full = [r for r in rows if r["state"] == "TERMINATED" and not math.isnan(r[metric])]
    return max(full, key=lambda r: r[metric]) if full else None


def evaluate_best_on_test(best_cfg: Config, best: dict, sweep_dir: Path) -> dict:
    """The best trial's model (its ``final/model.pt``) evaluated once on test (cached in ``<sweep>/best_test.json``)."""
    out = sweep_dir / "best_test.json"
    if out.exists():
        return json.loads(out.read_text())
    checkpoint = str(Path(best["run_dir"]) / "final" / "model.pt")
    index = build_index(best_cfg.data)
    result = evaluate_checkpoint(best_cfg, RayBackend(best_cfg), checkpoint, index.parts["test"],
                                 load_dataset_info(best_cfg.data.root),
                                 predictions=str(sweep_dir / "best_test_predictions.json"))
    result["checkpoint"] = checkpoint
    storage.write_text(out, json.dumps(result, indent=1))
    return result


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_table(rows: list[dict], keys: list[str], metric: str, sweep_dir: Path) -> str:
    """``<sweep>/results.csv`` and ``results.md`` (metric in %); returns the markdown."""
    cols = ["trial_id", *keys, metric, "rounds_evaluated", "state"]
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(cols)
    for r in rows:
        w.writerow([r[c] for c in cols])
    storage.write_text(sweep_dir / "results.csv", table.getvalue())
    lines = ["| " + " | ".join(c if c != metric else f"{metric} (%)" for c in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{100 * r[c]:.2f}" if c == metric else _fmt(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    storage.write_text(sweep_dir / "results.md", md)
    return md


def plot_sweep(rows: list[dict], space: dict[str, tuple[str, list]], metric: str, path: Path) -> None:
    """One panel per swept key: val metric (%) against the key's value (categorical for non-numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [r[key] for r in rows]
        ys = [100 * r[metric] for r in rows]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels)
        colors = ["tab:blue" if r["state"] == "TERMINATED" else "tab:gray" for r in rows]
        ax.scatter(xs, ys, c=colors)
        if numeric and len(space) == 1:
            order = sorted(range(len(xs)), key=lambda i: xs[i])
            ax.plot([xs[i] for i in order], [ys[i] for i in order], color="tab:blue", alpha=0.5)
        if space[key][0] == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("val mAP per trial (grey: stopped early or failed)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, buf.getvalue())
