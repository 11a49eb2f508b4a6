"""The THUMOS14 I3D preset next to ActionFormer's own model: parameters, and CPU time and peak memory of a
training step and of inference, side by side with ActionFormer's code and with an earlier raytal.

    .venv/bin/python benchmarks/bench_model_size.py                      # parameters only
    .venv/bin/python benchmarks/bench_model_size.py --actionformer AF_DIR --before OLD_RAYTAL [--rounds 2] [--steps 2]

1. Parameters of the preset's detector (built on the meta device) next to ActionFormer's model for its
   configs/thumos_i3d.yaml, counted part by part from its code (``actionformer_params``; happyharrycn/
   actionformer_release: libs/core/config.py defaults, libs/modeling/{backbones, blocks, necks, meta_archs}.py).
2. With ``--actionformer AF_DIR`` (a directory on whose path ``libs.modeling.make_meta_arch`` is ActionFormer's:
   a checkout of actionformer_release with its NMS extension built, or a reconstruction of its modeling code)
   and/or ``--before DIR`` (another raytal tree, e.g. ``git archive 2031b04 | tar -x -C DIR``, run with its own
   preset file): each side runs in a process of its own (its peak memory is its own), in turns that rotate
   which side goes first, ``--rounds`` times:
   - train: ``--steps`` training steps after one warm-up step: forward, the loss (focal + DIoU, normalised as
     each code does), backward, gradient clipping at 1.0, AdamW and the EMA update, on 2 videos of T = 2304
     snippets x D = 2048 (random features, 10 actions each), batch 2 as ActionFormer trains;
   - infer: the same 2 videos through the eval-mode model to the candidates before NMS (ActionFormer with
     nms_method "none": its inference takes one video at a time; raytal takes the batch of 2).
   Per side: CPU time per step (``time.process_time``: all threads, what the step costs whatever else runs on
   the machine), and the process's peak RSS (``ru_maxrss``: the Python/torch baseline included, printed too).
   Ratios are raytal / ActionFormer and raytal / before, medians over the turns.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
THUMOS_CLASSES = 20
SIDES = ("raytal", "actionformer", "before")


def actionformer_params(D: int, E: int, H: int, C: int, stem: int = 2, branch: int = 5, levels: int = 6,
                        embed_layers: int = 2, kernel: int = 3, head_layers: int = 3) -> dict[str, int]:
    """ActionFormer's parameter count for input width D, embedding E (= fpn_dim), head width H, C classes,
    by part (convTransformer backbone, identity FPN, PtTransformer heads), with its defaults:
    LayerNorms with affine weight and bias (2E), train_cfg.droppath > 0 so every block has two
    AffineDropPath scales (E each), local attention without rel_pe, MLP ratio 4."""
    ln = 2 * E
    # embedding: MaskedConv1D(k, bias=False since embd_with_ln) + LayerNorm per layer
    embed = D * E * kernel + ln + (embed_layers - 1) * (E * E * kernel + ln)
    # LocalMaskedMHCA: depthwise q/k/v convs (kernel 3 for stride 1 and for stride 2: kernel = stride + 1),
    # no bias, each followed by a LayerNorm; 1x1 q/k/v and output projections with bias
    attn = 3 * (E * 3 + ln) + 4 * (E * E + E)
    mlp = (E * 4 * E + 4 * E) + (4 * E * E + E)  # 1x1 convs E -> 4E -> E, with bias
    block = 2 * ln + attn + mlp + 2 * E  # ln1, ln2, attention, MLP, two AffineDropPath scales
    neck = levels * ln  # FPNIdentity: one LayerNorm per level
    tower = E * H * kernel + ln + (head_layers - 2) * (H * H * kernel + ln)  # convs without bias + LayerNorm
    cls = tower + H * C * kernel + C
    reg = tower + H * 2 * kernel + 2 + levels  # offset conv and one Scale per level
    return {"embedding": embed, "transformer blocks": (stem + branch) * block, "neck": neck, "heads": cls + reg}


def raytal_params(model) -> dict[str, int]:
    parts = {"embedding": ("backbone.embed",), "transformer blocks": ("backbone.stem", "backbone.branch"),
             "neck": ("backbone.neck",), "heads": ("heads",)}
    out = dict.fromkeys(parts, 0)
    for name, p in model.named_parameters():
        part = next(k for k, prefixes in parts.items() if name.startswith(prefixes))
        out[part] += p.numel()
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# ----------------------------------------------------------------------------------- one side (a child)


def fake_inputs(T: int, D: int, count: int = 2, seed: int = 0) -> list[dict]:
    """``count`` videos of T snippets (I3D's grid: stride 4, 16 frames, 30 fps), 10 actions of 10-200 snippets."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        starts = np.sort(rng.uniform(0, T - 210, 10))
        segs = np.stack([starts, np.minimum(starts + rng.uniform(10, 200, 10), T - 1)], 1)
        out.append(dict(video_id=f"v{i}", feats=rng.standard_normal((T, D)).astype(np.float32), segments=segs,
                        labels=rng.integers(0, THUMOS_CLASSES, 10), fps=30.0, stride=4, frames=16))
    return out


def _timed(fn, steps: int) -> list[float]:
    fn()  # warm-up: allocator, first-call dispatch
    times = []
    for _ in range(steps):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return times


def run_raytal(what: str, steps: int, config: str, T: int) -> list[float]:
    """This tree's or an earlier raytal's preset (whichever ``raytal`` is on the path)."""
    import torch

    from raytal.config import load_config
    from raytal.core.video import Video
    from raytal.engine.ema import ModelEMA
    from raytal.model.batch import collate
    from raytal.model.criterion import detection_loss
    from raytal.model.detector import Detector
    from raytal.model.inference import detect

    cfg = load_config(config, [f"data.max_seq_len={T}"])
    m, t = cfg.model, cfg.train
    torch.manual_seed(0)
    extra = {"max_seq_len": T} if "max_seq_len" in inspect.signature(Detector).parameters else {}
    model = Detector(m, THUMOS_CLASSES, m.input_dim, **extra)
    videos = [Video(v["video_id"], "train", ((T - 1) * v["stride"] + v["frames"]) / v["fps"], v["fps"], v["stride"],
                    v["frames"], features=v["feats"], labels=v["labels"],
                    segments=(v["segments"] * v["stride"] + 0.5 * v["frames"]) / v["fps"])
              for v in fake_inputs(T, m.input_dim)]
    batch = collate(videos, pad_multiple=model.pad_multiple)
    if what == "infer":
        model.eval()

        def infer():
            with torch.no_grad():
                detect(model(batch.feats, batch.mask), batch, pre_nms_thresh=cfg.infer.pre_nms_thresh,
                       pre_nms_topk=cfg.infer.pre_nms_topk, nms="none", max_segments=10**9)

        return _timed(infer, steps)
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=t.lr)
    ema = ModelEMA(model, t.ema_momentum)
    kwargs = dict(focal_alpha=t.focal_alpha, focal_gamma=t.focal_gamma, reg_weight=t.reg_weight,
                  center_sample_radius=m.center_sample_radius)
    if "normalizer" in inspect.signature(detection_loss).parameters:  # ActionFormer's moving average
        from raytal.losses.normalizer import LossNormalizer

        kwargs["normalizer"] = LossNormalizer(t.init_loss_norm, t.loss_norm_momentum)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)  # before the forward pass, as the Trainer and ActionFormer do
        losses = detection_loss(model(batch.feats, batch.mask), batch, **kwargs)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        opt.step()
        ema.update(model)

    return _timed(step, steps)


def run_actionformer(what: str, steps: int, T: int) -> list[float]:
    """ActionFormer's PtTransformer for configs/thumos_i3d.yaml (with its library defaults), its optimizer
    groups (make_optimizer's rule: decay on conv/linear weights) and an EMA (ModelEma's update)."""
    import copy

    import torch
    from libs.modeling import make_meta_arch

    train_cfg = dict(center_sample="radius", center_sample_radius=1.5, loss_weight=1.0, cls_prior_prob=0.01,
                     init_loss_norm=100, clip_grad_l2norm=1.0, head_empty_cls=[], dropout=0.0, droppath=0.1,
                     label_smoothing=0.0)
    test_cfg = dict(pre_nms_thresh=0.001, pre_nms_topk=2000, iou_threshold=0.1, min_score=0.001, max_seg_num=200,
                    nms_method="none", nms_sigma=0.5, duration_thresh=0.05, multiclass_nms=True,
                    ext_score_file=None, voting_thresh=0.7)
    torch.manual_seed(0)
    model = make_meta_arch(
        "LocPointTransformer", backbone_type="convTransformer", fpn_type="identity", backbone_arch=(2, 2, 5),
        scale_factor=2, input_dim=2048, max_seq_len=T, max_buffer_len_factor=6.0, n_head=4, n_mha_win_size=19,
        embd_kernel_size=3, embd_dim=512, embd_with_ln=True, fpn_dim=512, fpn_with_ln=True, fpn_start_level=0,
        head_dim=512, regression_range=[(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)],
        head_num_layers=3, head_kernel_size=3, head_with_ln=True, use_abs_pe=False, use_rel_pe=False,
        num_classes=THUMOS_CLASSES, train_cfg=train_cfg, test_cfg=test_cfg)
    video_list = [dict(video_id=v["video_id"], feats=torch.from_numpy(v["feats"].T.copy()),
                       segments=torch.from_numpy(v["segments"].astype(np.float32)),
                       labels=torch.from_numpy(v["labels"]), fps=v["fps"], duration=((T - 1) * 4 + 16) / 30.0,
                       feat_stride=v["stride"], feat_num_frames=v["frames"]) for v in fake_inputs(T, 2048)]
    if what == "infer":
        model.eval()

        def infer():
            with torch.no_grad():
                for v in video_list:  # its inference takes one video at a time
                    model([v])

        return _timed(infer, steps)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-4)
    ema = copy.deepcopy(model).eval()
    model.train()

    def step():
        opt.zero_grad()
        model(video_list)["final_loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
                e.copy_(0.999 * e + 0.001 * p)

    return _timed(step, steps)


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    base = peak_mib()
    if args.side == "actionformer":
        times = run_actionformer(args.what, args.steps, args.seq_len)
    else:
        times = run_raytal(args.what, args.steps, args.config, args.seq_len)
    print(json.dumps({"cpu_s": times, "peak_mib": peak_mib(), "baseline_mib": base}))


# ------------------------------------------------------------------------------------------ the driver


def count_params(config: str) -> None:
    import torch

    from raytal.config import load_config
    from raytal.model.detector import Detector

    cfg = load_config(config)
    m = cfg.model
    with torch.device("meta"):
        model = Detector(m, THUMOS_CLASSES, m.input_dim, max_seq_len=cfg.data.max_seq_len)
    ours = raytal_params(model)
    theirs = actionformer_params(m.input_dim, m.embed_dim, m.head_dim, THUMOS_CLASSES, stem=m.stem_blocks,
                                 branch=m.fpn_levels - 1, levels=m.fpn_levels, embed_layers=m.embed_layers,
                                 kernel=m.embed_kernel, head_layers=m.head_layers)
    print(f"{Path(config).name}: D = {m.input_dim}, E = {m.embed_dim}, {THUMOS_CLASSES} classes")
    print("| part | raytal | ActionFormer thumos_i3d (counted) |")
    print("|---|---|---|")
    for part in ours:
        print(f"| {part} | {ours[part]:,} | {theirs[part]:,} |")
    total_ours, total_theirs = sum(ours.values()), sum(theirs.values())
    print(f"| **total** | **{total_ours:,}** ({total_ours / 1e6:.2f} M) | **{total_theirs:,}** "
          f"({total_theirs / 1e6:.2f} M) |")
    print(f"ratio raytal / ActionFormer: {total_ours / total_theirs:.4f}")


def run_side(side: str, what: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    path = {"raytal": str(REPO), "actionformer": str(args.actionformer), "before": str(args.before)}[side]
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    config = Path(path) / "configs" / "thumos14_i3d_supervised.yaml"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--what", what, "--steps", str(args.steps),
           "--config", str(config), "--seq-len", str(args.seq_len), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=path)
    if out.returncode != 0:
        raise RuntimeError(f"{side} {what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    sides = ["raytal"] + (["actionformer"] if args.actionformer else []) + (["before"] if args.before else [])
    print(f"\nside by side: {args.rounds} turns, {args.steps} timed steps after one warm-up per process, "
          f"T = {args.seq_len}, D = 2048, batch 2, {args.threads or 'default'} torch threads; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start")
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for what in ("train", "infer"):
            order = sides[r % len(sides):] + sides[: r % len(sides)]  # rotate who goes first
            for side in order:
                res = run_side(side, what, args)
                results.setdefault((side, what), []).append(res)
                print(f"  turn {r + 1} {what:5s} {side:12s} CPU s/step {', '.join(f'{x:.1f}' for x in res['cpu_s'])}"
                      f" | peak RSS {res['peak_mib']:.0f} MiB (baseline {res['baseline_mib']:.0f})", flush=True)
    for what, unit in (("train", "training step"), ("infer", "inference of the 2 videos")):
        cpu = {s: float(np.median([x for res in results[(s, what)] for x in res["cpu_s"]])) for s in sides}
        peak = {s: float(np.median([res["peak_mib"] for res in results[(s, what)]])) for s in sides}
        line = f"{unit}: " + " | ".join(f"{s} {cpu[s]:.1f} s CPU, peak {peak[s]:.0f} MiB" for s in sides)
        print(line)
        for other in sides[1:]:
            print(f"  raytal / {other}: CPU time {cpu['raytal'] / cpu[other]:.2f}x, peak memory "
                  f"{peak['raytal'] / peak[other]:.2f}x")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "thumos14_i3d_supervised.yaml"))
    ap.add_argument("--actionformer", type=Path, help="a directory with ActionFormer's libs.modeling (see above)")
    ap.add_argument("--before", type=Path, help="another raytal tree to compare with (its own preset file)")
    ap.add_argument("--rounds", type=int, default=2, help="turns of every side (each a fresh process per task)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process, after one warm-up step")
    ap.add_argument("--seq-len", type=int, default=2304, help="T of the 2 videos (ActionFormer's max_seq_len)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch's default)")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child process
    ap.add_argument("--what", choices=("train", "infer"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    count_params(args.config)
    if args.actionformer or args.before:
        compare(args)


if __name__ == "__main__":
    main()
