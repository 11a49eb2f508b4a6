"""Video backbones as feature extractors (raytal.video.backbones): the embedding before the classifier, the
model's own preprocessing, weights from a file (weights-only, classifier keys ignored), and clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torchvision = pytest.importorskip("torchvision", reason="the `video` extra (torchvision) is not installed: make video")
import torch  # noqa: E402

from raytal.core.errors import CheckpointError, InputError  # noqa: E402
from raytal.video.backbones import CLASSIFIERS, BackboneSpec, fingerprint, load_backbone  # noqa: E402


def _clips(n: int, frames: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, frames, size, size, 3), np.uint8)


@pytest.mark.parametrize("name, dim, frames, size", [("mc3_18", 512, 4, 32), ("swin3d_t", 768, 2, 64)])
def test_the_feature_is_the_pooled_embedding_before_the_classifier(name, dim, frames, size):
    net = load_backbone(BackboneSpec(name, random_init=True))
    assert isinstance(getattr(net.module, CLASSIFIERS[type(net.module).__name__]), torch.nn.Identity)
    feats = net.embed(_clips(3, frames, size))
    assert feats.shape == (3, dim) and feats.dtype == np.float32
    # one clip alone gives its row of the batch (eval mode: no batch statistics)
    assert np.abs(net.embed(_clips(3, frames, size)[1:2])[0] - feats[1]).max() < 1e-4


def test_preprocessing_is_the_weights_transform_and_overrides_win():
    mc3 = load_backbone(BackboneSpec("mc3_18", random_init=True))
    t = torchvision.models.video.MC3_18_Weights.DEFAULT.transforms()
    assert (mc3.resize, mc3.crop, mc3.mean, mc3.std) == (tuple(t.resize_size), tuple(t.crop_size), tuple(t.mean),
                                                       tuple(t.std))
    assert (mc3.resize, mc3.crop) == ((128, 171), (112, 112))
    own = load_backbone(BackboneSpec("mc3_18", random_init=True, resize=(40,), crop=(32, 32), mean=(0.5,) * 3))
    assert (own.resize, own.crop, own.mean, own.std) == ((40,), (32, 32), (0.5,) * 3, tuple(t.std))


def test_embed_normalises_with_the_models_mean_and_std():
    net = load_backbone(BackboneSpec("mc3_18", random_init=True, seed=1))
    clips = _clips(2, 4, 32)
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255.0
    mean, std = torch.tensor(net.mean).view(1, 3, 1, 1, 1), torch.tensor(net.std).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        want = net.module((x - mean) / std).numpy()
    assert np.abs(net.embed(clips) - want).max() < 1e-5


def test_weights_from_a_file_load_without_their_classifier(tmp_path):
    torch.manual_seed(5)
    trained = torchvision.models.video.mc3_18(num_classes=7)  # fine-tuned on 7 classes: its fc does not matter
    torch.save(trained.state_dict(), tmp_path / "mc3.pt")
    net = load_backbone(BackboneSpec("mc3_18", weights=str(tmp_path / "mc3.pt")))
    trained.fc = torch.nn.Identity()
    clips = _clips(2, 4, 32)
    with torch.no_grad():
        x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255.0
        m, s = torch.tensor(net.mean).view(1, 3, 1, 1, 1), torch.tensor(net.std).view(1, 3, 1, 1, 1)
        want = trained.eval()((x - m) / s).numpy()
    assert np.abs(net.embed(clips) - want).max() < 1e-5
    assert len(fingerprint(BackboneSpec("mc3_18", weights=str(tmp_path / "mc3.pt")))) == 64
    assert fingerprint(BackboneSpec("mc3_18", weights="DEFAULT")) == ""  # torchvision's own: nothing to hash


def test_bad_weights_are_clear_errors(tmp_path):
    state = torchvision.models.video.mc3_18().state_dict()
    del state["layer1.0.conv1.0.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt: does not fit the model: missing \['layer1\.0\.conv1\.0\.weight'\]"):
        load_backbone(BackboneSpec("mc3_18", weights=str(tmp_path / "partial.pt")))
    (tmp_path / "pickled.pt").write_bytes(pickle.dumps({"weights": object()}))
    with pytest.raises(CheckpointError, match=r"pickled\.pt: not a weights-only loadable state dict"):
        load_backbone(BackboneSpec("mc3_18", weights=str(tmp_path / "pickled.pt")))
    with pytest.raises(CheckpointError, match=r"KINETICS_V9: no such file, and not one of mc3_18's weights"):
        load_backbone(BackboneSpec("mc3_18", weights="KINETICS_V9"))
    with pytest.raises(InputError, match=r"--model 'resnet50': expected one of torchvision's video models"):
        load_backbone(BackboneSpec("resnet50", random_init=True))
    with pytest.raises(InputError, match="--torchscript needs --crop-size"):
        load_backbone(BackboneSpec(torchscript=str(tmp_path / "m.pt")))
