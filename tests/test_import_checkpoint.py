"""jobs/import_checkpoint.py: an ActionFormer train.py checkpoint becomes a raytal detector checkpoint.

The checkpoint files here are written by the test itself with ActionFormer's layout, key by key as its code
names them (happyharrycn/actionformer_release, libs/modeling: ConvTransformerBackbone, TransformerBlock with
LocalMaskedMHCA and AffineDropPath, FPNIdentity, PtTransformerClsHead / RegHead; DataParallel's ``module.``
prefix; train.py's ``state_dict`` / ``state_dict_ema``), not by raytal's mapping.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from raytal.cli import run_job
from raytal.config import load_config
from raytal.core.errors import CheckpointError
from raytal.selftrain.models import import_actionformer, load_detector

REPO = Path(__file__).resolve().parents[1]
E, D, C = 8, 6, 3  # embedding = head width, feature width, classes
SIZES = ["model.embed_dim=8", "model.head_dim=8", "model.num_heads=2", "model.embed_layers=1", "model.stem_blocks=1",
         "model.fpn_levels=2", "model.window=3", "model.head_layers=2", "model.drop_path=0.1",
         "model.regression_ranges=[[0, 4], [4, 10000]]", "data.max_seq_len=16"]


def actionformer_state(seed: int) -> dict[str, torch.Tensor]:
    """ActionFormer's state dict for that size: backbone_arch (1, 1, 1), embd_with_ln, droppath > 0, identity
    neck with LayerNorm, head_num_layers 2 with LayerNorm; each tensor a distinct pattern of numbers."""
    shapes: dict[str, tuple[int, ...]] = {"backbone.embd.0.conv.weight": (E, D, 3)}
    ln = (1, E, 1)
    shapes["backbone.embd_norm.0.weight"] = shapes["backbone.embd_norm.0.bias"] = ln
    for block in ("backbone.stem.0", "backbone.branch.0"):
        for norm in ("ln1", "ln2", "attn.query_norm", "attn.key_norm", "attn.value_norm"):
            shapes[f"{block}.{norm}.weight"] = shapes[f"{block}.{norm}.bias"] = ln
        for part in ("query", "key", "value"):
            shapes[f"{block}.attn.{part}_conv.conv.weight"] = (E, 1, 3)  # depthwise, no bias
        for part in ("query", "key", "value", "proj"):
            shapes[f"{block}.attn.{part}.weight"], shapes[f"{block}.attn.{part}.bias"] = (E, E, 1), (E,)
        shapes[f"{block}.mlp.0.weight"], shapes[f"{block}.mlp.0.bias"] = (4 * E, E, 1), (4 * E,)
        shapes[f"{block}.mlp.3.weight"], shapes[f"{block}.mlp.3.bias"] = (E, 4 * E, 1), (E,)
        shapes[f"{block}.drop_path_attn.scale"] = shapes[f"{block}.drop_path_mlp.scale"] = ln
    for level in range(2):
        shapes[f"neck.fpn_norms.{level}.weight"] = shapes[f"neck.fpn_norms.{level}.bias"] = ln
        shapes[f"reg_head.scale.{level}.scale"] = ()
    for head in ("cls_head", "reg_head"):
        shapes[f"{head}.head.0.conv.weight"] = (E, E, 3)
        shapes[f"{head}.norm.0.weight"] = shapes[f"{head}.norm.0.bias"] = ln
    shapes["cls_head.cls_head.conv.weight"], shapes["cls_head.cls_head.conv.bias"] = (C, E, 3), (C,)
    shapes["reg_head.offset_head.conv.weight"], shapes["reg_head.offset_head.conv.bias"] = (2, E, 3), (2,)
    g = torch.Generator().manual_seed(seed)
    return {f"module.{k}": torch.randn(s, generator=g) for k, s in shapes.items()}


def write_actionformer(path: Path, **change) -> dict:
    """An ActionFormer train.py checkpoint: the model (seed 0) and its EMA (seed 1), optimizer and scheduler."""
    state = {"epoch": 34, "state_dict": actionformer_state(0), "state_dict_ema": actionformer_state(1),
             "scheduler": {"last_epoch": 700, "base_lrs": [1e-4, 1e-4]},
             "optimizer": {"state": {}, "param_groups": [{"lr": 1e-8, "weight_decay": 0.05, "params": [0, 1]}]}}
    state.update(change)
    torch.save(state, path)
    return state


def test_import_maps_every_actionformer_tensor(tmp_path):
    cfg = load_config(None, SIZES)
    saved = write_actionformer(tmp_path / "epoch_034.pth.tar")
    af = saved["state_dict_ema"]
    state = import_actionformer(cfg, tmp_path / "epoch_034.pth.tar")
    assert state["kind"] == "detector" and state["num_classes"] == C and state["input_dim"] == D
    assert state["epoch"] == 35  # ActionFormer's epoch 34 is the 35th done
    w = state["model"]
    assert sum(v.numel() for v in w.values()) == sum(v.numel() for v in af.values())  # nothing left over
    # 1x1 convs [out, in, 1] -> Linear [out, in]; [1, C, 1] norms and scales -> [C]; scalars stay scalars
    assert torch.equal(w["backbone.stem.0.attn.q.weight"], af["module.backbone.stem.0.attn.query.weight"][..., 0])
    assert torch.equal(w["backbone.branch.0.attn.proj.bias"], af["module.backbone.branch.0.attn.proj.bias"])
    assert torch.equal(w["backbone.branch.0.attn.v_conv"], af["module.backbone.branch.0.attn.value_conv.conv.weight"])
    assert torch.equal(w["backbone.stem.0.attn.k_norm.bias"], af["module.backbone.stem.0.attn.key_norm.bias"][0, :, 0])
    assert torch.equal(w["backbone.stem.0.mlp.3.weight"], af["module.backbone.stem.0.mlp.3.weight"][..., 0])
    assert torch.equal(w["backbone.branch.0.path_mlp.scale"], af["module.backbone.branch.0.drop_path_mlp.scale"][0, :, 0])
    assert torch.equal(w["backbone.embed_norm.0.norm.weight"], af["module.backbone.embd_norm.0.weight"][0, :, 0])
    assert torch.equal(w["backbone.neck.1.bias"], af["module.neck.fpn_norms.1.bias"][0, :, 0])
    assert torch.equal(w["heads.reg_tower.norms.0.norm.weight"], af["module.reg_head.norm.0.weight"][0, :, 0])
    assert torch.equal(w["heads.cls_out.conv.bias"], af["module.cls_head.cls_head.conv.bias"])
    assert torch.equal(w["heads.reg_out.conv.weight"], af["module.reg_head.offset_head.conv.weight"])
    assert torch.equal(w["heads.scales.1"], af["module.reg_head.scale.1.scale"])
    # --no-ema takes the trained weights; a checkpoint saved without DataParallel (no prefix) reads the same
    plain = import_actionformer(cfg, tmp_path / "epoch_034.pth.tar", ema=False)["model"]
    assert torch.equal(plain["heads.scales.0"], saved["state_dict"]["module.reg_head.scale.0.scale"])
    unwrapped = {k[len("module."):]: v for k, v in af.items()}
    write_actionformer(tmp_path / "single_gpu.pth.tar", state_dict_ema=unwrapped)
    again = import_actionformer(cfg, tmp_path / "single_gpu.pth.tar")["model"]
    assert all(torch.equal(again[k], w[k]) for k in w)


def _job() -> ModuleType:
    key = "_import_checkpoint_job"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "jobs" / "import_checkpoint.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _argv(*extra: str) -> list[str]:
    return [arg for s in SIZES for arg in ("--set", s)] + list(extra)


def test_job_writes_a_checkpoint_that_loads_as_a_detector(tmp_path, capsys):
    write_actionformer(tmp_path / "af.pth.tar")
    out = tmp_path / "imported.pt"
    rc = run_job(_job().main, _argv("--config", str(REPO / "configs" / "tiny_supervised.yaml"),
                                    "--checkpoint", str(tmp_path / "af.pth.tar"), "--out", str(out)))
    assert rc == 0, capsys.readouterr().err
    assert "3 classes, D = 6" in capsys.readouterr().out
    cfg = load_config(REPO / "configs" / "tiny_supervised.yaml", SIZES)
    model = load_detector(cfg, out, num_classes=C, input_dim=D)  # what run.teacher and predict.py do
    feats, mask = torch.randn(1, D, 12), torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        assert torch.isfinite(model(feats, mask).cls_logits).all()


@pytest.mark.parametrize("case, message", [
    ("shape", "key 'backbone.stem.0.attn.query.weight': expected shape (8, 8, 1) (model.* of the config), found (8, 8)"),
    ("missing", "key 'backbone.branch.0.drop_path_mlp.scale' missing: expected shape (1, 8, 1)"),
    ("extra", "1 ActionFormer key(s) the configured model has no place for: 'backbone.stem.0.attn.rel_pe' (1, 1, 2, 3)"),
    ("no_ema", "no 'state_dict_ema' weights (an ActionFormer train.py checkpoint holds 'state_dict' and "
               "'state_dict_ema'"),
    ("wider", "key 'backbone.embd.0.conv.weight': expected shape (16, 6, 3) (model.* of the config), found (8, 6, 3)"),
])
def test_a_key_that_does_not_fit_is_named_with_both_shapes(tmp_path, capsys, case, message):
    af = actionformer_state(1)
    sets = []
    if case == "shape":
        af["module.backbone.stem.0.attn.query.weight"] = torch.zeros(E, E)
    elif case == "missing":
        del af["module.backbone.branch.0.drop_path_mlp.scale"]
    elif case == "extra":
        af["module.backbone.stem.0.attn.rel_pe"] = torch.zeros(1, 1, 2, 3)
    elif case == "wider":
        sets = ["--set", "model.embed_dim=16"]
    path = tmp_path / "af.pth.tar"
    write_actionformer(path, state_dict_ema=af)
    if case == "no_ema":
        torch.save({"epoch": 3, "state_dict": af}, path)
    rc = run_job(_job().main, _argv("--config", str(REPO / "configs" / "tiny_supervised.yaml"), *sets,
                                    "--checkpoint", str(path), "--out", str(tmp_path / "x.pt")))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        import_actionformer(load_config(None, SIZES + sets[1:]), path)
