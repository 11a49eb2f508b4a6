"""Config validation (one rule per key plus rules across keys) and the limits of YAML reading."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
import torch

import raytal.config as config
from raytal.config import (
    RULES, Config, ConfigError, OneOf, Range, apply_overrides, from_dict, leaves, load_config, parse_override,
    read_yaml_mapping, to_dict, validate_config,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def _numeric(tp) -> bool:
    return any(t in (int, float) for t in (tp, *typing.get_args(tp)))


# ------------------------------------------------------------------------------------ the table


def test_every_field_has_a_rule_and_every_number_a_range():
    fields = {key: tp for key, _, tp in leaves(Config())}
    assert set(RULES) == set(fields)
    for key, tp in fields.items():
        if _numeric(tp) and key != "model.regression_ranges":  # a list of pairs: checked across keys
            assert isinstance(RULES[key], Range), key


def test_defaults_validate():
    assert validate_config(Config()) == Config()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads_and_validates(path):
    assert len(SHIPPED) >= 20
    cfg = load_config(path)
    assert validate_config(cfg) is cfg


# ------------------------------------------------------------------------------- per-key rules

# (override, the whole message). Each value sits just outside the rule; the accepted neighbours are below.
REFUSED = [
    ("train.lr=.nan", "config key 'train.lr': expected a finite number > 0, got nan"),
    ("train.lr=.inf", "config key 'train.lr': expected a finite number > 0, got inf"),
    ("train.lr=0", "config key 'train.lr': expected a finite number > 0, got 0.0"),
    ("data.labeled_ratio=0", "config key 'data.labeled_ratio': expected a finite number in (0, 1], got 0.0"),
    ("data.labeled_ratio=1.5", "config key 'data.labeled_ratio': expected a finite number in (0, 1], got 1.5"),
    ("data.labeled_ratio=-1", "config key 'data.labeled_ratio': expected a finite number in (0, 1], got -1.0"),
    ("data.val_ratio=1", "config key 'data.val_ratio': expected a finite number in [0, 1), got 1.0"),
    ("data.max_seq_len=0", "config key 'data.max_seq_len': expected an integer >= 1, got 0"),
    ("train.epochs=0", "config key 'train.epochs': expected an integer >= 1, got 0"),
    ("train.batch_size=0", "config key 'train.batch_size': expected an integer >= 1, got 0"),
    ("train.seed=-1", "config key 'train.seed': expected an integer >= 0, got -1"),
    ("model.fpn_levels=0", "config key 'model.fpn_levels': expected an integer >= 1, got 0"),
    ("model.window=8", "config key 'model.window': expected an odd integer >= 1 or 0 (global attention), got 8"),
    ("model.window=-1", "config key 'model.window': expected an odd integer >= 1 or 0 (global attention), got -1"),
    ("model.window=[9, 9, 9, 9, 9, 4]",
     "config key 'model.window': expected every element to be an odd integer >= 1 or 0 (global attention), "
     "got [9, 9, 9, 9, 9, 4]"),
    ("model.drop_path=1", "config key 'model.drop_path': expected a finite number in [0, 1), got 1.0"),
    ("train.init_loss_norm=0", "config key 'train.init_loss_norm': expected a finite number > 0, got 0.0"),
    ("train.loss_norm_momentum=1", "config key 'train.loss_norm_momentum': expected a finite number in [0, 1), got 1.0"),
    ("train.label_smoothing=1", "config key 'train.label_smoothing': expected a finite number in [0, 1), got 1.0"),
    ("infer.voting_thresh=1.5", "config key 'infer.voting_thresh': expected a finite number in [0, 1], got 1.5"),
    ("infer.duration_thresh=-1", "config key 'infer.duration_thresh': expected a finite number >= 0, got -1.0"),
    ("train.precision=fp64", "config key 'train.precision': expected one of 'fp32', 'bf16', 'fp16', got 'fp64'"),
    ("model.embed_kernel=2", "config key 'model.embed_kernel': expected an odd integer >= 1, got 2"),
    ("model.dropout=1", "config key 'model.dropout': expected a finite number in [0, 1), got 1.0"),
    ("model.prior_prob=1", "config key 'model.prior_prob': expected a finite number in (0, 1), got 1.0"),
    ("train.focal_alpha=1.5", "config key 'train.focal_alpha': expected a finite number <= 1, got 1.5"),
    ("train.ema_momentum=1", "config key 'train.ema_momentum': expected a finite number in [0, 1), got 1.0"),
    ("recipe.ntc.lam=0", "config key 'recipe.ntc.lam': expected a finite number in (0, 1], got 0.0"),
    ("recipe.npl.eps=0", "config key 'recipe.npl.eps': expected a finite number > 0, got 0.0"),
    ("recipe.noco.theta_c=1.01", "config key 'recipe.noco.theta_c': expected a finite number in [0, 1], got 1.01"),
    ("ray.max_failures=-2", "config key 'ray.max_failures': expected an integer >= -1, got -2"),
    ("ray.num_workers=0", "config key 'ray.num_workers': expected an integer >= 1, got 0"),
    ("weak.pseudo_min_score=-.inf", "config key 'weak.pseudo_min_score': expected a finite number, got -inf"),
    ("weak.thresholds=[0.1, 1.5]",
     "config key 'weak.thresholds': expected every element to be a finite number in [0, 1], got [0.1, 1.5]"),
    ("recipe.gaufuse.schedule=[0]",
     "config key 'recipe.gaufuse.schedule': expected every element to be an integer >= 1, got [0]"),
    # choices
    ("data.setting=full", "config key 'data.setting': expected one of 'semi', 'weak', got 'full'"),
    ("infer.nms=bogus", "config key 'infer.nms': expected one of 'soft', 'hard', 'none', 'fusion', got 'bogus'"),
    ("train.student_init=ema", "config key 'train.student_init': expected one of 'scratch', 'teacher', got 'ema'"),
    ("run.patience=-1", "config key 'run.patience': expected an integer >= 0, got -1"),
    ("tune.metric=test_mAP", "config key 'tune.metric': expected one of 'val_average_mAP', 'val_mAP_0.5', got 'test_mAP'"),
]


@pytest.mark.parametrize("override, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_value_outside_its_rule_names_key_expectation_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message


ACCEPTED = [
    "train.lr=1.0e-9", "data.labeled_ratio=1", "data.labeled_ratio=0.01", "data.val_ratio=0", "data.max_seq_len=256",
    "train.epochs=1", "train.seed=0", "model.window=1", "model.dropout=0.99", "train.focal_alpha=-1",
    "train.focal_alpha=1", "train.ema_momentum=0", "recipe.ntc.lam=1", "ray.max_failures=-1",
    "weak.pseudo_min_score=-5", "weak.thresholds=[0, 1]", "data.setting=weak", "infer.nms=none",
    "train.student_init=teacher", "run.patience=0", "model.stem_blocks=0", "model.input_dim=0",
    "model.window=0", "model.window=[9, 9, 9, 9, 9, 0]", "model.drop_path=0", "train.init_loss_norm=1.0e-3",
    "train.loss_norm_momentum=0", "infer.voting_thresh=0", "train.precision=fp16", "train.precision=bf16",
]


@pytest.mark.parametrize("override", ACCEPTED)
def test_values_at_the_edge_of_their_rule_are_accepted(override):
    load_config(None, [override])


# ---------------------------------------------------------------------------- rules across keys

CROSS = [
    (["model.num_heads=3"], "config key 'model.num_heads': expected a divisor of model.embed_dim = 128, got 3"),
    (["model.window=[9, 9]"], "config key 'model.window': expected one window or a list of 6 (one per level: "
                              "model.fpn_levels = 6), got [9, 9]"),
    # 6 levels, window 9: the last level has stride 32, x (9 - 1) = 256; with global attention there: 16 x 8
    (["data.max_seq_len=128"], "config key 'data.max_seq_len': expected a multiple of 256 (each level's stride x "
                               "its attention window - 1, as ActionFormer pads), got 128"),
    (["data.max_seq_len=200", "model.window=[9, 9, 9, 9, 9, 0]"],
     "config key 'data.max_seq_len': expected a multiple of 128 (each level's stride x its attention window - 1, "
     "as ActionFormer pads), got 200"),
    (["model.fpn_levels=4"], "config key 'model.regression_ranges': expected 4 [lo, hi] ranges (one per level: "
                             "model.fpn_levels = 4), got [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]"),
    (["model.fpn_levels=2", "model.regression_ranges=[[0, 4], [5, 100]]"],
     "config key 'model.regression_ranges': expected contiguous ranges: level 1 starting where level 0 ends (4), "
     "got [5.0, 100.0]"),
    (["model.fpn_levels=2", "model.regression_ranges=[[0, 4], [4, 4]]"],
     "config key 'model.regression_ranges': expected [lo, hi] with 0 <= lo < hi, finite, at level 1, got [4.0, 4.0]"),
    (["model.fpn_levels=1", "model.regression_ranges=[[-1, 4]]"],
     "config key 'model.regression_ranges': expected [lo, hi] with 0 <= lo < hi, finite, at level 0, got [-1.0, 4.0]"),
    (["model.fpn_levels=1", "model.regression_ranges=[[0, .inf]]"],
     "config key 'model.regression_ranges': expected [lo, hi] with 0 <= lo < hi, finite, at level 0, got [0.0, inf]"),
    (["model.fpn_levels=1", "model.regression_ranges=[[0, 4, 8]]"],
     "config key 'model.regression_ranges': expected [lo, hi] with 0 <= lo < hi, finite, at level 0, "
     "got [0.0, 4.0, 8.0]"),
    (["infer.nms=fusion"], "config key 'infer.nms': expected 'soft', 'hard' or 'none' ('fusion' is GauFuse's: it "
                           "needs recipe.gaufuse.enabled), got 'fusion'"),
    (["recipe.npl.enabled=true", "recipe.apl.enabled=true", "model.quality_heads=true"],
     "config keys 'recipe.npl.enabled' and 'recipe.apl.enabled': expected one pseudo-label selection method, "
     "got both true"),
    (["recipe.apl.enabled=true"], "config key 'model.quality_heads': expected true with recipe.apl.enabled (APL "
                                  "selects by the tIoU/tND quality heads), got false"),
    (["ray.num_workers=3"], "config key 'train.batch_size': expected a multiple of ray.num_workers = 3 (an equal "
                            "share per worker), got 4"),
    (["train.epochs=30", "recipe.gaufuse.schedule=[10, 5]"],
     "config key 'recipe.gaufuse.schedule': expected strictly increasing epochs in [1, train.epochs = 30), got [10, 5]"),
    (["train.epochs=30", "recipe.gaufuse.schedule=[10, 10]"],
     "config key 'recipe.gaufuse.schedule': expected strictly increasing epochs in [1, train.epochs = 30), got [10, 10]"),
    (["train.epochs=30", "recipe.gaufuse.schedule=[30]"],
     "config key 'recipe.gaufuse.schedule': expected strictly increasing epochs in [1, train.epochs = 30), got [30]"),
    (["weak.thresholds=[]"], "config key 'weak.thresholds': expected at least one CAS threshold, got []"),
    (["recipe.min_score_rule=val_count", "data.val_ratio=0"],
     "config key 'recipe.min_score_rule': expected 'fixed' when data.val_ratio = 0 ('val_count' counts the "
     "validation videos' instances), got 'val_count'"),
    (["run.eval_test=false", "data.val_ratio=0"], "config key 'run.eval_test': expected true when data.val_ratio = 0 "
                                                  "(a run evaluates each round on val, test or both), got false"),
]


@pytest.mark.parametrize("overrides, message", CROSS, ids=[" ".join(c[0]) for c in CROSS])
def test_rules_across_keys(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value) == message


@pytest.mark.parametrize("overrides", [
    ["model.num_heads=8"],  # 128 / 8
    ["model.fpn_levels=2", "model.regression_ranges=[[0, 4], [4, 10000]]"],
    ["infer.nms=fusion", "recipe.gaufuse.enabled=true"],
    ["recipe.apl.enabled=true", "model.quality_heads=true"],
    ["ray.num_workers=2"],  # batch 4 = 2 x 2
    ["run.eval_test=false", "data.val_ratio=0.1"],  # val alone
    ["train.epochs=30", "recipe.gaufuse.schedule=[1, 29]"],
])
def test_the_neighbours_of_the_cross_rules_are_accepted(overrides):
    load_config(None, overrides)


# --------------------------------------------------------------------------- where it is checked


def test_files_dicts_and_tune_overrides_are_all_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"^config key 'train\.lr': expected a finite number > 0, got nan$"):
        load_config(bad)
    data = to_dict(Config())
    data["model"]["window"] = 4
    message = r"^config key 'model\.window': expected an odd integer >= 1 or 0 \(global attention\), got 4$"
    with pytest.raises(ConfigError, match=message):
        from_dict(data)
    base = Config()
    with pytest.raises(ConfigError, match=r"^tune trial: config key 'train\.epochs': expected an integer >= 1, got 0$"):
        apply_overrides(base, {"train.epochs": 0}, source="tune trial")
    assert base.train.epochs == 30  # the original is untouched
    assert apply_overrides(base, {"train.epochs": 2}).train.epochs == 2


def test_range_and_choice_descriptions():
    assert Range(0, 1).describe(False) == "a finite number in [0, 1]"
    assert Range(0, 1, lo_open=True, hi_open=True).describe(True) == "an integer in (0, 1)"
    assert Range(hi=1, hi_open=True).describe(False) == "a finite number < 1"
    assert Range().accepts(-1e300) and not Range().accepts(math.nan)
    assert OneOf(("a", "b")).describe(False) == "one of 'a', 'b'"


# ------------------------------------------------------------------------------------ YAML limits


def _bomb(indent: str = "") -> str:
    """The "billion laughs": level i is a list of 9 aliases of level i-1, so level 9 stands for 9**10 strings."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "".join(f"{indent}{line}\n" for line in lines)


def test_an_alias_bomb_is_refused_while_it_is_read(tmp_path):
    # Under tune.space (a free mapping), so without the limit every later step (copying the config, saving it,
    # a message showing the value) would walk 9**10 strings.
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("tune:\n  space:\n" + _bomb(indent="    "))
    assert bomb.stat().st_size < 1000
    with pytest.raises(ConfigError, match=r"bomb\.yaml: refused: more than 100000 values with its aliases expanded"):
        load_config(bomb)
    flow = "{" + ", ".join(_bomb().splitlines()) + "}"
    with pytest.raises(ConfigError, match=r"^override 'tune\.space=\{a0: &a0 .*\.\.\.': value: refused: more than"):
        parse_override(f"tune.space={flow}")


def test_the_alias_limit_counts_expanded_nodes(tmp_path, monkeypatch):
    # root mapping 1 + key 'a' 1 + [1, 2] 3 + key 'b' 1 + *x standing for [1, 2] 3 = 9 nodes
    doc = tmp_path / "d.yaml"
    doc.write_text("a: &x [1, 2]\nb: *x\n")
    monkeypatch.setattr(config, "MAX_YAML_NODES", 9)
    assert read_yaml_mapping(doc, ConfigError) == {"a": [1, 2], "b": [1, 2]}
    monkeypatch.setattr(config, "MAX_YAML_NODES", 8)
    with pytest.raises(ConfigError, match="more than 8 values"):
        read_yaml_mapping(doc, ConfigError)


def test_yaml_semantics_are_kept_within_the_limits(tmp_path):
    doc = tmp_path / "d.yaml"
    doc.write_text("base: &b {x: 1, y: [a, b]}\nchild:\n  <<: *b\n  x: 2\nwhen: 2020-01-02\nempty:\n")
    data = read_yaml_mapping(doc, ConfigError)
    assert data["child"] == {"x": 2, "y": ["a", "b"]} and data["empty"] is None
    assert str(data["when"]) == "2020-01-02"  # yaml.safe_load's timestamp, as before
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty, ConfigError) == {}


def test_depth_recursion_and_size_limits(tmp_path, monkeypatch):
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: refused: nested deeper than 64 levels"):
        read_yaml_mapping(deep, ConfigError)
    ok = tmp_path / "ok.yaml"
    ok.write_text("x: " + "[" * 60 + "]" * 60 + "\n")  # 62 levels with the root mapping and its key
    read_yaml_mapping(ok, ConfigError)
    rec = tmp_path / "rec.yaml"
    rec.write_text("train: &t\n  epochs: *t\n")
    with pytest.raises(ConfigError, match=r"rec\.yaml: refused: recursive alias"):
        read_yaml_mapping(rec, ConfigError)
    monkeypatch.setattr(config, "MAX_YAML_BYTES", 20)
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\nb: 2\nc: 3\nd: 4\ne: 5\n")  # 25 bytes
    with pytest.raises(ConfigError, match=r"big\.yaml: refused: larger than"):
        read_yaml_mapping(big, ConfigError)
    big.write_text("a: 1\nb: 2\nc: 3\nd: 4\n")  # 20 bytes
    assert read_yaml_mapping(big, ConfigError) == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_a_binary_base_file_is_not_a_text_yaml_file(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "weights.pt")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("_base_: weights.pt\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"weights\.pt: not a text YAML file \(not UTF-8 at byte \d+\)$"):
        load_config(cfg)
    (tmp_path / "nul.yaml").write_bytes(b"train:\n  epochs: 2\x00\n")  # valid UTF-8, but binary
    with pytest.raises(ConfigError, match=r"nul\.yaml: not a text YAML file \(it contains NUL bytes\)"):
        load_config(tmp_path / "nul.yaml")
    (tmp_path / "ctl.yaml").write_bytes(b"train:\n  epochs: \x01\n")  # a control character YAML refuses
    with pytest.raises(ConfigError, match=r"ctl\.yaml: not a text YAML file \(unacceptable character #x0001"):
        load_config(tmp_path / "ctl.yaml")


def test_errors_are_one_short_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{broken}: not valid YAML: line 3, column 1: while parsing a flow sequence")
    bad_date = tmp_path / "date.yaml"
    bad_date.write_text("run:\n  name: 2020-13-45\n")  # a timestamp with month 13: the constructor's ValueError
    with pytest.raises(ConfigError, match=r"date\.yaml: not valid YAML: month must be in 1\.\.12$"):
        load_config(bad_date)
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochs=[" + ", ".join(["1"] * 5000) + "]"])
    assert str(info.value).startswith("--set: 'train.epochs': expected an integer, got [1, 1, 1")
    assert len(str(info.value)) < 150  # the 5000-element value is clipped


def test_a_yaml_1_1_string_exponent_gets_a_hint():
    # PyYAML follows YAML 1.1: 1e-4 (no dot, unsigned exponent) is text, 1.0e-4 a float.
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.lr=1e-4"])
    assert str(info.value) == "--set: 'train.lr': expected a number, got '1e-4' (YAML reads 1e-4 as text: write 1.0e-4)"
    assert load_config(None, ["train.lr=1.0e-4"]).train.lr == 1e-4
