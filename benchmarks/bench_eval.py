"""Evaluator speed and correctness against straightforward loop references (issues 3 and 13).

    .venv/bin/python benchmarks/bench_eval.py [--videos 1000] [--classes 200] [--preds 100]

Synthetic ActivityNet-scale case (default 1,000 videos x 200 classes x 100 predictions per video, see
``synthetic``; scores rounded to 2 decimals so ties are common; ActivityNet's tIoU 0.5:0.05:0.95):
``evaluate_detection`` against a per-prediction loop written here from the protocol text
(activitynet: the structure of the official ``eval_detection.py`` without pandas; thumos14: the
official kit's ``TH14eventdetpr.m``), identical per-class APs required (|diff| <= 1e-12). Times are
CPU time of this process (``time.process_time``, so other jobs sharing the cores do not distort the
ratio), best of 5 runs (vectorized) and of 2 runs (reference). Then the real TURN files
(<shared data>/external, found as tests/conftest.py's ``shared_data_dir`` says) under both protocols
next to the published numbers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from raytal.eval.detection import evaluate_detection
from raytal.core.segments import SegmentTable
from raytal.eval.thumos14 import load_thumos14_annotations, load_thumos14_detections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import shared_data_dir  # noqa: E402

TIOUS = np.linspace(0.5, 0.95, 10)  # ActivityNet's thresholds (docs/design.md §7 "Detection mAP")


def synthetic(n_videos: int, n_classes: int, per_video: int, seed: int = 0) -> tuple[SegmentTable, SegmentTable, SegmentTable]:
    """ActivityNet-like case: each video has 1-2 action classes with 1-4 instances each; a detector's
    top-``per_video`` predictions (jittered copies of the instances and random segments), labelled
    like a video-level classifier does: 90% one of the video's classes, 10% a random class. Scores are
    rounded to 2 decimals, so ties are common. Plus an ambiguous interval in 30% of the videos."""
    rng = np.random.default_rng(seed)
    g_vid, g_seg, g_lab, p_vid, p_seg, p_lab = [], [], [], [], [], []
    a_vid, a_seg = [], []
    for v in range(n_videos):
        vid = f"video_{v:06d}"
        dur = rng.uniform(60, 240)
        classes = rng.choice(n_classes, size=rng.integers(1, 3), replace=False)
        lab = np.repeat(classes, rng.integers(1, 5, size=len(classes)))
        start = rng.uniform(0, dur - 30, size=len(lab))
        seg = np.stack([start, start + rng.uniform(2, 30, size=len(lab))], 1)
        g_vid += [vid] * len(lab)
        g_seg.append(seg)
        g_lab.append(lab)
        k = per_video // 2
        jit = seg[rng.integers(0, len(lab), size=k)] + rng.normal(0, 3.0, size=(k, 2))
        jit.sort(axis=1)
        rs = rng.uniform(0, dur - 5, size=per_video - k)
        rand = np.stack([rs, rs + rng.uniform(1, 60, size=len(rs))], 1)
        plab = np.where(
            rng.random(per_video) < 0.9, rng.choice(classes, size=per_video), rng.integers(0, n_classes, size=per_video)
        )
        p_vid += [vid] * per_video
        p_seg.append(np.concatenate([jit, rand]))
        p_lab.append(plab)
        if rng.random() < 0.3:
            s = rng.uniform(0, dur - 5)
            a_vid.append(vid)
            a_seg.append([s, s + rng.uniform(1, 5)])
    n_pred = len(p_vid)
    gt = SegmentTable(np.array(g_vid, dtype=object), np.concatenate(g_seg), np.concatenate(g_lab))
    pred = SegmentTable(
        np.array(p_vid, dtype=object), np.concatenate(p_seg), np.concatenate(p_lab), np.round(rng.random(n_pred), 2)
    )
    amb = SegmentTable(np.array(a_vid, dtype=object), np.array(a_seg).reshape(-1, 2), np.zeros(len(a_vid), np.int64))
    return gt, pred, amb


# ---------------------------------------------------------------- loop references


def _iou_an(seg: np.ndarray, segs: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(seg[1], segs[:, 1]) - np.maximum(seg[0], segs[:, 0]), 0, None)
    union = (segs[:, 1] - segs[:, 0]) + (seg[1] - seg[0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _ov_kit(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[1], b[1]) - max(a[0], b[0])
    return iw / (max(a[1], b[1]) - min(a[0], b[0])) if iw > 0 else 0.0


def _interpolated(prec: np.ndarray, rec: np.ndarray) -> float:
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def reference_activitynet(gt: SegmentTable, pred: SegmentTable, tious: np.ndarray) -> dict[int, np.ndarray]:
    out = {}
    for c in np.unique(gt.labels):
        gi = np.flatnonzero(gt.labels == c)
        by_video: dict[str, list[int]] = {}
        for j in gi:
            by_video.setdefault(gt.video[j], []).append(j)
        pi = np.flatnonzero(pred.labels == c)
        order = pi[np.argsort(pred.scores[pi], kind="stable")[::-1]]  # ties: later-listed first
        lock = {t: set() for t in range(len(tious))}
        tp = np.zeros((len(tious), len(order)))
        for r, i in enumerate(order):
            js = by_video.get(pred.video[i])
            if js is None:
                continue
            ious = _iou_an(pred.segments[i], gt.segments[js])
            ranked = np.argsort(ious, kind="stable")[::-1]  # equal tIoU: later-listed ground truth
            for t, thr in enumerate(tious):
                for k in ranked:
                    if ious[k] < thr:
                        break
                    if js[k] in lock[t]:
                        continue
                    lock[t].add(js[k])
                    tp[t, r] = 1
                    break
        ap = np.zeros(len(tious))
        for t in range(len(tious)):
            if len(order):
                tpc, fpc = np.cumsum(tp[t]), np.cumsum(1 - tp[t])
                ap[t] = _interpolated(tpc / (tpc + fpc), tpc / len(gi))
        out[int(c)] = ap
    return out


def reference_thumos14(gt: SegmentTable, pred: SegmentTable, amb: SegmentTable, tious: np.ndarray) -> dict[int, np.ndarray]:
    out = {}
    gt_of: dict[tuple[str, int], list[int]] = {}
    det_of: dict[tuple[str, int], list[int]] = {}
    amb_of: dict[str, list[int]] = {}
    for j, (v, c) in enumerate(zip(gt.video.tolist(), gt.labels.tolist())):
        gt_of.setdefault((v, c), []).append(j)
    for i, (v, c) in enumerate(zip(pred.video.tolist(), pred.labels.tolist())):
        det_of.setdefault((v, c), []).append(i)
    for a, v in enumerate(amb.video.tolist()):
        amb_of.setdefault(v, []).append(a)
    videos = sorted(set(gt.video.tolist()) | set(pred.video.tolist()))
    for c in np.unique(gt.labels).tolist():
        npos = sum(1 for key in gt_of if key[1] == c for _ in gt_of[key])
        ap = np.zeros(len(tious))
        for t, thr in enumerate(tious):
            conf, flag = [], []
            for v in videos:  # the kit's order: videos sorted, detections by score (stable) inside
                d = det_of.get((v, c), [])
                if not d:
                    continue
                d = [d[k] for k in np.argsort(-pred.scores[d], kind="stable")]
                free = [True] * len(d)
                for j in gt_of.get((v, c), []):  # each ground truth in turn
                    best, bi = -1.0, -1
                    for k in range(len(d)):
                        if free[k]:
                            o = _ov_kit(gt.segments[j], pred.segments[d[k]])
                            if o > best:
                                best, bi = o, k
                    if bi >= 0 and best > thr:
                        free[bi] = False
                for k in range(len(d)):
                    ambig = any(_ov_kit(amb.segments[a], pred.segments[d[k]]) > 0 for a in amb_of.get(v, []))
                    if not free[k] or not ambig:
                        conf.append(pred.scores[d[k]])
                        flag.append(0 if free[k] else 1)
            if not conf:
                continue
            srt = np.argsort(-np.array(conf), kind="stable")
            f = np.array(flag)[srt]
            tpc, fpc = np.cumsum(f == 1), np.cumsum(f == 0)
            prec = tpc / (tpc + fpc)
            ap[t] = sum(prec[i] for i in range(len(f)) if f[i] == 1) / npos
        out[int(c)] = ap
    return out


def _best_of(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return out, min(times)


def _compare(name: str, fast, ref_fn) -> None:
    res, t_fast = _best_of(fast, 5)
    ref, t_ref = _best_of(ref_fn, 2)
    diff = max(float(np.max(np.abs(res.per_class_AP[c] - ref[c]))) for c in ref)
    same = sorted(ref) == sorted(res.per_class_AP) and diff <= 1e-12
    print(
        f"{name}: vectorized {t_fast * 1e3:8.1f} ms | loop reference {t_ref * 1e3:9.1f} ms | "
        f"speed-up {t_ref / t_fast:6.1f}x | identical per-class AP: {same} (max |diff| {diff:.1e}) | "
        f"mAP {np.round(100 * res.mAP, 1).tolist()}"
    )


def turn_table() -> None:
    root = shared_data_dir() / "external" / "thumos14"
    if not root.is_dir():
        print(f"TURN: external data {root} not found (set RAYTAL_SHARED_DATA), skipped")
        return
    published = {("FLOW", 0.1): 54.0, ("FLOW", 0.2): 50.9, ("FLOW", 0.3): 44.1, ("FLOW", 0.4): 34.9,
                 ("FLOW", 0.5): 25.6, ("C3D", 0.5): 22.5}
    classes, gt, amb = load_thumos14_annotations(root / "gt_official_test")
    print("\nTURN + S-CNN on THUMOS14 test, each file at its own tIoU (mAP %)")
    print("| file | tIoU | published (kit) | raytal thumos14 | raytal activitynet | activitynet - thumos14 |")
    print("|---|---|---|---|---|---|")
    for f in sorted((root / "turn_tap").glob("*.txt")):
        model = "C3D" if "C3D" in f.name else "FLOW"
        tiou = float(f.stem.rsplit("iou", 1)[1])
        pred = load_thumos14_detections(f, classes)
        th = 100 * evaluate_detection(gt, pred, [tiou], protocol="thumos14", ambiguous=amb).mAP[0]
        an = 100 * evaluate_detection(gt, pred, [tiou], protocol="activitynet").mAP[0]
        pub = published.get((model, tiou))
        print(f"| TURN-{model}-16 | {tiou} | {pub if pub is not None else '-'} | {th:.2f} | {an:.2f} | {an - th:+.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--preds", type=int, default=100)
    args = ap.parse_args()
    gt, pred, amb = synthetic(args.videos, args.classes, args.preds)
    print(f"synthetic: {args.videos} videos x {args.classes} classes x {args.preds} predictions/video "
          f"= {len(pred)} predictions, {len(gt)} ground truths, {len(amb)} ambiguous; tIoU 0.5:0.05:0.95")
    _compare(
        "activitynet",
        lambda: evaluate_detection(gt, pred, TIOUS, protocol="activitynet"),
        lambda: reference_activitynet(gt, pred, TIOUS),
    )
    _compare(
        "thumos14",
        lambda: evaluate_detection(gt, pred, TIOUS, protocol="thumos14", ambiguous=amb),
        lambda: reference_thumos14(gt, pred, amb, TIOUS),
    )
    turn_table()


if __name__ == "__main__":
    main()
