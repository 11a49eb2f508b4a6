"""LinPro: grouped, component-split, batched solver vs the plain T-variable LP (scipy HiGHS).

Problems are (video, class) timelines of thumos14.json (real instance layouts): each video's per-class
instances become snippet ranges (feat_stride 16, num_frames 16, the file's fps; [ceil(start),
floor(end) + 1) on the snippet grid, T capped at 2,304), split into runs of 1..20 consecutive
instances, with scores from a seeded rng; rounds with new seeds are added until there are >= 1,000
problems. Both solvers must reach the same objective within 1e-6 on every problem. Times are process
CPU time (the machine may be shared, so wall time is noisy).

    .venv/bin/python benchmarks/bench_linpro.py [--min-problems 1000] [--seed 0] [--annotations thumos14.json]

thumos14.json (ActionFormer's THUMOS14 annotation file) is looked up in the shared third-party data
directory (tests/conftest.py: $RAYTAL_SHARED_DATA, else <repo>/../shared/data) unless given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from raytal.data.annotations import load_annotations
from raytal.core.grid import seconds_to_grid
from raytal.pseudo.linpro import linpro_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import shared_data_dir  # noqa: E402

FEAT_STRIDE = NUM_FRAMES = 16
MAX_T = 2304
MAX_K = 20


def make_problems(annotations: Path, min_problems: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    ann = load_annotations(annotations)
    timelines = []
    for video in ann.videos.values():
        T = min(int(video.duration * video.fps // FEAT_STRIDE), MAX_T)
        grid = seconds_to_grid(video.segments, video.fps, FEAT_STRIDE, NUM_FRAMES).reshape(-1, 2)
        s = np.clip(np.ceil(grid[:, 0]), 0, T).astype(np.int64)
        e = np.clip(np.floor(grid[:, 1]) + 1, 0, T).astype(np.int64)
        nearest = np.clip(np.round(grid.mean(axis=1)), 0, T - 1).astype(np.int64)
        s, e = np.where(s >= e, nearest, s), np.where(s >= e, nearest + 1, e)
        inside = (grid[:, 1] > -0.5) & (grid[:, 0] < T - 0.5)
        for c in np.unique(video.labels[inside]):
            sel = inside & (video.labels == c)
            ranges = np.stack([s[sel], e[sel]], axis=1)
            timelines.append((ranges[np.argsort(ranges[:, 0], kind="stable")], T))
    problems: list[tuple[np.ndarray, np.ndarray, int]] = []
    rng = np.random.default_rng(seed)
    while len(problems) < min_problems:
        for ranges, T in timelines:
            i = 0
            while i < ranges.shape[0]:
                k = int(rng.integers(1, MAX_K + 1))
                chunk = ranges[i:i + k]
                problems.append((chunk, rng.uniform(0.0, 1.0, chunk.shape[0]), T))
                i += k
    return problems


def plain_lp(segments: np.ndarray, scores: np.ndarray, T: int, margin: float = 0.25,
             penalty: float = 1e3) -> tuple[float, bool]:
    """The reference: one variable per snippet, strict LP, elastic LP when infeasible."""
    K = segments.shape[0]
    W = np.zeros((K, T))
    for k, (s, e) in enumerate(segments):
        m = int(np.ceil(margin * (e - s) - 1e-9))
        a, b = max(s - m, 0), min(e + m, T)
        W[k, s:e] = 1.0 / (e - s)
        n_out = (s - a) + (b - e)
        if n_out:
            W[k, a:s] = -1.0 / n_out
            W[k, e:b] = -1.0 / n_out
    res = linprog(np.ones(T), A_eq=sp.csr_matrix(W), b_eq=scores, bounds=(0.0, 1.0), method="highs")
    if res.status == 0:
        return float(res.fun), False
    if res.status != 2:
        raise RuntimeError(res.message)
    M = max(penalty, 10.0 * float((segments[:, 1] - segments[:, 0]).max()))
    eye = sp.identity(K, format="csr")
    A = sp.hstack([sp.csr_matrix(W), eye, -eye], format="csr")
    cost = np.concatenate([np.ones(T), np.full(2 * K, M)])
    bounds = [(0.0, 1.0)] * T + [(0.0, None)] * (2 * K)
    res = linprog(cost, A_eq=A, b_eq=scores, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(res.message)
    return float(res.fun), True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--min-problems", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotations", type=Path, default=shared_data_dir() / "thumos14.json")
    args = parser.parse_args()
    if not args.annotations.is_file():  # third-party input: skip (so `make bench` goes on), saying what is missing
        print(f"{args.annotations}: not found, skipped; pass --annotations thumos14.json (ActionFormer's THUMOS14 "
              "file) or set RAYTAL_SHARED_DATA")
        return
    problems = make_problems(args.annotations, args.min_problems, args.seed)
    Ks = np.array([p[0].shape[0] for p in problems])
    Ts = np.array([p[2] for p in problems])
    print(f"problems: {len(problems)}  K {Ks.min()}..{Ks.max()} (total {Ks.sum()})  T {Ts.min()}..{Ts.max()}")

    t0 = time.process_time()
    ours = linpro_batch(problems)
    t_ours = time.process_time() - t0
    t0 = time.process_time()
    ref = [plain_lp(*p) for p in problems]
    t_ref = time.process_time() - t0

    obj_ours = np.array([r.objective for r in ours])
    obj_ref = np.array([r[0] for r in ref])
    rel_ours = np.array([r.relaxed for r in ours])
    rel_ref = np.array([r[1] for r in ref])
    diff = np.abs(obj_ours - obj_ref)
    nan = sum(int(np.isnan(r.y).any()) for r in ours)
    print(f"relaxed: grouped {rel_ours.sum()}  plain {rel_ref.sum()}  (flags differ on {(rel_ours != rel_ref).sum()})")
    print(f"objective max |grouped - plain| = {diff.max():.3e}  problems over 1e-6: {(diff > 1e-6).sum()}  NaN: {nan}")
    print(f"plain T-variable LP (one HiGHS call per problem): {t_ref:.3f} s")
    print(f"grouped batched LinPro:                           {t_ours:.3f} s")
    print(f"speed-up: {t_ref / t_ours:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
