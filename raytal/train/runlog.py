"""A run directory: resolved config, TensorBoard scalars, metrics.json, PNG curves and a results table.

Layout of ``<run>``: ``config.yaml``, ``tb/`` (tensorboardX events), ``metrics.json``,
``loss_curves.png``, ``map_curves.png``, ``results.md``, ``checkpoints/``. Only rank 0 of a
distributed run writes one.

``metrics.json`` holds ``{"epochs": [{"epoch": e, ...losses}], "eval": [{"epoch": e, "mAP": {...},
"average_mAP": x}], ...}``; a record for an epoch already present replaces it, so a resumed run that
repeats an epoch does not list it twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402

from raytal.config import Config, save_config  # noqa: E402


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLog:
    """``purge_step`` (the first global step a resumed run will log) drops stale TensorBoard events
    written after the checkpoint it resumes from."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.dir / "checkpoints"
        self.checkpoints.mkdir(exist_ok=True)
        self.metrics_path = self.dir / "metrics.json"
        self._writer = SummaryWriter(str(self.dir / "tb"), purge_step=purge_step)

    def save_config(self, cfg: Config) -> Path:
        path = self.dir / "config.yaml"
        save_config(cfg, path)
        return path

    def scalars(self, values: dict[str, Any], step: int, prefix: str = "") -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._writer.add_scalar(f"{prefix}{k}", float(v), step)
        self._writer.flush()

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            return {}
        try:
            return json.loads(self.metrics_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.metrics_path}: not valid JSON ({e}); delete it or fix it") from e

    def update_metrics(self, values: dict[str, Any]) -> dict[str, Any]:
        """Set top-level keys of metrics.json (read-modify-write, atomic)."""
        metrics = self.read_metrics()
        metrics.update(values)
        _write_atomic(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=False))
        return metrics

    def record(self, section: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Add ``entry`` (with an ``epoch`` key) to the list ``section``, replacing the same epoch's."""
        if "epoch" not in entry:
            raise ValueError(f"metrics record for '{section}' needs an 'epoch' key, got keys {sorted(entry)}")
        metrics = self.read_metrics()
        rows = [r for r in metrics.get(section, []) if r.get("epoch") != entry["epoch"]]
        rows.append(entry)
        rows.sort(key=lambda r: r["epoch"])
        metrics[section] = rows
        _write_atomic(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=False))
        return metrics

    def plot(self) -> list[Path]:
        """Loss curves (every numeric key of ``epochs`` whose name contains 'loss', 'cls' or 'reg') and
        mAP curves (``eval``: one line per tIoU plus the average). Returns the files written."""
        metrics = self.read_metrics()
        written = []
        epochs = metrics.get("epochs", [])
        if epochs:
            keys = sorted({k for r in epochs for k, v in r.items()
                           if isinstance(v, (int, float)) and any(s in k for s in ("loss", "cls", "reg"))})
            fig, ax = plt.subplots(figsize=(6, 4))
            for k in keys:
                pts = [(r["epoch"], r[k]) for r in epochs if k in r]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.set_title("training losses")
            ax.legend(fontsize="small")
            written.append(self._save(fig, "loss_curves.png"))
        evals = metrics.get("eval", [])
        if evals:
            fig, ax = plt.subplots(figsize=(6, 4))
            x = [r["epoch"] for r in evals]
            for t in evals[-1].get("mAP", {}):
                ax.plot(x, [100 * r["mAP"].get(t, float("nan")) for r in evals], marker="o", label=f"tIoU {t}")
            ax.plot(x, [100 * r["average_mAP"] for r in evals], marker="s", color="k", label="average")
            ax.set_xlabel("epoch")
            ax.set_ylabel("mAP (%)")
            ax.set_title("test mAP")
            ax.legend(fontsize="small")
            written.append(self._save(fig, "map_curves.png"))
        return written

    def _save(self, fig: Any, name: str) -> Path:
        path = self.dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def write_results(self, table: str, title: str = "Results") -> Path:
        path = self.dir / "results.md"
        _write_atomic(path, f"# {title}\n\n{table.rstrip()}\n")
        return path

    def close(self) -> None:
        self._writer.close()
