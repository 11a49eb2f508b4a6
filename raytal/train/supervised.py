"""Supervised training of the detector on the labeled part of a split, with a run directory.

The model is built from ``cfg.train.seed`` so a run is reproducible; the checkpoint
``<run>/checkpoints/last.pt`` is rewritten after every epoch (it records the epoch), and a restarted
run resumes from it. The EMA model is what is evaluated (ActionFormer's practice).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


from raytal.config import Config, load_config, to_dict
from raytal.data.dataset import SplitDataset
from raytal.eval.report import format_map_table
from raytal.selftrain.common import build_detector, evaluate_model
from raytal.train.checkpoint import load_checkpoint, save_checkpoint
from raytal.train.runlog import RunLog
from raytal.train.trainer import Trainer, fit


# Settings a resumed run may change: they do not alter what the checkpoint is a checkpoint of.
RESUMABLE_CHANGES = ("train.epochs", "train.eval_every", "train.torch_threads", "run.")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: Config, new: Config) -> list[str]:
    """Keys whose values differ between two configs, except those a resumed run may change."""
    a, b = _flatten(to_dict(old)), _flatten(to_dict(new))
    return sorted(k for k in a.keys() | b.keys()
                  if a.get(k) != b.get(k) and not any(k.startswith(p) for p in RESUMABLE_CHANGES))


def run_label(cfg: Config) -> str:
    return f"supervised ({100 * cfg.data.labeled_ratio:g} % labels)"


def train_supervised(cfg: Config, ds: SplitDataset, run_dir: str | Path, resume: bool = True) -> dict[str, Any]:
    """Train on ``ds.labeled``, evaluate the EMA model on ``ds.test``; returns the metrics written to
    ``<run>/metrics.json`` (``final`` holds the DetectionResult JSON)."""
    if not ds.labeled:
        raise ValueError(f"{ds.root}: the split has no labeled videos (data.labeled_ratio={cfg.data.labeled_ratio})")
    if not ds.test:
        raise ValueError(f"{ds.root}: the test subset is empty; nothing to evaluate on")
    run = Path(run_dir)
    last = run / "checkpoints" / "last.pt"
    model = build_detector(cfg, ds.num_classes, cfg.model.input_dim or ds.info.feature_dim)
    trainer = Trainer(cfg, model, ds.labeled)
    if resume and last.is_file():
        saved = run / "config.yaml"
        changed = config_changes(load_config(saved), cfg) if saved.is_file() else []
        if changed:
            raise ValueError(
                f"{run}: cannot resume, the config differs from the run's {saved.name} in {', '.join(changed)}; "
                "use another run.name / run.dir, or --no-resume to start over"
            )
        trainer.load_state_dict(load_checkpoint(last))
    elif not resume and (run / "metrics.json").is_file():
        (run / "metrics.json").unlink()  # a fresh run must not inherit the old run's curves
    start = trainer.epoch
    log = RunLog(run, purge_step=start * trainer.steps_per_epoch if start else None)
    log.save_config(cfg)
    classes = list(ds.info.classes)

    def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
        save_checkpoint(last, trainer.state_dict())
        log.record("epochs", dict(stats))
        log.scalars(stats, step=(epoch + 1) * trainer.steps_per_epoch, prefix="train/")
        every = cfg.train.eval_every
        if every > 0 and (epoch + 1) % every == 0 and epoch + 1 < cfg.train.epochs:
            res = evaluate_model(cfg, trainer.ema.module, ds.test).to_json(classes)
            log.record("eval", {"epoch": epoch, "mAP": res["mAP"], "average_mAP": res["average_mAP"]})
            log.scalars({"average_mAP": res["average_mAP"]}, step=epoch + 1, prefix="test/")

    t0 = time.perf_counter()
    fit(trainer, cfg.train.epochs, start_epoch=start, on_epoch_end=on_epoch_end)
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = evaluate_model(cfg, trainer.ema.module, ds.test)
    eval_time = time.perf_counter() - t0
    final = result.to_json(classes)
    log.record("eval", {"epoch": cfg.train.epochs - 1, "mAP": final["mAP"], "average_mAP": final["average_mAP"]})
    log.scalars({"average_mAP": final["average_mAP"]}, step=cfg.train.epochs, prefix="test/")
    metrics = log.update_metrics(
        {
            "final": final,
            "run": {
                "label": run_label(cfg),
                "labeled_videos": len(ds.labeled),
                "test_videos": len(ds.test),
                "epochs": cfg.train.epochs,
                "resumed_from_epoch": start,
                "train_seconds": round(train_time, 2),
                "eval_seconds": round(eval_time, 2),
            },
        }
    )
    log.plot()
    log.write_results(format_map_table({run_label(cfg): result}), title=f"{ds.info.name}: supervised detector")
    log.close()
    return metrics
