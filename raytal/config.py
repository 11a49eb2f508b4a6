"""Typed configuration: nested dataclasses loaded from YAML, with ``--set a.b=value`` overrides.

A YAML file may name a ``_base_`` file (relative to itself) whose values it overrides, so recipes
share one dataset/model file. Unknown keys are errors that name the key and the closest valid one,
so a typo never silently falls back to a default. Defaults are the papers' (docs/design.md §5).

Every loaded config is validated (``validate_config``: one rule per key in ``RULES`` plus a few rules
across keys) before a job reads data or starts Ray, and YAML is read within size/alias/depth limits.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import itertools
import math
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytal.core import storage
from raytal.core.errors import InputError
from raytal.core.protocols import parse_tious


class ConfigError(InputError):
    """A configuration file or override that does not fit the schema."""


# ----------------------------------------------------------------------------------------- schema


@dataclass
class DataConfig:
    root: str = "data/tiny"  # dataset dir from jobs/make_dataset.py (dataset.yaml, shards/, ...)
    train_subset: str = ""  # "" = the value in dataset.yaml
    test_subset: str = ""
    setting: str = "semi"  # semi: few labeled videos + unlabeled; weak: video-level labels only
    labeled_ratio: float = 0.1
    split_seed: int = 0
    # Labeled validation videos held out of the training subset (seeded, class-stratified, taken before the
    # labeled/unlabeled split, so labeled_ratio is a share of the rest): never trained on or pseudo-labeled,
    # never the test subset. Every round is evaluated on them and the run's model is the round best on them;
    # Tune ranks its trials on them. 0.2 because the real sets are small: of hapt's 42 training videos it holds
    # out 8 (~160 instances, every class), of sfinge3d's 48 it holds out 10 (~40 instances, ~3 per class);
    # 0.1 would leave 4-5 videos, too few to tell two rounds apart. They are labeled videos beyond the
    # labeled_ratio share (at 10 % the annotated videos are 0.2 + 0.1 x 0.8 = 28 % of the training subset);
    # 0 = no validation part (the run's model is then its last round).
    val_ratio: float = 0.2
    max_seq_len: int = 256  # training crop length in snippets (padded/cropped)
    trunc_thresh: float = 0.5  # keep an instance in a crop if this fraction of it survives


@dataclass
class ModelConfig:
    input_dim: int = 0  # 0 = from dataset.yaml
    embed_dim: int = 128
    embed_layers: int = 2
    embed_kernel: int = 3
    stem_blocks: int = 2  # transformer blocks at full resolution
    num_heads: int = 4
    # Attention window in snippets of each level (odd): one for every level, or a list with one per level;
    # 0 = the whole level (global attention: ActionFormer's -1).
    window: int | list[int] = 9
    fpn_levels: int = 6
    head_dim: int = 128
    head_layers: int = 3
    head_kernel: int = 3
    # Dropout on each transformer block's attention output projection and MLP (ActionFormer's
    # train_cfg.dropout; its attention map has none).
    dropout: float = 0.0
    # Stochastic depth of each block's two residual branches (ActionFormer's train_cfg.droppath); > 0 also
    # gives every branch a learnable per-channel scale initialised at 1e-4 (AffineDropPath); 0 = plain residuals.
    drop_path: float = 0.1
    # Sinusoidal absolute position embedding added after the conv embedding (ActionFormer's use_abs_pe).
    abs_pos_embedding: bool = False
    quality_heads: bool = False  # APL ALQA tIoU + tND heads
    center_sample_radius: float = 1.5
    # Per-level regression ranges in snippets of the input grid (ActionFormer's THUMOS defaults).
    regression_ranges: list[list[float]] = field(
        default_factory=lambda: [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]
    )
    prior_prob: float = 0.01


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    clip_grad: float = 1.0
    ema_momentum: float = 0.999
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    reg_weight: float = 1.0
    # The loss is divided by an exponential moving average of the number of positive points per step,
    # starting here and moving by this momentum (ActionFormer's init_loss_norm; its momentum is 0.9).
    init_loss_norm: float = 100.0
    loss_norm_momentum: float = 0.9
    label_smoothing: float = 0.0  # classification targets y(1 − ε) + ε/(C + 1) (ActionFormer's, anet: 0.1)
    # EMA momentum min(m, (1 + n)/(10 + n)) after n updates, so a short run's average is not the random
    # initial weights; ActionFormer's EMA has no warm-up (false).
    ema_warmup: bool = True
    # fp32 | bf16 | fp16: the forward pass (training and inference) under torch.autocast in this precision;
    # weights, losses and optimizer state stay fp32; fp16 scales the loss (GradScaler). On CPU bf16/fp16
    # are for testing (no native support on most CPUs: much slower); on a GPU bf16 needs compute capability 8+.
    precision: str = "fp32"
    tf32: bool = True  # CUDA only: TF32 tensor cores for fp32 matmuls and convolutions
    seed: int = 0
    torch_threads: int = 0  # 0 = all cores of the process (Ray sets OMP_NUM_THREADS=1 in workers)
    student_init: str = "scratch"  # scratch | teacher
    unlabeled_per_batch: float = 0.5  # fraction of each batch drawn from pseudo-labeled videos
    # An epoch is one pass over the larger of the labeled / pseudo-labeled sets, but at least this many
    # batches: with few labeled videos (10 % of a small set) a teacher would otherwise get a handful of steps.
    min_batches_per_epoch: int = 0
    # > 0: an epoch is exactly this many global batches, however large the unlabeled pool (the streams
    # continue into the next epoch); 0: one pass over the larger set, as above.
    steps_per_epoch: int = 0
    # Videos held in each training stream's shuffle buffer (memory per worker; the stream is never listed).
    # Up to as many videos of each stream are also kept once read: a small labeled set is decoded once.
    shuffle_buffer: int = 64


@dataclass
class InferConfig:
    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    # How a detector's candidates are de-duplicated at test time: soft | hard | none | fusion (GauFuse's
    # Gaussian weighted fusion with fusion_iou / fusion_temperature). The weak base model always fuses its
    # TCAM proposals with fusion_iou / fusion_temperature (its own inference).
    nms: str = "soft"
    iou_threshold: float = 0.1  # hard NMS (Gaussian Soft-NMS decays every overlap, as ActionFormer)
    nms_sigma: float = 0.5
    min_score: float = 0.001
    max_segments: int = 200
    duration_thresh: float = 0.05  # candidates of this length or shorter (snippets) are dropped before NMS
    # Soft-NMS / NMS per class (ActionFormer's multiclass_nms); false: one pass over all classes, then each
    # kept segment's boundaries become the score-weighted mean of the candidates overlapping it by
    # >= voting_thresh (0 = no voting; ActionFormer votes only without multiclass_nms).
    multiclass_nms: bool = True
    voting_thresh: float = 0.75
    fusion_temperature: float = 0.03  # Gaussian weighted fusion's T at test time (GauFuse: 0.03)
    fusion_iou: float = 0.25  # its grouping tIoU at test time


@dataclass
class NPLConfig:
    enabled: bool = False
    n_adjacent: int = 8  # N_a per side
    # N_pos: pseudo instances kept per unlabeled video (split over classes by the adaptive filter). 0 = the mean
    # number of instances per labeled video, counted each round: NPL's 15 is THUMOS14's mean (~15 per training
    # video); hapt has ~20 per recording, sfinge3d ~4 per sequence.
    n_pos: float = 15.0
    alpha: float = 1.0  # weight of the unlabeled loss
    consistency_weight: float = 1.0
    eps: float = 1e-6
    # Candidates for ranking: dense (point, class) pairs above this score, at most topk per video,
    # de-duplicated by class-wise NMS on the ranking score before the class-adaptive filter. Low-score
    # points whose segment holds no other point of their level have zero boundary variance and would
    # get a huge ranking score c/ε, so the pool starts from reasonably confident points.
    candidate_thresh: float = 0.2
    candidate_topk: int = 500
    nms_iou: float = 0.5


@dataclass
class APLConfig:
    enabled: bool = False
    tau_neg: float = 0.15
    eps: float = 1e-3
    beta: float = 2.0
    lambda_locq: float = 0.1
    lambda_acp: float = 0.1
    icd: bool = True
    tau_icd: float = 0.3  # EAP threshold
    sigma_icd: float = 0.7  # MPP threshold (ς_icd)
    icd_hidden: int = 256
    icd_steps: int = 300
    icd_lr: float = 1e-3
    acp: bool = True
    acp_temperature: float = 0.1  # ς
    acp_parts: int = 32  # N
    acp_pretrain_epochs: int = 5  # ACP pre-training of the round-0 teacher on every training video, labels unread (0 = none)


@dataclass
class NTCConfig:
    enabled: bool = False
    lam: float = 0.85  # λ, the Ω_pos ratio
    weight: float = 1.0


@dataclass
class GauFuseConfig:
    enabled: bool = False
    iou_group: float = 0.25  # θ_g, grouping tIoU of the fusion into pseudo labels
    temperature_pseudo: float = 0.1  # fusion of the teacher's candidates into pseudo labels; at test time: infer.*
    margin: float = 0.25
    penalty: float = 1e3  # M of the elastic LP
    schedule: list[int] = field(default_factory=list)  # epochs at which pseudo labels regenerate
    delta_weight: float = 1.0


@dataclass
class NoCoConfig:
    enabled: bool = False
    cala: bool = True
    aic: bool = True
    mic: bool = True
    hpm: bool = True
    theta_c: float = 0.5
    cala_nms: float = 0.5
    theta_a: float = 0.5
    ema_momentum: float = 0.999  # the EMA teacher's (the Trainer's EMA, in place of train.ema_momentum)
    theta_aic: float = 0.5
    theta_s: float = 0.3
    gamma: float = 1.0
    theta_m: float = 0.5
    theta_low: float = 0.1


@dataclass
class RecipeConfig:
    npl: NPLConfig = field(default_factory=NPLConfig)
    apl: APLConfig = field(default_factory=APLConfig)
    ntc: NTCConfig = field(default_factory=NTCConfig)
    gaufuse: GauFuseConfig = field(default_factory=GauFuseConfig)
    noco: NoCoConfig = field(default_factory=NoCoConfig)
    # Without a selection method (NPL, APL) the pseudo labels are the teacher's detections scoring >= a threshold:
    # fixed: recipe.min_score. val_count: each round, the score of the teacher's N-th best detection on the
    # validation videos, N their number of ground-truth instances (about as many pseudo labels as actions, at the
    # teacher's own score scale; raytal.pseudo.count_threshold); needs data.val_ratio > 0.
    min_score_rule: str = "fixed"
    min_score: float = 0.2  # the fixed threshold (tuned on thumos14-synth)


@dataclass
class WeakConfig:
    """Weakly-supervised base model (docs/design.md §4 "Weak base model"): TCAM snippet classifier trained with
    MIL."""

    hidden: int = 128
    dropout: float = 0.5
    topk_ratio: float = 8.0  # top-k pooling takes T // topk_ratio snippets per class
    bg_weight: float = 1.0  # background-suppression loss weight
    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 8
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    class_threshold: float = 0.2  # a class enters proposal generation if its video score exceeds this
    oic_margin: float = 0.25
    # The base model's proposals become pseudo labels from this score (outer-inner contrast) up. Its scale
    # is not a detector's, so recipe.min_score (which later, detector teachers use) cannot serve both.
    pseudo_min_score: float = 0.0


@dataclass
class RayConfig:
    address: str = ""  # "" = RAY_ADDRESS or a new local Ray bound to 127.0.0.1
    num_workers: int = 1  # Ray Train workers
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # fractional so Ray Data can run beside training on small nodes
    gpus_per_worker: float = 1.0
    max_failures: int = 2
    actor_pool_size: int = 2  # teacher-inference actors (they also label on CPU); the pool starts full when it fits
    actor_cpus: float = 0.5
    # videos per inference batch, in-process too (the in-process back-end batches as a Ray actor does)
    infer_batch_size: int = 8


@dataclass
class EvalConfig:
    # tIoU thresholds of every evaluation (report, plots, Tune, compare); [] = the dataset's protocol
    # (dataset.yaml ``tious``: THUMOS14 0.3:0.1:0.7, ActivityNet 0.5:0.05:0.95). A list, or the text
    # forms of --tiou: "0.5:0.05:0.95" (start:step:stop) or "0.5,0.75".
    tious: list[float] = field(default_factory=list)


@dataclass
class TuneConfig:
    space: dict[str, Any] = field(default_factory=dict)  # "a.b": {grid: [...]} | {uniform: [lo, hi]} ...
    num_samples: int = 1
    metric: str = "val_average_mAP"
    max_concurrent: int = 1
    grace_period: int = 1
    reuse_teacher: bool = True


@dataclass
class RunConfig:
    name: str = ""
    dir: str = ""  # "" = runs/<name>
    # Self-training rounds after round 0 (the teacher on the labeled videos). 0 = the supervised detector
    # alone; a run with nothing to pseudo-label (100 % labels and no pool) stops after round 0 whatever this says.
    rounds: int = 0
    # Stop when this many rounds in a row did not beat the best val average mAP so far (0 = run every round).
    # The run's model (<run>/final/) is the round best on val in any case.
    patience: int = 1
    seed: int = 0
    # Also evaluate every round on the test subset (the report's numbers). false: the test subset is never
    # read, not even its file names (Tune trials, which select on val).
    eval_test: bool = True
    teacher: str = ""  # a finished round-0 checkpoint to start from instead of training the teacher


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ------------------------------------------------------------------------------------- validation

NMS_METHODS = ("soft", "hard", "none", "fusion")  # infer.nms: what raytal.model.inference.detect implements
PRECISIONS = ("fp32", "bf16", "fp16")  # train.precision: torch.autocast dtypes (raytal.core.precision)
TUNE_METRICS = ("val_average_mAP", "val_mAP_0.5")  # what a Tune trial reports after every round


@dataclass(frozen=True)
class Range:
    """A finite number (an integer for int fields) within [lo, hi]; an open end excludes its bound.
    On a list field every element must fit."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    odd: bool = False

    def accepts(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return not self.odd or v % 2 == 1

    def describe(self, integer: bool) -> str:
        what = "an odd integer" if self.odd else "an integer" if integer else "a finite number"
        lo = f"{'(' if self.lo_open else '['}{self.lo:g}" if self.lo is not None else ""
        hi = f"{self.hi:g}{')' if self.hi_open else ']'}" if self.hi is not None else ""
        if lo and hi:
            return f"{what} in {lo}, {hi}"
        if lo:
            return f"{what} {'>' if self.lo_open else '>='} {self.lo:g}"
        if hi:
            return f"{what} {'<' if self.hi_open else '<='} {self.hi:g}"
        return what


@dataclass(frozen=True)
class OneOf:
    options: tuple[str, ...]

    def accepts(self, v: str) -> bool:
        return v in self.options

    def describe(self, integer: bool) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Location:
    """A local path or an ``s3://`` / ``gs://`` URI (``raytal.core.storage.resolve``), or "" for the default: a
    mangled URI (``s3:/x``, ``s3:x``) or another scheme (``http://``) is refused here, before any job starts."""

    def accepts(self, v: str) -> bool:
        return v == "" or storage.location_error(v) is None

    def describe(self, integer: bool) -> str:
        return "a local path or an s3://BUCKET/KEY or gs://BUCKET/KEY URI"


ANY = None  # any value of the field's type: a name, a switch (or checked across fields below)
LOCATION = Location()
POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(0), Range(1)
PROBABILITY, BELOW_1, OPEN_01 = Range(0, 1), Range(0, 1, hi_open=True), Range(0, 1, True, True)
ODD = Range(1, odd=True)  # conv kernels / attention windows centred on their snippet


@dataclass(frozen=True)
class OddOrZero(Range):
    """An attention window: odd and >= 1, or 0 for the whole level."""

    def accepts(self, v: float) -> bool:
        return v == 0 or super().accepts(v)

    def describe(self, integer: bool) -> str:
        return "an odd integer >= 1 or 0 (global attention)"


ODD_OR_GLOBAL = OddOrZero(1, odd=True)

# One rule per key, read off the code that consumes it. A new Config field needs an entry here
# (tests/test_config_validation.py checks that every field has one and every number a Range).
RULES: dict[str, Range | OneOf | Location | None] = {
    "data.root": LOCATION, "data.train_subset": ANY, "data.test_subset": ANY,
    "data.setting": OneOf(("semi", "weak")),
    "data.labeled_ratio": Range(0, 1, lo_open=True),
    "data.split_seed": NON_NEGATIVE,  # numpy seeds are >= 0
    "data.val_ratio": BELOW_1,
    "data.max_seq_len": AT_LEAST_1,
    "data.trunc_thresh": PROBABILITY,
    "model.input_dim": NON_NEGATIVE,  # 0 = from dataset.yaml
    "model.embed_dim": AT_LEAST_1, "model.embed_layers": AT_LEAST_1, "model.embed_kernel": ODD,
    "model.stem_blocks": NON_NEGATIVE,
    "model.num_heads": AT_LEAST_1,  # and divides embed_dim (below)
    "model.window": ODD_OR_GLOBAL, "model.fpn_levels": AT_LEAST_1,
    "model.head_dim": AT_LEAST_1, "model.head_layers": AT_LEAST_1, "model.head_kernel": ODD,
    "model.dropout": BELOW_1, "model.drop_path": BELOW_1, "model.abs_pos_embedding": ANY,
    "model.quality_heads": ANY,
    "model.center_sample_radius": POSITIVE,  # 0 leaves no point inside any centre region
    "model.regression_ranges": ANY,  # below: one per level, contiguous
    "model.prior_prob": OPEN_01,
    "train.epochs": AT_LEAST_1, "train.batch_size": AT_LEAST_1, "train.lr": POSITIVE,
    "train.weight_decay": NON_NEGATIVE, "train.warmup_epochs": NON_NEGATIVE,
    "train.clip_grad": NON_NEGATIVE,  # 0 = no clipping
    "train.ema_momentum": BELOW_1,
    "train.focal_alpha": Range(hi=1),  # < 0 switches the class weighting off (torchvision's convention)
    "train.focal_gamma": NON_NEGATIVE, "train.reg_weight": NON_NEGATIVE,
    "train.init_loss_norm": POSITIVE, "train.loss_norm_momentum": BELOW_1, "train.label_smoothing": BELOW_1,
    "train.ema_warmup": ANY, "train.precision": OneOf(PRECISIONS), "train.tf32": ANY,
    "train.seed": NON_NEGATIVE, "train.torch_threads": NON_NEGATIVE,
    "train.student_init": OneOf(("scratch", "teacher")),
    "train.unlabeled_per_batch": PROBABILITY,
    "train.min_batches_per_epoch": NON_NEGATIVE, "train.steps_per_epoch": NON_NEGATIVE,
    "train.shuffle_buffer": NON_NEGATIVE,
    "infer.pre_nms_thresh": PROBABILITY, "infer.pre_nms_topk": AT_LEAST_1,
    "infer.nms": OneOf(NMS_METHODS),  # 'fusion' only with GauFuse (below)
    "infer.iou_threshold": PROBABILITY, "infer.nms_sigma": POSITIVE, "infer.min_score": PROBABILITY,
    "infer.max_segments": AT_LEAST_1, "infer.duration_thresh": NON_NEGATIVE, "infer.multiclass_nms": ANY,
    "infer.voting_thresh": PROBABILITY, "infer.fusion_temperature": POSITIVE, "infer.fusion_iou": BELOW_1,
    "recipe.npl.enabled": ANY, "recipe.npl.n_adjacent": NON_NEGATIVE,
    "recipe.npl.n_pos": NON_NEGATIVE,  # 0 = from the labeled videos
    "recipe.npl.alpha": NON_NEGATIVE, "recipe.npl.consistency_weight": NON_NEGATIVE,
    "recipe.npl.eps": POSITIVE,  # ranking score c / (variance + eps)
    "recipe.npl.candidate_thresh": PROBABILITY, "recipe.npl.candidate_topk": AT_LEAST_1,
    "recipe.npl.nms_iou": PROBABILITY,
    "recipe.apl.enabled": ANY,  # needs model.quality_heads, excludes npl (below)
    "recipe.apl.tau_neg": BELOW_1, "recipe.apl.eps": Range(0, 1, lo_open=True),
    "recipe.apl.beta": NON_NEGATIVE, "recipe.apl.lambda_locq": NON_NEGATIVE, "recipe.apl.lambda_acp": NON_NEGATIVE,
    "recipe.apl.icd": ANY, "recipe.apl.tau_icd": PROBABILITY, "recipe.apl.sigma_icd": PROBABILITY,
    "recipe.apl.icd_hidden": AT_LEAST_1, "recipe.apl.icd_steps": NON_NEGATIVE, "recipe.apl.icd_lr": POSITIVE,
    "recipe.apl.acp": ANY, "recipe.apl.acp_temperature": POSITIVE, "recipe.apl.acp_parts": AT_LEAST_1,
    "recipe.apl.acp_pretrain_epochs": NON_NEGATIVE,
    "recipe.ntc.enabled": ANY, "recipe.ntc.lam": Range(0, 1, lo_open=True), "recipe.ntc.weight": NON_NEGATIVE,
    "recipe.gaufuse.enabled": ANY, "recipe.gaufuse.iou_group": BELOW_1,
    "recipe.gaufuse.temperature_pseudo": POSITIVE,
    "recipe.gaufuse.margin": NON_NEGATIVE, "recipe.gaufuse.penalty": POSITIVE,
    "recipe.gaufuse.schedule": Range(1),  # and increasing, < train.epochs (below)
    "recipe.gaufuse.delta_weight": NON_NEGATIVE,
    "recipe.noco.enabled": ANY, "recipe.noco.cala": ANY, "recipe.noco.aic": ANY, "recipe.noco.mic": ANY,
    "recipe.noco.hpm": ANY,
    "recipe.noco.theta_c": PROBABILITY, "recipe.noco.cala_nms": PROBABILITY, "recipe.noco.theta_a": PROBABILITY,
    "recipe.noco.ema_momentum": BELOW_1, "recipe.noco.theta_aic": PROBABILITY, "recipe.noco.theta_s": PROBABILITY,
    "recipe.noco.gamma": NON_NEGATIVE, "recipe.noco.theta_m": PROBABILITY, "recipe.noco.theta_low": PROBABILITY,
    "recipe.min_score": PROBABILITY, "recipe.min_score_rule": OneOf(("fixed", "val_count")),  # val_count: val (below)
    "weak.hidden": AT_LEAST_1, "weak.dropout": BELOW_1, "weak.topk_ratio": POSITIVE,
    "weak.bg_weight": NON_NEGATIVE, "weak.epochs": AT_LEAST_1, "weak.lr": POSITIVE, "weak.batch_size": AT_LEAST_1,
    "weak.thresholds": PROBABILITY,  # CAS probabilities; at least one (below)
    "weak.class_threshold": PROBABILITY, "weak.oic_margin": NON_NEGATIVE,
    "weak.pseudo_min_score": Range(),  # outer-inner contrast may be negative
    "ray.address": ANY, "ray.num_workers": AT_LEAST_1,  # train.batch_size splits evenly over them (below)
    "ray.use_gpu": ANY, "ray.cpus_per_worker": POSITIVE, "ray.gpus_per_worker": POSITIVE,
    "ray.max_failures": Range(-1),  # -1 = retry forever (Ray's convention)
    "ray.actor_pool_size": AT_LEAST_1, "ray.actor_cpus": POSITIVE, "ray.infer_batch_size": AT_LEAST_1,
    "eval.tious": Range(0, 1, lo_open=True),  # increasing (below)
    "tune.space": ANY,  # its keys and values are checked against the schema by tune_space (below)
    "tune.num_samples": AT_LEAST_1, "tune.metric": OneOf(TUNE_METRICS),
    "tune.max_concurrent": AT_LEAST_1, "tune.grace_period": AT_LEAST_1, "tune.reuse_teacher": ANY,
    "run.name": ANY, "run.dir": LOCATION, "run.rounds": NON_NEGATIVE, "run.patience": NON_NEGATIVE,
    "run.seed": NON_NEGATIVE,
    "run.eval_test": ANY,  # false needs a validation part (below)
    "run.teacher": LOCATION,
}


def leaves(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, value, annotation) of every leaf field of a config dataclass."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, hints[f.name]


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any) -> str:
    """A value for a one-line message, booleans as YAML writes them (a list of thousands stays short)."""
    return ("true" if value else "false") if isinstance(value, bool) else _clip(repr(value))


def _bad(key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"config key '{key}': expected {expected}, got {_show(got)}")


def level_windows(m: ModelConfig) -> list[int]:
    """``model.window`` as one attention window per pyramid level."""
    return list(m.window) if isinstance(m.window, list) else [m.window] * m.fpn_levels


def divisibility(m: ModelConfig) -> int:
    """ActionFormer's ``max_div_factor``: the largest over levels of stride x (window - 1), or of the stride for a
    global level. Its inputs are padded to multiples of it (its chunked attention needs whole chunks), and
    ``data.max_seq_len`` must be one."""
    return max((2**level) * (w // 2) * 2 if w > 1 else 2**level for level, w in enumerate(level_windows(m)))


def _cross_field_error(cfg: Config) -> ConfigError | None:
    """The first broken rule that involves more than one key, or None."""
    m, t, r = cfg.model, cfg.train, cfg.recipe
    if m.embed_dim % m.num_heads:
        return _bad("model.num_heads", f"a divisor of model.embed_dim = {m.embed_dim}", m.num_heads)
    if isinstance(m.window, list) and len(m.window) != m.fpn_levels:
        return _bad("model.window", f"one window or a list of {m.fpn_levels} (one per level: model.fpn_levels = "
                    f"{m.fpn_levels})", m.window)
    if cfg.data.max_seq_len % divisibility(m):
        return _bad("data.max_seq_len", f"a multiple of {divisibility(m)} (each level's stride x its attention "
                    "window - 1, as ActionFormer pads)", cfg.data.max_seq_len)
    ranges = m.regression_ranges
    if len(ranges) != m.fpn_levels:
        return _bad("model.regression_ranges", f"{m.fpn_levels} [lo, hi] ranges (one per level: model.fpn_levels = "
                    f"{m.fpn_levels})", ranges)
    for level, rng in enumerate(ranges):
        if len(rng) != 2 or not all(math.isfinite(x) for x in rng) or not 0 <= rng[0] < rng[1]:
            return _bad("model.regression_ranges", f"[lo, hi] with 0 <= lo < hi, finite, at level {level}", rng)
        if level and rng[0] != ranges[level - 1][1]:
            return _bad("model.regression_ranges", f"contiguous ranges: level {level} starting where level "
                        f"{level - 1} ends ({ranges[level - 1][1]:g})", rng)
    if cfg.infer.nms == "fusion" and not r.gaufuse.enabled:
        return _bad("infer.nms", "'soft', 'hard' or 'none' ('fusion' is GauFuse's: it needs recipe.gaufuse.enabled)",
                    cfg.infer.nms)
    if r.npl.enabled and r.apl.enabled:
        return ConfigError("config keys 'recipe.npl.enabled' and 'recipe.apl.enabled': expected one pseudo-label "
                           "selection method, got both true")
    if r.apl.enabled and not m.quality_heads:
        return _bad("model.quality_heads", "true with recipe.apl.enabled (APL selects by the tIoU/tND quality heads)",
                    m.quality_heads)
    if t.batch_size % cfg.ray.num_workers:
        return _bad("train.batch_size", f"a multiple of ray.num_workers = {cfg.ray.num_workers} (an equal share "
                    "per worker)", t.batch_size)
    if any(b <= a for a, b in zip(cfg.eval.tious, cfg.eval.tious[1:])):
        return _bad("eval.tious", "strictly increasing tIoU thresholds", cfg.eval.tious)
    schedule = r.gaufuse.schedule
    if any(b <= a for a, b in zip(schedule, schedule[1:])) or any(e >= t.epochs for e in schedule):
        return _bad("recipe.gaufuse.schedule", f"strictly increasing epochs in [1, train.epochs = {t.epochs})",
                    schedule)
    if r.min_score_rule == "val_count" and cfg.data.val_ratio == 0:
        return _bad("recipe.min_score_rule", "'fixed' when data.val_ratio = 0 ('val_count' counts the validation "
                    "videos' instances)", r.min_score_rule)
    if not cfg.run.eval_test and cfg.data.val_ratio == 0:
        return _bad("run.eval_test", "true when data.val_ratio = 0 (a run evaluates each round on val, test or both)",
                    cfg.run.eval_test)
    if not cfg.weak.thresholds:
        return _bad("weak.thresholds", "at least one CAS threshold", cfg.weak.thresholds)
    return None


def validate_config(cfg: Config) -> Config:
    """Raise ConfigError naming the first key whose value the code cannot use (types are already checked
    when the config is read); return ``cfg``."""
    for key, value, tp in leaves(cfg):
        rule = RULES[key]
        if rule is None:
            continue
        integer = int in (tp, *typing.get_args(tp))
        if isinstance(value, list):
            if not all(rule.accepts(v) for v in value):
                raise _bad(key, f"every element to be {rule.describe(integer)}", value)
        elif not rule.accepts(value):
            raise _bad(key, rule.describe(integer), value)
    error = _cross_field_error(cfg)
    if error is not None:
        raise error
    return cfg


# ------------------------------------------------------------------------------------- Tune space

TUNE_KINDS = ("grid", "uniform", "loguniform", "choice")
# Keys a trial sets itself (run.dir/name/eval_test/teacher) or that configure the sweep (tune.*): a sweep
# over them would be overridden, or recursive.
UNSWEPT_KEYS = ("run.dir", "run.name", "run.eval_test", "run.teacher", "tune.")
MAX_CHECKED_TRIALS = 4096  # combinations of swept values checked against the rules across keys


def _type_name(tp: Any) -> str:
    return {int: "an integer key", bool: "a true/false key", str: "a text key"}.get(tp, f"a key of type {tp}")


def tune_space(cfg: Config) -> dict[str, tuple[str, list]]:
    """``cfg.tune.space`` ({dotted key: {kind: values}}) as {key: (kind, values)}, every key and value checked
    against the schema before any trial starts: the key exists and is a value (not a section, not one a trial
    sets itself); ``uniform`` / ``loguniform`` only over a real-valued key, with ``[low, high]`` numbers (Tune
    would sample 2.37 for an integer key and every trial would die); every grid / choice value and both ends
    of a range of the key's type and within its rule (``RULES``); and the rules across keys (e.g.
    ``model.num_heads`` divides ``model.embed_dim``) for every combination of grid / choice values and range
    ends, up to ``MAX_CHECKED_TRIALS`` of them. Raises ``ConfigError`` naming ``tune.space.<key>``."""
    space = cfg.tune.space
    if not space:
        raise ConfigError("tune.space is empty: give at least one key, e.g. recipe.npl.n_pos: {grid: [5, 10]}")
    types = {k: tp for k, _, tp in leaves(cfg)}
    out: dict[str, tuple[str, list]] = {}
    for key, spec in space.items():
        where = f"tune.space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in TUNE_KINDS:
            kinds = " | ".join(k + ": [...]" for k in TUNE_KINDS)
            raise ConfigError(f"{where}: expected one of {{{kinds}}}, got {_show(spec)}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {_show(values)}")
        key = str(key)
        if any(key == u or (u.endswith(".") and key.startswith(u)) for u in UNSWEPT_KEYS):
            raise ConfigError(f"{where}: not a key a sweep can vary (each trial sets run.dir, run.name, "
                              "run.eval_test and run.teacher itself; tune.* configure the sweep)")
        if key not in types:
            inside = sorted(k for k in types if k.startswith(key + "."))
            if inside:
                raise ConfigError(f"{where}: '{key}' is a section, not a value; sweep one of its keys, e.g. "
                                  f"{inside[0]}")
            apply_overrides(cfg, {key: values[0]}, source=where)  # an unknown key: named with the closest one
        if kind in ("uniform", "loguniform"):
            if types[key] is not float:
                raise ConfigError(f"{where}.{kind}: '{key}' is {_type_name(types[key])}, and {kind} samples real "
                                  "numbers (every trial would fail on its value): use grid or choice with its values")
            if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"{where}.{kind}: expected [low, high] numbers, got {_show(values)}")
            lo, hi = values
            if not lo < hi or (kind == "loguniform" and lo <= 0):
                raise ConfigError(f"{where}.{kind}: expected low < high (and 0 < low for loguniform), got "
                                  f"{_show(values)}")
        for v in values:  # the key's type and rule, one value at a time
            apply_overrides(cfg, {key: v}, source=where)
        out[key] = (kind, list(values))
    keys = list(out)
    for combo in itertools.islice(itertools.product(*(out[k][1] for k in keys)), MAX_CHECKED_TRIALS):
        trial = ", ".join(f"{k}: {_show(v)}" for k, v in zip(keys, combo))
        apply_overrides(cfg, dict(zip(keys, combo)), source=f"tune.space, the trial {{{trial}}}")
    return out


# ---------------------------------------------------------------------------------------- loading


def _closest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.4)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(options)}"


def _yaml11_hint(value: Any) -> str:
    """YAML 1.1 (PyYAML) reads 1e-4 as a string: a float needs a dot and a signed exponent, as in 1.0e-4."""
    m = re.fullmatch(r"([-+]?\d+(?:\.\d*)?)[eE]([-+]?)(\d+)", value) if isinstance(value, str) else None
    if m is None:
        return ""
    mantissa = m[1] if "." in m[1] else m[1] + ".0"
    return f" (YAML reads {value} as text: write {mantissa}e{m[2] or '+'}{m[3]})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints widen to floats, nothing else is guessed."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_show(value)} does not fit {tp}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}{_yaml11_hint(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {_show(value)}")
        return None
    raise ConfigError(f"{where}: unsupported type {tp}")


# Keys that also take a text form (or one number), parsed into their typed value before the type check.
TEXT_FORMS = {"eval.tious": parse_tious}


def _merge_into(obj: Any, values: dict[str, Any], prefix: str, source: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"{source}: unknown key '{where}'{_closest(str(key), names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{where}' is a section; expected a mapping, got {_show(value)}")
            _merge_into(current, value, where + ".", source)
        else:
            if where in TEXT_FORMS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                try:
                    value = TEXT_FORMS[where](str(value), f"{source}: '{where}'")
                except InputError as e:
                    raise ConfigError(str(e)) from None
            setattr(obj, key, _coerce(value, hints[key], f"{source}: '{where}'"))


# A config or dataset.yaml is a few KB: a document beyond these limits is refused while it is read, so a
# huge, deeply nested or alias-bombed ("billion laughs") file cannot hang or crash a job.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # nodes of the document with every alias expanded
MAX_YAML_DEPTH = 64


class _YAMLLimit(yaml.YAMLError):
    pass


class _YAMLDuplicate(yaml.YAMLError):
    pass


class _LimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that knows each node's size with its aliases expanded (children are composed
    before their parent, so this costs one addition per node) and refuses the document at the limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YAMLLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if alias:
            if id(node) not in self._expanded:  # an alias of a node that contains it
                raise _YAMLLimit("recursive alias (a node that contains itself)")
            return node
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._expanded[id(c)] for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._expanded[id(k)] + self._expanded[id(v)] for k, v in node.value)
        else:
            size = 1
        if size > MAX_YAML_NODES:
            raise _YAMLLimit(f"more than {MAX_YAML_NODES} values with its aliases expanded (an alias bomb?)")
        self._expanded[id(node)] = size
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """Refuse a key given twice in one mapping (two ``data:`` sections): PyYAML keeps the last one silently.
        Keys merged in with ``<<`` may be overridden, as YAML means them to be."""
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = lines.get(key)
                    lines[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error names it
                    break
                if first is not None:
                    at = f"twice on line {line}" if first == line else f"twice, on line {first} and line {line}"
                    raise _YAMLDuplicate(f"key '{_clip(str(key), 60)}' is given {at} (YAML would keep only the last "
                                         "silently): give it once")
        return super().construct_mapping(node, deep)


def load_yaml_text(text: str, source: str, error: type[Exception]) -> Any:
    """``yaml.safe_load(text)`` within the limits above; any failure raises ``error`` with one line
    that starts with ``source``."""
    try:
        loader = _LimitedLoader(text)  # reads the whole text: control characters fail here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _YAMLLimit as e:
        raise error(f"{source}: refused: {e}") from None
    except _YAMLDuplicate as e:
        raise error(f"{source}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = "; ".join(x for x in (e.context, e.problem) if x)
        raise error(f"{source}: not valid YAML: {at}{what}") from None
    except yaml.reader.ReaderError as e:  # control characters: binary data
        raise error(f"{source}: not a text YAML file ({str(e).splitlines()[0]})") from None
    except yaml.YAMLError as e:
        raise error(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None
    except ValueError as e:  # a scalar its tag cannot hold: 2020-13-45, !!int x
        raise error(f"{source}: not valid YAML: {e}") from None


def read_yaml_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The mapping at the top of a UTF-8 YAML file, local or a storage URI (``yaml.safe_load`` semantics;
    empty file = {}) within the limits above; anything else raises ``error`` naming the file."""
    text = storage.read_user_text(path, MAX_YAML_BYTES, error, "YAML",
                                  f"{MAX_YAML_BYTES >> 10} KiB (a config is a few KB)")
    data = load_yaml_text(text, str(path), error) or {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict[str, Any], str]]:
    """Return the chain of (mapping, source) from the deepest ``_base_`` to ``path``."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle through {', '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = read_yaml_mapping(path, ConfigError)
    chain: list[tuple[dict[str, Any], str]] = []
    base = data.pop("_base_", None)
    if base is not None:
        chain = _read_yaml(path.parent / str(base), seen + (path,))
    return chain + [(data, str(path))]


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value) with the value parsed as YAML (so 3, 0.5, true, [1, 2] work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. data.labeled_ratio=0.1")
    key, raw = text.split("=", 1)
    value = load_yaml_text(raw, f"override '{_clip(text)}': value", ConfigError) if raw.strip() else ""
    return key.strip(), value


def nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML chain (``_base_`` first) <- ``--set`` overrides, in that order; validated."""
    cfg = Config()
    if path is not None:
        for data, source in _read_yaml(Path(path)):
            _merge_into(cfg, data, "", source)
    for text in overrides or []:
        key, value = parse_override(text)
        _merge_into(cfg, nest(key, value), "", "--set")
    return validate_config(cfg)


def apply_overrides(cfg: Config, values: dict[str, Any], source: str = "override") -> Config:
    """A validated copy of ``cfg`` with dotted-key values applied (used by Tune trials)."""
    new = copy.deepcopy(cfg)
    for key, value in values.items():
        _merge_into(new, nest(key, value), "", source)
    try:
        return validate_config(new)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], source: str = "dict") -> Config:
    cfg = Config()
    _merge_into(cfg, data, "", source)
    return validate_config(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML (local path or storage URI), atomically."""
    storage.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML config file (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set data.labeled_ratio=0.2 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
