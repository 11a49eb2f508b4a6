"""A finished run's outputs: metrics.json, report.md and PNG plots (mAP by round, pseudo-label quality by
round, per-class pseudo/gt count ratios as in NPL Fig. 4, and timelines of a few unlabeled videos)."""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from raytal.core import storage  # noqa: E402
from raytal.eval.tables import map_table  # noqa: E402

QUALITY_KEYS = ("class_accuracy", "mean_tiou", "positive_accuracy")
NO_PSEUDO = "no pseudo labels (supervised run)"


def percent(fraction: float | None) -> str:
    """A quality fraction as a percentage; '–' when it is undefined (no pseudo labels)."""
    return "–" if fraction is None else f"{100 * fraction:.1f}"


def _save(fig, path: str) -> None:
    """A figure as PNG at ``path`` (local or URI), atomically."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    storage.write_bytes(path, buf.getvalue())


SUBSETS = {"eval": "test", "val": "validation"}  # metrics.json's per-round keys and what each evaluated


def round_table(metrics: dict, key: str = "eval") -> str:
    """Markdown: one row per round, mAP (%) per tIoU and the average, on test (``eval``) or ``val``."""
    return map_table({str(r["round"]): r[key] for r in metrics["rounds"] if key in r}, label="round")


def evaluated(metrics: dict) -> list[str]:
    """The keys of what the run's rounds were evaluated on, test first."""
    return [k for k in SUBSETS if k in metrics["rounds"][0]]


def round_tables(metrics: dict, heading: str = "") -> str:
    """``round_table`` on test, then on val (what the run evaluated), each under a ``heading`` line."""
    return "\n\n".join(f"{heading}{SUBSETS[k].capitalize()} mAP (%) by round\n\n{round_table(metrics, k)}"
                         for k in evaluated(metrics))


def title(metrics: dict, run_dir: str) -> str:
    """The dataset, what ran and at which share of labels, then the run directory."""
    rounds = len(metrics["rounds"]) - 1
    what = f"{rounds} self-training round{'s' if rounds != 1 else ''}" if rounds else "supervised (round 0)"
    labels = f", {100 * metrics['labeled_ratio']:g} % labels" if "labeled_ratio" in metrics else ""
    return f"{metrics.get('dataset') or storage.name(run_dir)}: {what}{labels} (run {storage.name(run_dir)})"


def selection_text(metrics: dict) -> str:
    """Which round's model ``<run>/final/model.pt`` is and why; when and why the run stopped early."""
    sel = metrics.get("selection")
    if sel is None:
        return "(no selection recorded)"
    stopped = f" The run stopped {sel['stopped']}." if sel.get("stopped") else ""
    return f"`final/model.pt` is {sel['why']}.{stopped}"


def quality_table(metrics: dict) -> str:
    rows = [r for r in metrics["rounds"] if "quality" in r]
    if not rows:
        return "(no pseudo labels: supervised run)"
    lines = ["| round | pseudo | gt | class acc | mean tIoU | positive acc | errors |", "|---|---|---|---|---|---|---|"]

    def row(name: str, q: dict, p: dict) -> str:
        return (f"| {name} | {q['num_pseudo']} | {q['num_gt']} | "
                + " | ".join(percent(q[k]) for k in QUALITY_KEYS) + f" | {p['num_errors']} |")

    for r in rows:
        lines.append(row(str(r["round"]), r["quality"], r["pseudo"]))
        # GauFuse regenerations within the round, by the student at that epoch
        lines += [row(f"{r['round']} (epoch {g['epoch']})", g["quality"], g["pseudo"]) for g in r.get("regenerations", [])]
    return "\n".join(lines)


STAGES = ("pretrain", "pseudo", "quality", "train", "val", "eval")


def timing_table(metrics: dict) -> str:
    lines = ["| round | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for r in metrics["rounds"]:
        t = r["timings"]
        lines.append(f"| {r['round']} | " + " | ".join(f"{t[k]:.1f} s" if k in t else "–" for k in STAGES) + " |")
    return "\n".join(lines)


def round_axis(ax: plt.Axes, rounds: list[int]) -> None:
    """Whole-number round ticks, half a round of margin each side (a single round is a visible point)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)


def plot_rounds(path: str, metrics: dict) -> None:
    rounds = metrics["rounds"]
    xs = [r["round"] for r in rounds]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = evaluated(metrics)
    for key in keys:
        axes[0].plot(xs, [100 * r[key]["average_mAP"] for r in rounds], "o-", label=f"{SUBSETS[key]} average")
    for t in rounds[0][keys[0]]["mAP"]:
        axes[0].plot(xs, [100 * r[keys[0]]["mAP"][t] for r in rounds], ".--", alpha=0.6,
                     label=f"{SUBSETS[keys[0]]} tIoU {t}")
    chosen = metrics.get("selection", {}).get("round")
    if chosen is not None:
        axes[0].axvline(chosen, color="k", lw=0.8, ls=":", label="the run's model")
    axes[0].set(xlabel="round", ylabel="mAP (%)", title="mAP by round")
    axes[0].legend(fontsize=7)
    q = [r for r in rounds if "quality" in r]
    for key in QUALITY_KEYS:
        axes[1].plot([r["round"] for r in q], [np.nan if r["quality"][key] is None else 100 * r["quality"][key]
                                               for r in q], "o-", label=key)
    axes[1].set(xlabel="round", ylabel="%", title="pseudo-label quality")
    if q:
        axes[1].legend(fontsize=7)
    else:
        axes[1].text(0.5, 0.5, NO_PSEUDO, transform=axes[1].transAxes, ha="center")
    for ax in axes:
        round_axis(ax, xs)
    _save(fig, path)


def plot_count_ratio(path: str, metrics: dict, classes: list[str]) -> None:
    q = [r for r in metrics["rounds"] if "quality" in r]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes)), 3.6))
    width = 0.8 / max(len(q), 1)
    for i, r in enumerate(q):
        ax.bar(np.arange(len(classes)) + i * width, r["quality"]["count_ratio"], width, label=f"round {r['round']}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="#pseudo / #gt", title="per-class pseudo-label count ratio")
    if q:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, NO_PSEUDO, transform=ax.transAxes, ha="center")
    _save(fig, path)


def plot_timelines(path: str, timelines: list[dict], classes: list[str]) -> None:
    """One panel per video; rows: ground truth, teacher predictions (score-shaded), pseudo labels."""
    fig, axes = plt.subplots(len(timelines), 1, figsize=(10, 1.6 * len(timelines)), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, tl in zip(axes[:, 0], timelines):
        for row, (name, seg, lab, score) in enumerate(
            (("ground truth", tl["gt_segments"], tl["gt_labels"], None),
             ("teacher", tl["pred_segments"], tl["pred_labels"], tl["pred_scores"]),
             ("pseudo", tl["pseudo_segments"], tl["pseudo_labels"], None))
        ):
            for i, (s, e) in enumerate(np.asarray(seg).reshape(-1, 2)):
                alpha = 0.9 if score is None else float(np.clip(score[i], 0.15, 1.0))
                ax.barh(2 - row, e - s, left=s, height=0.7, color=cmap(int(lab[i]) % 20), alpha=alpha)
        ax.set_yticks([2, 1, 0], ["ground truth", "teacher", "pseudo"], fontsize=7)
        ax.set_xlim(0, tl["duration"])
        ax.set_title(f"{tl['video_id']} (round {tl['round']})", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    _save(fig, path)


def write_report(run_dir: str, metrics: dict, classes: list[str], timelines: list[dict] | None = None) -> None:
    """metrics.json, report.md and the plots of a finished run (``run_dir`` local or a URI)."""
    plots = {"map_and_quality_by_round.png": lambda p: plot_rounds(p, metrics),
             "count_ratio.png": lambda p: plot_count_ratio(p, metrics, classes)}
    if timelines:
        plots["timelines.png"] = lambda p: plot_timelines(p, timelines, classes)
    storage.write_text(storage.join(run_dir, "metrics.json"), json.dumps(metrics, indent=1))
    for name, plot in plots.items():
        plot(storage.join(run_dir, "plots", name))
    text = [
        f"# {title(metrics, run_dir)}", "", "## The run's model", "", selection_text(metrics), "",
        round_tables(metrics, "## "), "",
        "## Pseudo-label quality (%, against the unlabeled videos' hidden ground truth)", "", quality_table(metrics), "",
        "## Time per stage", "", timing_table(metrics), "",
        "Plots: " + ", ".join(f"`plots/{name}`" for name in sorted(plots)), "",
    ]
    storage.write_text(storage.join(run_dir, "report.md"), "\n".join(text))
