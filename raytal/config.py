"""Typed configuration: nested dataclasses loaded from YAML, with ``--set a.b=value`` overrides.

A YAML file may name a ``_base_`` file (relative to itself) whose values it overrides, so recipes
share one dataset/model file. Unknown keys are errors that name the key and the closest valid one,
so a typo never silently falls back to a default. Defaults are the papers' (SPEC §5).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytal.core import storage
from raytal.core.errors import InputError


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
    val_ratio: float = 0.0  # held-out part of the training videos (Tune validation); never test
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
    window: int = 9  # local attention window (odd), in snippets of the current level
    fpn_levels: int = 6
    head_dim: int = 128
    head_layers: int = 3
    head_kernel: int = 3
    dropout: float = 0.0
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
    shuffle_buffer: int = 64


@dataclass
class InferConfig:
    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    nms: str = "soft"  # soft | hard | fusion (GauFuse Gaussian weighted fusion)
    iou_threshold: float = 0.1  # hard NMS / soft-NMS neighbourhood
    nms_sigma: float = 0.5
    min_score: float = 0.001
    max_segments: int = 200
    fusion_temperature: float = 0.03  # GauFuse T at test time
    fusion_iou: float = 0.25


@dataclass
class NPLConfig:
    enabled: bool = False
    n_adjacent: int = 8  # N_a per side
    n_pos: float = 15.0  # N_pos
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
    acp_pretrain_epochs: int = 5  # ACP pre-training on every training video, labels unread, before round 0


@dataclass
class NTCConfig:
    enabled: bool = False
    lam: float = 0.85  # λ, the Ω_pos ratio
    weight: float = 1.0


@dataclass
class GauFuseConfig:
    enabled: bool = False
    iou_group: float = 0.25  # θ_g
    temperature_pseudo: float = 0.1
    temperature_test: float = 0.03
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
    min_score: float = 0.2  # plain score threshold when no selection method is enabled


@dataclass
class WeakConfig:
    """Weakly-supervised base model (SPEC §4): TCAM snippet classifier trained with MIL."""

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
    infer_batch_size: int = 8  # videos per inference batch
    rows_per_shard: int = 256


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
    rounds: int = 1
    seed: int = 0
    eval_subset: str = "test"  # test | val: which split each round is evaluated on (Tune uses val)
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
    tune: TuneConfig = field(default_factory=TuneConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------- loading


def _closest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.4)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(options)}"


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
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{where}: unsupported type {tp}")


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
                raise ConfigError(f"{source}: '{where}' is a section; expected a mapping, got {value!r}")
            _merge_into(current, value, where + ".", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{source}: '{where}'"))


def read_yaml_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The mapping at the top of a YAML file, local or a storage URI (``yaml.safe_load``; empty file =
    {}); anything else raises ``error`` naming the file."""
    try:
        data = yaml.safe_load(storage.read_text(path)) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from e
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML: {e}") from e
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
    """Defaults <- YAML chain (``_base_`` first) <- ``--set`` overrides, in that order."""
    cfg = Config()
    if path is not None:
        for data, source in _read_yaml(Path(path)):
            _merge_into(cfg, data, "", source)
    for text in overrides or []:
        key, value = parse_override(text)
        _merge_into(cfg, nest(key, value), "", "--set")
    return cfg


def apply_overrides(cfg: Config, values: dict[str, Any], source: str = "override") -> Config:
    """A copy of ``cfg`` with dotted-key values applied (used by Tune trials)."""
    new = from_dict(to_dict(cfg))
    for key, value in values.items():
        _merge_into(new, nest(key, value), "", source)
    return new


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], source: str = "dict") -> Config:
    cfg = Config()
    _merge_into(cfg, data, "", source)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


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
