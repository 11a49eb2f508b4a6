"""The two kinds of model a run trains, built from the config and loaded from their checkpoints.

A stage's ``final.pt`` is a plain tensor dict (``torch.load(weights_only=True)``) with a ``kind``:
``"detector"`` (round-0 teachers and every student: plain and EMA weights, class count, feature width,
last epoch and its training metrics) or ``"weak_base"`` (the weakly-supervised round 0's MIL snippet
classifier). Loading checks the kind, the class count and the feature width against what the run
expects, so a checkpoint of another run fails with a message saying what it is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from raytal.config import Config
from raytal.core.errors import CheckpointError
from raytal.engine.checkpoint import check_checkpoint, load_checkpoint
from raytal.model.actionformer_weights import detector_weights, strip_data_parallel
from raytal.model.detector import Detector
from raytal.model.wtal import WTALModel

DETECTOR, WEAK_BASE = "detector", "weak_base"


def build_detector(cfg: Config, num_classes: int, input_dim: int) -> Detector:
    torch.manual_seed(cfg.train.seed)
    return Detector(cfg.model, num_classes, input_dim, max_seq_len=cfg.data.max_seq_len)


def load_detector(cfg: Config, path: str | Path, num_classes: int | None = None,
                  input_dim: int | None = None) -> Detector:
    """A detector from a stage's checkpoint, in eval mode (EMA weights when the checkpoint has them)."""
    state = check_checkpoint(load_checkpoint(path), path, kind=DETECTOR, num_classes=num_classes, input_dim=input_dim)
    model = build_detector(cfg, int(state["num_classes"]), int(state["input_dim"]))
    try:
        model.load_state_dict(state.get("ema") or state["model"])
    except RuntimeError as e:  # another model size: the config's model.* differs from the checkpoint's
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                     lines[0] if lines else "")  # torch's first line only says "Error(s) in loading state_dict"
        raise CheckpointError(f"{path}: its weights do not fit the configured model (model.* differs): "
                              f"{first[:300]}") from e
    return model.eval()


def load_weak_base(path: str | Path, num_classes: int | None = None, input_dim: int | None = None) -> WTALModel:
    """The MIL base model of a weak round-0 checkpoint, in eval mode."""
    state = check_checkpoint(load_checkpoint(path), path, kind=WEAK_BASE, num_classes=num_classes, input_dim=input_dim)
    model = WTALModel(int(state["input_dim"]), int(state["num_classes"]), int(state["hidden"]), float(state["dropout"]))
    model.load_state_dict(state["model"])
    return model.eval()


def weak_base_state(model: WTALModel, num_classes: int, input_dim: int, hidden: int, dropout: float) -> dict:
    return {"kind": WEAK_BASE, "model": model.state_dict(), "num_classes": num_classes, "input_dim": input_dim,
            "hidden": hidden, "dropout": dropout}


def detector_state(model: torch.nn.Module, ema: torch.nn.Module | None, num_classes: int, input_dim: int,
                   epoch: int, metrics: dict | None = None) -> dict:
    """What a stage keeps of a trained detector (the unwrapped model, not a DDP wrapper)."""
    return {
        "kind": DETECTOR,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "num_classes": num_classes,
        "input_dim": input_dim,
        "epoch": epoch,
        "metrics": {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
    }


# What ActionFormer's train.py saves: the model's and its EMA's weights (plus optimizer and scheduler state).
ACTIONFORMER_WEIGHTS = {True: "state_dict_ema", False: "state_dict"}


def import_actionformer(cfg: Config, path: str | Path, ema: bool = True) -> dict:
    """A raytal detector checkpoint (``detector_state``) of the model in ActionFormer checkpoint ``path``:
    its EMA weights (what ActionFormer's eval.py evaluates) or, with ``ema`` false, the trained ones. The
    class count and feature width are read off the weights; every other size comes from ``cfg.model``, and
    a tensor that does not fit is a CheckpointError naming the key and both shapes."""
    state = load_checkpoint(path)
    key = ACTIONFORMER_WEIGHTS[ema]
    weights = state.get(key)
    if not isinstance(weights, dict) or not weights:
        raise CheckpointError(f"{path}: no '{key}' weights (an ActionFormer train.py checkpoint holds 'state_dict' "
                              f"and 'state_dict_ema'; this one has keys {sorted(map(str, state))[:8]})")
    weights = strip_data_parallel(weights)
    sizes = {}
    for name, key_, dim in (("num_classes", "cls_head.cls_head.conv.bias", 0),
                            ("input_dim", "backbone.embd.0.conv.weight", 1)):
        tensor = weights.get(key_)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() <= dim:
            raise CheckpointError(f"{path}: key '{key_}' missing or not a tensor: it gives the model's {name} "
                                  "(is it an ActionFormer convTransformer checkpoint?)")
        sizes[name] = int(tensor.shape[dim])
    model = build_detector(cfg, sizes["num_classes"], sizes["input_dim"])
    model.load_state_dict(detector_weights(weights, model, str(path)))
    epoch = state.get("epoch")
    out = detector_state(model, None, sizes["num_classes"], sizes["input_dim"],
                         int(epoch) + 1 if isinstance(epoch, int) else 0)
    out["imported_from"] = f"ActionFormer {key} of {path}"
    return out
