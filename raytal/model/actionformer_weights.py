"""ActionFormer checkpoints as raytal detector weights.

ActionFormer's ``train.py`` saves ``{"epoch", "state_dict", "state_dict_ema", "optimizer", "scheduler"}``
with the weights of ``PtTransformer`` (convTransformer backbone, identity neck) wrapped in
``nn.DataParallel`` (keys start with ``module.``). Its layers are raytal's (``raytal.model.backbone``), in a
[B, C, T] layout: LayerNorm weights and drop-path scales are [1, C, 1], 1x1 convolutions [out, in, 1] where
raytal has [C] and Linear [out, in]. ``detector_weights`` renames and reshapes every tensor and refuses any
that does not fit, naming the key, the shape expected and the shape found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from raytal.core.errors import CheckpointError
from raytal.model.backbone import ScaledDropPath

# raytal name (regex over a state-dict key) -> ActionFormer name; applied in order, first match wins.
_RENAMES: list[tuple[str, str]] = [
    (r"^backbone\.embed\.(\d+)\.conv\.weight$", r"backbone.embd.\1.conv.weight"),
    (r"^backbone\.embed_norm\.(\d+)\.norm\.(weight|bias)$", r"backbone.embd_norm.\1.\2"),
    (r"^backbone\.(stem|branch)\.(\d+)\.attn\.(q|k|v)_conv$", r"backbone.\1.\2.attn.\3_conv.conv.weight"),
    (r"^backbone\.(stem|branch)\.(\d+)\.attn\.(q|k|v)_norm\.(weight|bias)$", r"backbone.\1.\2.attn.\3_norm.\4"),
    (r"^backbone\.(stem|branch)\.(\d+)\.attn\.(q|k|v|proj)\.(weight|bias)$", r"backbone.\1.\2.attn.\3.\4"),
    (r"^backbone\.(stem|branch)\.(\d+)\.(ln1|ln2)\.(weight|bias)$", r"backbone.\1.\2.\3.\4"),
    (r"^backbone\.(stem|branch)\.(\d+)\.mlp\.(0|3)\.(weight|bias)$", r"backbone.\1.\2.mlp.\3.\4"),
    (r"^backbone\.(stem|branch)\.(\d+)\.path_(attn|mlp)\.scale$", r"backbone.\1.\2.drop_path_\3.scale"),
    (r"^backbone\.neck\.(\d+)\.(weight|bias)$", r"neck.fpn_norms.\1.\2"),
    (r"^heads\.(cls|reg)_tower\.convs\.(\d+)\.conv\.weight$", r"\1_head.head.\2.conv.weight"),
    (r"^heads\.(cls|reg)_tower\.norms\.(\d+)\.norm\.(weight|bias)$", r"\1_head.norm.\2.\3"),
    (r"^heads\.cls_out\.conv\.(weight|bias)$", r"cls_head.cls_head.conv.\1"),
    (r"^heads\.reg_out\.conv\.(weight|bias)$", r"reg_head.offset_head.conv.\1"),
    (r"^heads\.scales\.(\d+)$", r"reg_head.scale.\1.scale"),
]
# ActionFormer spells the attention's parts out in full.
_ATTN_PARTS = {"q": "query", "k": "key", "v": "value", "proj": "proj"}


def actionformer_key(key: str) -> str | None:
    """The ActionFormer state-dict key of raytal's ``key`` (None: raytal-only, e.g. APL's quality head)."""
    for pattern, repl in _RENAMES:
        if re.match(pattern, key):
            name = re.sub(pattern, repl, key)
            return re.sub(r"\.attn\.(q|k|v|proj)(_conv|_norm)?\.",
                          lambda m: f".attn.{_ATTN_PARTS[m[1]]}{m[2] or ''}.", name)
    return None


def actionformer_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shape ActionFormer stores each of ``model``'s state-dict tensors in: its LayerNorm and
    AffineDropPath work on [B, C, T] ([1, C, 1] weights), its 1x1 Conv1d stand where raytal has Linear."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, (nn.LayerNorm, ScaledDropPath)):
            for p, value in module.named_parameters(recurse=False):
                shapes[prefix + p] = (1, value.shape[0], 1)
        elif isinstance(module, nn.Linear):
            shapes[prefix + "weight"] = (*module.weight.shape, 1)
    return shapes


def strip_data_parallel(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without ``nn.DataParallel`` / DDP's ``module.`` prefix (on every key or none)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def detector_weights(af_state: Mapping[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict (raytal names and shapes) from ActionFormer's ``af_state``.

    Every raytal tensor must have its ActionFormer counterpart with the shape that layout gives, and every
    ActionFormer tensor must be used; otherwise CheckpointError naming ``source``, the key and both shapes.
    """
    af_state = strip_data_parallel(af_state)
    expected_shapes = actionformer_shapes(model)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, ours in model.state_dict().items():
        af_key = actionformer_key(key)
        if af_key is None:
            raise CheckpointError(f"{source}: the configured model has '{key}' {tuple(ours.shape)}, which ActionFormer "
                                  "models do not have (APL's quality heads: import with model.quality_heads false)")
        if af_key not in af_state:
            raise CheckpointError(f"{source}: key '{af_key}' missing: expected shape {expected_shapes[key]} for "
                                  f"raytal's '{key}' (is it an ActionFormer convTransformer checkpoint of the "
                                  "configured size?)")
        found = af_state[af_key]
        expected = expected_shapes[key]
        if not isinstance(found, torch.Tensor) or tuple(found.shape) != expected:
            got = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
            raise CheckpointError(f"{source}: key '{af_key}': expected shape {expected} (model.* of the config), "
                                  f"found {got}")
        out[key] = found.detach().reshape(ours.shape).to(ours.dtype).clone()
        used.add(af_key)
    unused = sorted(set(af_state) - used)
    if unused:
        shapes = ", ".join(f"'{k}' {tuple(af_state[k].shape) if isinstance(af_state[k], torch.Tensor) else ''}"
                           for k in unused[:3])
        raise CheckpointError(f"{source}: {len(unused)} ActionFormer key(s) the configured model has no place for: "
                              f"{shapes}{' ...' if len(unused) > 3 else ''} (another architecture, or model.* differs)")
    return out
