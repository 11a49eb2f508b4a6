"""Checkpoints a user may point a job at by mistake (or malice): each gives a CheckpointError naming the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from raytal.core.errors import CheckpointError, InputError
from raytal.engine.checkpoint import check_checkpoint, checkpoint_kind, load_checkpoint, save_checkpoint


class _Payload:
    """A pickle that would create a directory when unpickled: the code-execution a checkpoint must never get."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def _detector(num_classes: int = 20, input_dim: int = 64) -> dict:
    return {"model": {"w": torch.zeros(2)}, "ema": None, "num_classes": num_classes, "input_dim": input_dim,
            "epoch": 3, "metrics": {}}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"^.*/none\.pt: checkpoint not found$"):
        load_checkpoint(tmp_path / "none.pt")
    assert issubclass(CheckpointError, InputError)  # a job reports it in one line, exit 2


def test_a_malicious_pickle_is_refused_without_running(tmp_path):
    target = tmp_path / "pwned"
    for name, write in (("plain.pt", lambda f: pickle.dump(_Payload(target), f)),
                        ("torch.pt", lambda f: torch.save({"model": _Payload(target)}, f))):
        path = tmp_path / name
        with open(path, "wb") as f:
            write(f)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        why = ("not a torch.save zip archive" if name == "plain.pt" else
               "refused by weights-only loading: it holds Python objects beyond tensors and plain data")
        assert str(info.value) == f"{path}: not a raytal checkpoint ({why})"
    assert not target.exists()


def test_random_truncated_empty_and_non_dict_files(tmp_path):
    good = Path(save_checkpoint(tmp_path / "good.pt", _detector()))
    raw = good.read_bytes()
    cases = {
        "random.pt": (bytes(range(7, 250, 3)), "(not a torch.save zip archive)"),
        "truncated.pt": (raw[: len(raw) // 2], "(RuntimeError: PytorchStreamReader failed reading zip archive: "
                                               "failed finding central directory)"),
        "empty.pt": (b"", "(not a torch.save zip archive: the file is empty)"),
        "zip header only.pt": (b"PK\x03\x04" + bytes(60), "(RuntimeError: PytorchStreamReader failed"),
    }
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: not a raytal checkpoint (") and why in str(info.value)
        assert "\n" not in str(info.value)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor\.pt: not a raytal checkpoint \(expected a dict of tensors, got Tensor\)"):
        load_checkpoint(tmp_path / "tensor.pt")
    assert load_checkpoint(good)["num_classes"] == 20


def test_check_checkpoint_says_what_the_file_is_and_what_was_expected(tmp_path):
    path = tmp_path / "runs" / "x" / "final.pt"
    state = load_checkpoint(save_checkpoint(path, _detector(num_classes=20, input_dim=64)))
    assert check_checkpoint(state, path, kind="detector", num_classes=20, input_dim=64) is state
    with pytest.raises(CheckpointError) as info:
        check_checkpoint(state, path, num_classes=5)
    assert str(info.value) == f"{path}: a detector checkpoint for 20 classes, expected 5 classes"
    with pytest.raises(CheckpointError) as info:
        check_checkpoint(state, path, num_classes=20, input_dim=32)
    assert str(info.value) == f"{path}: a detector checkpoint for D = 64 features, expected D = 32 features"
    with pytest.raises(CheckpointError) as info:
        check_checkpoint(state, path, kind="weak_base")
    assert str(info.value) == f"{path}: a detector checkpoint, expected a weak base-model checkpoint"


def test_check_checkpoint_on_other_kinds(tmp_path):
    weak = {"kind": "weak_base", "model": {}, "num_classes": 5, "input_dim": 32, "hidden": 128, "dropout": 0.5}
    assert checkpoint_kind(weak) == "weak_base"
    with pytest.raises(CheckpointError, match=r"w\.pt: a weak base-model checkpoint, expected a detector checkpoint$"):
        check_checkpoint(weak, "w.pt", kind="detector")
    trainer = {"model": {}, "ema": {}, "optimizer": {}, "scheduler": {}, "epoch": 2, "rng": {}}
    assert checkpoint_kind(trainer) == "trainer"
    with pytest.raises(CheckpointError) as info:
        check_checkpoint(trainer, "last.pt", num_classes=5)
    assert str(info.value) == ("last.pt: a training-state checkpoint without a valid 'num_classes' (got None), "
                               "expected 5 classes")
    with pytest.raises(CheckpointError, match=r"^o\.pt: not a raytal checkpoint \(expected model weights and their "
                                              r"shapes, got keys \['a', 'b'\]\)$"):
        check_checkpoint({"a": 1, "b": torch.zeros(1)}, "o.pt")
    with pytest.raises(CheckpointError, match="not a raytal checkpoint"):
        check_checkpoint({"kind": "something_else", "model": {}}, "k.pt")
