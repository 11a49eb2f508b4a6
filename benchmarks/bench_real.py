"""Self-training on real recordings: every semi-supervised recipe against supervised 10 / 20 / 100 % labels,
3 seeds, on hapt, sfinge3d (real) and thumos14-synth (issue 34).

    python benchmarks/bench_real.py                                  # everything (resumable; hours on 2 cores)
    python benchmarks/bench_real.py --datasets hapt --seeds 0 --recipes npl ntc
    python benchmarks/bench_real.py --table-only                     # the tables of the runs there are
    python benchmarks/bench_real.py --runs-dir runs/real_b --baseline-dir runs/bench_real \
        --set recipe.min_score=0.3          # a variant of the recipe runs, sharing the supervised runs and teachers

Data, found through $RAYTAL_SHARED_DATA (a dataset whose files are absent is skipped, naming them):
  hapt, sfinge3d   real/<name>/annotations.json + features/, converted once into --data-dir/<name> with
                   jobs/make_dataset.py (the strides of real/README.md)
  thumos14-synth   thumos14.json, generated once into --data-dir/thumos14-synth

Runs, one at a time, each a ``jobs/selftrain.py --in-process`` command in <dir>/<dataset>/s<N>/<run>, with
train.seed = data.split_seed = run.seed = N:
  sup10, sup20, sup100   configs/<prefix>_supervised.yaml at 10 / 20 / 100 % labels (round 0 alone)
  teacher_apl            configs/<prefix>_apl.yaml with run.rounds=0: the APL recipes' teacher (quality heads,
                         ACP pre-training)
  <recipe>               configs/<prefix>_<recipe>.yaml at 10 % labels and every --set, its round 0 shared
                         (run.teacher): sup10's checkpoint, or teacher_apl's for apl and apl_ntc; "plain" is the
                         supervised config with run.rounds=2 (score-threshold pseudo labels, recipe.min_score)
The supervised runs and teachers are in --baseline-dir (default: --runs-dir), the recipe runs in --runs-dir: a
variant of the recipes (--set of keys that cannot change round 0) gets its own --runs-dir and shares them.
(<prefix>: hapt, sfinge3d, thumos14). A run with a metrics.json is finished and skipped; an unfinished one
resumes from its stage ledger, so the same command continues where it stopped. Every run's wall and CPU time
is appended to --runs-dir/times.jsonl.

Tables (markdown, printed and written to --runs-dir/tables.md), test average mAP (%) over the dataset's tIoU
thresholds, mean ± sample std over the seeds: the supervised rows; per recipe its teacher (round 0), the run's
model (the round it chose on val: <run>/final/model.pt), its last round, the rounds chosen per seed, the
paired difference model − sup10 per seed, and the share of the sup10 → sup100 gap the model closes (of the
means).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "RAYTAL_SHARED_DATA"
REAL = {"hapt": ("25", "50"), "sfinge3d": ("2", "4")}  # --feat-stride, --num-frames (real/README.md)
PREFIX = {"hapt": "hapt", "sfinge3d": "sfinge3d", "thumos14-synth": "thumos14"}
RECIPES = ("npl", "ntc", "npl_ntc", "gaufuse", "apl", "apl_ntc")
APL_TEACHER = ("apl", "apl_ntc")
SUPERVISED = {"sup10": 0.1, "sup20": 0.2, "sup100": 1.0}


def dataset_sources(name: str, shared: Path) -> tuple[list[Path], list[str]]:
    """(the shared files ``name`` is made from, the make_dataset.py arguments that make it, --out excepted)."""
    if name == "thumos14-synth":
        ann = shared / "thumos14.json"
        return [ann], ["--preset", "thumos14-synth", "--annotations", str(ann)]
    stride, frames = REAL[name]
    ann, feats = shared / "real" / name / "annotations.json", shared / "real" / name / "features"
    return [ann, feats], ["--annotations", str(ann), "--features", str(feats), "--feat-stride", stride,
                          "--num-frames", frames]


def prepare(name: str, shared: Path | None, data_dir: Path) -> Path | None:
    """The dataset directory, made once; None (with the reason printed) when its shared files are absent."""
    out = data_dir / name
    if (out / "dataset.yaml").exists():
        return out
    if shared is None:
        print(f"skip {name}: ${SHARED_ENV} is not set (the directory holding thumos14.json and real/)")
        return None
    needed, args = dataset_sources(name, shared)
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"skip {name}: third-party data not found: {', '.join(missing)}")
        return None
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), *args, "--out", str(out)], check=True)
    return out


@dataclass
class Job:
    """One selftrain run of the benchmark."""

    dataset: str
    seed: int
    name: str
    config: Path
    overrides: list[str]
    teacher: str = ""  # the run (of the same dataset and seed, in the baseline directory) whose round 0 it shares
    baseline: bool = False  # a supervised run or teacher: it lives in the baseline directory


def run_dir(base: Path, dataset: str, seed: int, name: str) -> Path:
    return base / dataset / f"s{seed}" / name


def jobs_for(dataset: str, seed: int, recipes: list[str], data: Path, extra: list[str]) -> list[Job]:
    """Every run of one dataset and seed, teachers first (see the module docstring)."""
    prefix = PREFIX[dataset]
    common = [f"data.root={data}", f"train.seed={seed}", f"data.split_seed={seed}", f"run.seed={seed}"]
    sup_cfg = REPO / "configs" / f"{prefix}_supervised.yaml"
    out = [Job(dataset, seed, name, sup_cfg, [*common, f"data.labeled_ratio={ratio}"], baseline=True)
           for name, ratio in SUPERVISED.items()]
    if any(r in APL_TEACHER for r in recipes):
        out.append(Job(dataset, seed, "teacher_apl", REPO / "configs" / f"{prefix}_apl.yaml", [*common, "run.rounds=0"],
                       baseline=True))
    for recipe in recipes:
        teacher = "sup10" if recipe not in APL_TEACHER else "teacher_apl"
        if recipe == "plain":
            out.append(Job(dataset, seed, recipe, sup_cfg, [*common, "data.labeled_ratio=0.1", "run.rounds=2", *extra],
                           teacher))
        else:
            out.append(Job(dataset, seed, recipe, REPO / "configs" / f"{prefix}_{recipe}.yaml", [*common, *extra],
                           teacher))
    return out


def run(job: Job, runs: Path, baseline: Path) -> None:
    """The job's selftrain command, unless its run finished; its times go to <runs>/times.jsonl."""
    where = run_dir(baseline if job.baseline else runs, job.dataset, job.seed, job.name)
    if (where / "metrics.json").exists():
        return
    overrides = [*job.overrides, f"run.dir={where}", f"run.name={PREFIX[job.dataset]}_{job.name}_s{job.seed}"]
    if job.teacher:
        teacher = run_dir(baseline, job.dataset, job.seed, job.teacher) / "round_0" / "train" / "final.pt"
        overrides.append(f"run.teacher={teacher}")
    cmd = [sys.executable, str(REPO / "jobs" / "selftrain.py"), "--in-process", "--config", str(job.config)]
    for o in overrides:
        cmd += ["--set", o]
    print(f"== {job.dataset} seed {job.seed} {job.name}", flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    with open(runs / "times.jsonl", "a") as f:
        f.write(json.dumps({"dataset": job.dataset, "seed": job.seed, "run": job.name, "wall_s": round(wall, 1),
                            "cpu_s": round(cpu, 1)}) + "\n")
    print(f"   {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)


# ------------------------------------------------------------------------------------------- tables


def read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def model_map(metrics: dict, r: int | None = None) -> float:
    """Test average mAP (%) of round ``r`` (default: the run's model)."""
    rounds = {e["round"]: e for e in metrics["rounds"]}
    r = metrics["selection"]["round"] if r is None else r
    return 100 * rounds[r]["eval"]["average_mAP"]


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.2f}" if v.size == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def dataset_table(dataset: str, seeds: list[int], recipes: list[str], runs: Path, baseline: Path) -> str:
    """The dataset's markdown table (module docstring); runs not finished yet are left out of their row."""
    def finished(name: str, base: Path = runs) -> dict[int, dict]:
        found = {s: read_metrics(run_dir(base, dataset, s, name)) for s in seeds}
        return {s: m for s, m in found.items() if m is not None}

    sup = {name: finished(name, baseline) for name in SUPERVISED}
    lines = [f"**{dataset}** (seeds {','.join(map(str, seeds))}; test average mAP %, mean ± std over seeds)", "",
             "| run | seeds done | teacher (round 0) | the run's model (round chosen on val) | last round | rounds chosen "
             "| model − sup10, paired | share of the 10 % → 100 % gap |", "|---|---|---|---|---|---|---|---|"]
    for name, ms in sup.items():
        lines.append(f"| {name} | {len(ms)} | – | {cell([model_map(m) for m in ms.values()])} | – | – | – | – |")
    lo = [model_map(m) for m in sup["sup10"].values()]
    hi = [model_map(m) for m in sup["sup100"].values()]
    for recipe in recipes:
        ms = finished(recipe)
        model = [model_map(m) for m in ms.values()]
        paired = [model_map(m) - model_map(sup["sup10"][s]) for s, m in ms.items() if s in sup["sup10"]]
        share = "–"
        if model and lo and hi and np.mean(hi) > np.mean(lo):
            share = f"{100 * (np.mean(model) - np.mean(lo)) / (np.mean(hi) - np.mean(lo)):.0f} %"
        lines.append(
            f"| {recipe} | {len(ms)} | {cell([model_map(m, 0) for m in ms.values()])} | {cell(model)} | "
            f"{cell([model_map(m, m['rounds'][-1]['round']) for m in ms.values()])} | "
            f"{','.join(str(m['selection']['round']) for m in ms.values()) or '–'} | {cell(paired)} | {share} |")
    return "\n".join(lines)


def times_table(runs: Path) -> str:
    """Median wall and CPU seconds per (dataset, kind of run) from times.jsonl."""
    path = runs / "times.jsonl"
    if not path.exists():
        return "(no run timed yet)"
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        t = json.loads(line)
        rows.setdefault((t["dataset"], t["run"]), []).append((t["wall_s"], t["cpu_s"]))
    lines = ["| dataset | run | runs timed | median wall s | median CPU s |", "|---|---|---|---|---|"]
    for (dataset, name), ts in sorted(rows.items()):
        wall, cpu = np.median(np.asarray(ts), axis=0)
        lines.append(f"| {dataset} | {name} | {len(ts)} | {wall:.0f} | {cpu:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(PREFIX), choices=list(PREFIX))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=[*RECIPES, "plain"])
    p.add_argument("--data-dir", type=Path, default=REPO / "data", help="where the datasets are made (default: data/)")
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "bench_real")
    p.add_argument("--baseline-dir", type=Path, default=None,
                   help="where the supervised runs and teachers are (default: --runs-dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every recipe run (keys that cannot change round 0; give the variant "
                        "its own --runs-dir and the shared --baseline-dir)")
    p.add_argument("--table-only", action="store_true", help="print the tables of the finished runs, run nothing")
    args = p.parse_args(argv)
    shared = Path(os.environ[SHARED_ENV]) if os.environ.get(SHARED_ENV) else None
    baseline = args.baseline_dir or args.runs_dir
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    for dataset in args.datasets:
        if not args.table_only:
            data = prepare(dataset, shared, args.data_dir)
            if data is None:
                continue
            for seed in args.seeds:
                for job in jobs_for(dataset, seed, args.recipes, data.resolve(), args.overrides):
                    run(job, args.runs_dir, baseline)
        tables.append(dataset_table(dataset, args.seeds, args.recipes, args.runs_dir, baseline))
    text = "\n\n".join([*tables, "Time per run:\n\n" + times_table(args.runs_dir)])
    (args.runs_dir / "tables.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
