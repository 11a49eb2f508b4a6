"""Video backbones as feature extractors: clips of RGB frames in, one pooled embedding per clip out.

``BackboneSpec`` says which network and where its weights come from; ``load_backbone`` builds it:

- a torchvision video model by name (``r2plus1d_18``, ``r3d_18``, ``mc3_18``, ``s3d``, ``mvit_v1_b``,
  ``mvit_v2_s``, ``swin3d_t``, ``swin3d_s``, ``swin3d_b``), with its weights from torchvision's weights
  API (``weights="DEFAULT"`` or an enum name such as ``KINETICS400_V1``: downloaded into torch's cache
  where the machine can reach the internet), from a local file (a state dict, loaded with
  ``weights_only=True``), or randomly initialised from ``seed`` (tests only; never chosen silently).
  The classifier is replaced by an identity, so the output is the pooled embedding before it (R(2+1)D /
  R3D / MC3: 512, S3D: 1024, MViT: its class token, 768, Swin3D: 768 or 1024).
  Its preprocessing is its own: the resize, crop, mean and std of its weights' transform.
- any TorchScript module (``torchscript=PATH``) taking float clips [B, 3, T, H, W] normalised with
  ``mean`` / ``std`` and returning [B, D]; its clip size is the user's to give.

``Backbone.embed`` runs the network on a batch of uint8 clips [B, T, H, W, 3] (the decoder's output):
to float in [0, 1], normalised, channels first, in inference mode.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch

from raytal.core import storage
from raytal.core.errors import CheckpointError, InputError, clip

# torchvision's video models and the attribute holding each family's classifier.
CLASSIFIERS = {"VideoResNet": "fc", "S3D": "classifier", "MViT": "head", "SwinTransformer3d": "head"}
# The mean/std torchvision's video models are trained with (their weights' transforms say so too); the
# TorchScript default.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
WEIGHTS_LIMIT = 4 << 30


@dataclass(frozen=True)
class BackboneSpec:
    """Which network (``model`` by torchvision name, or ``torchscript`` PATH) and its weights (``weights``:
    "DEFAULT", an enum name or a file; ``random_init`` for tests). ``resize`` / ``crop`` / ``mean`` /
    ``std`` override the model's own transform (None = its own; needed for TorchScript's crop)."""

    model: str = "r2plus1d_18"
    weights: str = "DEFAULT"
    torchscript: str = ""
    random_init: bool = False
    seed: int = 0
    resize: tuple[int, ...] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass
class Backbone:
    """A network ready to embed clips, with the preprocessing it expects."""

    module: torch.nn.Module
    resize: tuple[int, ...]
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def to(self, device: str | torch.device) -> "Backbone":
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    @torch.inference_mode()
    def embed(self, clips: np.ndarray) -> np.ndarray:
        """uint8 [B, T, H, W, 3] -> float32 [B, D]."""
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device)
        x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)  # [B, 3, T, H, W]
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1, 1)
        out = self.module((x - mean) / std)
        if out.ndim != 2 or out.shape[0] != clips.shape[0]:
            raise InputError(f"the backbone returned shape {tuple(out.shape)} for {clips.shape[0]} clips: expected "
                             "[B, D], a pooled embedding per clip")
        return out.float().cpu().numpy()


def video_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.video))


def _read_weights(path: str, what: str) -> bytes:
    return storage.read_at_most(path, WEIGHTS_LIMIT, CheckpointError, path, f"{WEIGHTS_LIMIT >> 30} GB ({what})")


def weights_file(spec: BackboneSpec) -> str:
    """The file the spec's network or weights come from; "" for torchvision's named weights or a random init.
    ``weights`` names a file unless it is a name of the model's weights enum (DEFAULT, KINETICS400_V1, ...)."""
    if spec.torchscript:
        return spec.torchscript
    if spec.random_init:
        return ""
    import torchvision

    named = spec.model in video_models() and spec.weights in torchvision.models.get_model_weights(spec.model).__members__
    return "" if named else spec.weights


def fingerprint(spec: BackboneSpec) -> str:
    """sha256 of the file ``weights_file`` names ("" for none): what a resumed extraction compares, so the
    features of two networks never share an output."""
    path = weights_file(spec)
    return hashlib.sha256(_read_weights(path, "weights")).hexdigest() if path else ""


def _load_state(module: torch.nn.Module, path: str, head: str) -> None:
    """A local state dict into the model whose classifier ``head`` is already gone: every other key must be
    there; the classifier's own keys are ignored (a model fine-tuned on other classes fits)."""
    try:
        state = torch.load(io.BytesIO(_read_weights(path, "weights")), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a state dict
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a weights-only loadable state dict (torch.load(weights_only=True): "
                              f"{type(e).__name__}: {clip(first, 160)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not (k == head or k.startswith(head + "."))}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit the model: {str(e).splitlines()[0]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit the model: missing {sorted(missing)[:5]}, unexpected "
                              f"{sorted(unexpected)[:5]}")


def _torchvision(spec: BackboneSpec) -> Backbone:
    import torchvision

    if spec.model not in video_models():
        raise InputError(f"--model {spec.model!r}: expected one of torchvision's video models {video_models()}")
    enum = torchvision.models.get_model_weights(spec.model)
    from_file = weights_file(spec)
    weights = enum[spec.weights] if not spec.random_init and not from_file else None
    if from_file and not storage.is_file(from_file):
        raise CheckpointError(f"--weights {from_file}: no such file, and not one of {spec.model}'s weights "
                              f"(DEFAULT, {', '.join(w.name for w in enum)})")
    with torch.random.fork_rng(devices=[]):  # a random init from the spec's seed, whoever builds it
        torch.manual_seed(spec.seed)
        try:
            module = torchvision.models.get_model(spec.model, weights=weights)
        except (OSError, RuntimeError) as e:  # urllib's errors are OSErrors
            raise InputError(f"--weights {spec.weights}: torchvision could not fetch {spec.model}'s weights "
                             f"({type(e).__name__}: {e}); download them where the internet is reachable and give "
                             "the file with --weights PATH") from None
    head = CLASSIFIERS[type(module).__name__]
    setattr(module, head, torch.nn.Identity())
    if from_file:
        _load_state(module, from_file, head)
    t = (weights or enum.DEFAULT).transforms()  # random or a file: the architecture's own preprocessing
    return Backbone(module.eval(), tuple(spec.resize or t.resize_size), tuple(spec.crop or t.crop_size),
                    tuple(spec.mean or t.mean), tuple(spec.std or t.std))


def _torchscript(spec: BackboneSpec) -> Backbone:
    if spec.crop is None:
        raise InputError("--torchscript needs --crop-size H W: the clip size the module takes")
    try:
        module = torch.jit.load(io.BytesIO(_read_weights(spec.torchscript, "TorchScript")), map_location="cpu")
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{spec.torchscript}: not a TorchScript module (torch.jit.save): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return Backbone(module.eval(), tuple(spec.resize or spec.crop), tuple(spec.crop), tuple(spec.mean or KINETICS_MEAN),
                    tuple(spec.std or KINETICS_STD))


def load_backbone(spec: BackboneSpec) -> Backbone:
    """The network ``spec`` names, in eval mode on the CPU (module docstring)."""
    return _torchscript(spec) if spec.torchscript else _torchvision(spec)
