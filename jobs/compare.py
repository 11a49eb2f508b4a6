"""Compare finished self-training runs: one markdown table of recipes × metrics, mean ± std over seeds.

    python jobs/compare.py runs/npl_s0 runs/npl_s1 runs/apl_s0 runs/apl_s1 --out compare.png
    python jobs/compare.py runs/* --group-by recipe

Each RUN_DIR is a run directory written by jobs/selftrain.py (its metrics.json and config.yaml).
Runs are grouped into recipes; the runs of a group must be seeds of one recipe: configs that differ only in
train.seed, run.seed, data.split_seed and run.name (and where or how far they ran: run.dir, ray.*, ...; runs
of different run.rounds only with --round), made from the same data (the fingerprint each run recorded in
run.json: dataset.yaml and every shard's bytes). Anything else is refused, naming the runs and what differs;
the same run directory given twice is refused too.
  --group-by name    (default) run.name with a trailing seed tag removed: "thumos_apl_seed1",
                     "thumos_apl_s1" and "thumos_apl-1" all count as recipe "thumos_apl"; a run
                     without a name falls back to its recipe flags.
  --group-by recipe  the enabled recipe flags of config.yaml, e.g. "apl+ntc" ("supervised" if none).
Columns, each the mean ± sample standard deviation (ddof=1) over the runs of a group, in percent (a
group of one run shows its value alone), test mAP throughout:
  model avg mAP      average mAP over the tIoU thresholds of the run's model: the round it chose on val
                     (<run>/final/model.pt; its last round for runs without a selection), or round --round R
  model mAP@0.5      mAP at tIoU 0.5 of the same model
  round-0 avg mAP    the teacher trained on labeled videos only (the supervised baseline)
  class acc, mean tIoU, positive acc
                     pseudo-label quality of the last round that made pseudo labels up to that model's
                     round ("–" for supervised runs), measured against the unlabeled videos' hidden ground truth
The "rounds" column lists the round of each run's model, in the order of their seeds. The plot (--out, PNG)
shows average mAP by round per recipe, mean ± std over its runs; an existing --out file is replaced only if
compare.py wrote it.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raytal.cli import run_job  # noqa: E402
from raytal.core.protocols import format_tious  # noqa: E402
from raytal.config import Config, ConfigError, load_config  # noqa: E402
from raytal.core.errors import InputError, clip, where  # noqa: E402
from raytal.core import storage  # noqa: E402
from raytal.core.jsonfile import read_json  # noqa: E402
from raytal.core.outputs import check_output_file  # noqa: E402
from raytal.selftrain.run_record import RECORD_NAME, config_changes, data_changes, recorded_data  # noqa: E402

RECIPE_FLAGS = ("npl", "apl", "ntc", "gaufuse", "noco")
SEED_SUFFIX = re.compile(r"[_-](?:seed|s)?\d+$")
MAX_METRICS_BYTES = 16 << 20  # a metrics.json is a few KB per round
# The plot names its writer in a PNG text chunk, so a later run may replace it (raytal.core.outputs).
PLOT_WRITER = "raytal jobs/compare.py"
PLOT_SIGNATURE = b"Software\x00" + PLOT_WRITER.encode()
COLUMNS = ("model avg mAP", "model mAP@0.5", "round-0 avg mAP", "class acc", "mean tIoU", "positive acc")


class CompareError(InputError):
    """A run directory that cannot be compared (missing or malformed metrics.json / config.yaml)."""


@dataclass
class Run:
    path: Path
    name: str
    recipe: str
    seed: int
    values: dict[str, float]  # COLUMNS → fraction (NaN when the run has no such metric)
    curve: list[float]        # average mAP per round
    tious: tuple[str, ...] = ()  # the thresholds its mAP is averaged over (its protocol)
    model_round: int = 0      # the round whose figures ``values`` are
    config: Config | None = None
    data: dict | None = None  # the fingerprint of the data it was split from (run.json), None if unrecorded


def recipe_flags(cfg: Config) -> str:
    enabled = [f for f in RECIPE_FLAGS if getattr(cfg.recipe, f).enabled]
    return "+".join(enabled) or "supervised"


def recipe_name(run_name: str) -> str:
    """``run_name`` without a trailing seed tag (``_seed3``, ``_s3``, ``-3``)."""
    return SEED_SUFFIX.sub("", run_name)


def _fraction(value: object, file: Path, fld: str, optional: bool = False) -> float:
    """A metric in [0, 1] (``None`` -> NaN, "not defined", where ``optional``); else CompareError naming the field."""
    if value is None and optional:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails too
        null = " or null" if optional else ""
        raise CompareError(f"{where(file, None, fld)}: expected a fraction in [0, 1]{null}, got {clip(repr(value))}")
    return float(value)


def load_run(path: str | Path, round_index: int | None = None) -> Run:
    """A finished run's figures for its model (the round it chose on val, else its last round), or after round
    ``round_index`` (e.g. to set 1-round runs beside the first round of 2-round runs). Every figure it reports
    must be a fraction in [0, 1] (quality: or null when undefined): a NaN is an error naming the field."""
    path = Path(path)
    metrics_file, config_file = path / "metrics.json", path / "config.yaml"
    if not metrics_file.is_file():
        raise CompareError(f"{metrics_file}: missing (is {path} a finished selftrain run directory?)")
    if not config_file.is_file():
        raise CompareError(f"{config_file}: missing (is {path} a selftrain run directory?)")
    metrics = read_json(metrics_file, CompareError, max_bytes=MAX_METRICS_BYTES)
    try:
        listed = metrics["rounds"]
        if not listed or not all(isinstance(r, dict) and type(r["round"]) is int for r in listed):
            raise ValueError("'rounds' must be a non-empty list of {round: int, eval: ...}")
        order = sorted(range(len(listed)), key=lambda i: listed[i]["round"])
        curve = [_fraction(listed[i]["eval"]["average_mAP"], metrics_file, f"rounds[{i}].eval.average_mAP")
                 for i in order]
        selection = metrics.get("selection")
        if round_index is None and selection is not None:
            round_index = selection["round"]
        if round_index is not None:
            order = [i for i in order if listed[i]["round"] <= round_index]
            if not order or listed[order[-1]]["round"] != round_index:
                raise CompareError(f"{metrics_file}: no round {round_index} (the run has rounds "
                                   f"0..{max(r['round'] for r in listed)})")
        last = order[-1]
        tious = tuple(listed[last]["eval"]["mAP"])
        values = {"model avg mAP": curve[len(order) - 1],
                  "model mAP@0.5": _fraction(listed[last]["eval"]["mAP"]["0.5"], metrics_file,
                                             f"rounds[{last}].eval.mAP.0.5"),
                  "round-0 avg mAP": curve[0]}
        quality = [i for i in order if "quality" in listed[i]]
        for column, key in (("class acc", "class_accuracy"), ("mean tIoU", "mean_tiou"),
                            ("positive acc", "positive_accuracy")):
            # NaN = undefined: a supervised run, or a round without pseudo labels
            values[column] = (_fraction(listed[quality[-1]]["quality"][key], metrics_file,
                                        f"rounds[{quality[-1]}].quality.{key}", optional=True)
                              if quality else float("nan"))
    except CompareError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CompareError(f"{metrics_file}: not a selftrain metrics.json (expected rounds[].eval.mAP['0.5'], "
                           f"average_mAP and quality; {type(e).__name__}: {clip(str(e))})") from e
    try:
        cfg = load_config(config_file)
    except (ConfigError, OSError) as e:
        raise CompareError(f"{config_file}: {e}") from e
    record = path / RECORD_NAME
    data = recorded_data(str(record)) if record.is_file() else None
    return Run(path, cfg.run.name, recipe_flags(cfg), cfg.train.seed, values, curve, tious, listed[last]["round"], cfg,
               data)


# Keys in which the runs of one recipe may differ: its seeds. config_changes (raytal.selftrain.run_record)
# already leaves out the keys that say where or how far a run goes (run.dir, ray.*, run.rounds, ...).
SEED_KEYS = ("train.seed", "run.seed", "data.split_seed", "run.name")


def check_recipes(groups: dict[str, list[Run]], at_round: int | None) -> None:
    """The runs of a group are seeds of one recipe: their configs differ in ``SEED_KEYS`` only, they were
    split from the same data (``run.json``'s fingerprint: dataset.yaml and every shard's bytes) and, unless
    ``--round`` picks one, ran as many rounds. Otherwise their mean ± std would mix recipes or datasets:
    ``CompareError`` naming the runs and what differs. Runs of different groups made from different data
    are only warned about (a table may set datasets side by side, but nothing names them)."""
    for key, runs in groups.items():
        first = runs[0]
        for run in runs[1:]:
            changes = [c for c in config_changes(first.config, run.config)
                       if not c.startswith(tuple(f"'{k}'" for k in SEED_KEYS))]
            if at_round is None and first.config.run.rounds != run.config.run.rounds:
                changes.append(f"'run.rounds' was {first.config.run.rounds}, now {run.config.run.rounds} (pass "
                               "--round R to compare them after the same round)")
            if changes:
                raise CompareError(f"recipe {key!r}: {run.path} is not a seed of {first.path}: their configs differ "
                                   f"beyond the seed: {'; '.join(changes[:4])}"
                                   f"{f' (and {len(changes) - 4} more)' if len(changes) > 4 else ''}; "
                                   "average only runs of one recipe (or --group-by another key)")
            if first.data is not None and run.data is not None:
                differ = data_changes(first.data, run.data)
                if differ:
                    raise CompareError(f"recipe {key!r}: {run.path} and {first.path} were made from different "
                                       f"datasets ({'; '.join(differ[:3])}): their mAP cannot be averaged as seeds "
                                       "of one recipe")
        unrecorded = [str(r.path) for r in runs if r.data is None]
        if unrecorded and len(runs) > 1:
            print(f"warning: recipe {key!r}: {', '.join(unrecorded)} recorded no fingerprint of its data (run.json): "
                  "whether its seeds share one dataset is not checked", file=sys.stderr)
    fingerprints = [(k, rs[0]) for k, rs in groups.items() if rs[0].data is not None]
    for (k1, a), (k2, b) in zip(fingerprints, fingerprints[1:]):
        if data_changes(a.data, b.data):
            print(f"warning: recipes {k1!r} and {k2!r} were made from different datasets ({a.config.data.root} and "
                  f"{b.config.data.root}): their rows compare different data", file=sys.stderr)


def check_protocols(runs: list[Run]) -> str:
    """The runs' common tIoU thresholds as text (``0.3:0.1:0.7``); runs evaluated at different thresholds
    cannot be averaged or ranked together."""
    protocols = {r.tious for r in runs}
    if len(protocols) > 1:
        detail = "; ".join(f"{r.path}: {format_tious(map(float, r.tious))}" for r in runs)
        raise CompareError(f"the runs were evaluated at different tIoU thresholds, so their mAP cannot be compared: {detail}")
    return format_tious(map(float, protocols.pop()))


def group_runs(runs: list[Run], by: str = "name") -> dict[str, list[Run]]:
    """Runs by recipe, in the order each recipe first appears on the command line."""
    if by not in ("name", "recipe"):
        raise ValueError(f"group_runs: by must be 'name' or 'recipe', got {by!r}")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = recipe_name(run.name) if by == "name" and run.name else run.recipe
        groups.setdefault(key, []).append(run)
    return groups


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1) over the finite values; std NaN for fewer than 2, both NaN for none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def summarize(groups: dict[str, list[Run]]) -> dict[str, dict[str, tuple[float, float]]]:
    """recipe → column → (mean, std) in fractions."""
    return {key: {c: mean_std(np.array([r.values[c] for r in runs])) for c in COLUMNS} for key, runs in groups.items()}


def _cell(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{100 * mean:.2f}" if np.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def format_table(groups: dict[str, list[Run]]) -> str:
    stats = summarize(groups)
    protocol = check_protocols([r for runs in groups.values() for r in runs])
    header = [c.replace("avg mAP", f"avg mAP ({protocol})") for c in COLUMNS]
    lines = ["| recipe | runs | seeds | rounds | " + " | ".join(header) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for key, runs in groups.items():
        seeds = ",".join(str(s) for s in sorted({r.seed for r in runs}))
        rounds = ",".join(str(r.model_round) for r in sorted(runs, key=lambda r: r.seed))
        cells = " | ".join(_cell(*stats[key][c]) for c in COLUMNS)
        lines.append(f"| {key} | {len(runs)} | {seeds} | {rounds} | {cells} |")
    return "\n".join(lines)


def plot_groups(path: str | Path, groups: dict[str, list[Run]]) -> None:
    """Average mAP by round per recipe: mean line with a ± std band (over the runs reaching that round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raytal.selftrain.report import round_axis

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, runs in groups.items():
        length = max(len(r.curve) for r in runs)
        curves = np.full((len(runs), length), np.nan)
        for i, r in enumerate(runs):
            curves[i, : len(r.curve)] = r.curve
        stats = np.array([mean_std(curves[:, j]) for j in range(length)]) * 100
        mean, std = stats[:, 0], np.nan_to_num(stats[:, 1])
        xs = np.arange(length)
        ax.plot(xs, mean, "o-", label=f"{key} (n={len(runs)})")
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="round", ylabel="average mAP (%)", title="average mAP by round (mean ± std over seeds)")
    round_axis(ax, list(range(max(len(r.curve) for runs in groups.values() for r in runs))))
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": PLOT_WRITER})
    plt.close(fig)
    storage.write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by jobs/selftrain.py")
    p.add_argument("--group-by", choices=("name", "recipe"), default="name",
                   help="group runs by run.name minus its seed tag (default) or by the enabled recipe flags")
    p.add_argument("--out", default="compare.png", help="plot file (PNG) to write (default: compare.png)")
    p.add_argument("--round", type=int, default=None, metavar="R",
                   help="report every run after round R instead of its last round (each run must reach R)")
    args = p.parse_args(argv)
    # Checked first: the table is not worth printing without the plot it promises. A plot raytal did not
    # write is never replaced (raytal.core.outputs).
    if not storage.is_uri(args.out):
        if not Path(args.out).resolve().parent.is_dir():
            raise CompareError(f"--out {args.out}: directory {Path(args.out).resolve().parent} does not exist")
        if Path(args.out).is_dir():
            raise CompareError(f"--out {args.out}: is a directory; expected a PNG file name")
    out = check_output_file(args.out, flag="--out", signature=PLOT_SIGNATURE)
    seen: dict[Path, str] = {}
    for d in args.runs:
        key = Path(d).resolve()
        if key in seen:
            raise CompareError(f"{d}: given twice (also as {seen[key]}): one run would count as two seeds")
        seen[key] = d
    runs = [load_run(d, args.round) for d in args.runs]
    groups = group_runs(runs, args.group_by)
    check_recipes(groups, args.round)
    for key, members in groups.items():
        if len({r.seed for r in members}) < len(members):  # e.g. the same run passed twice, or a re-run
            print(f"warning: recipe {key!r}: {len(members)} runs but only seeds "
                  f"{sorted({r.seed for r in members})} (train.seed); its ± is not a spread over seeds",
                  file=sys.stderr)
    print(format_table(groups))
    plot_groups(out, groups)
    print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
