"""Numeric precision of training and inference: ``train.precision`` as torch's autocast idiom.

fp32 runs as is. bf16 and fp16 run the forward pass under ``torch.autocast`` in that dtype (matmuls and
convolutions in half precision, reductions such as softmax and LayerNorm in fp32 by autocast's own
rules); the weights, the losses and the optimizer state stay fp32. fp16's narrow exponent range needs
loss scaling: ``grad_scaler`` is a ``torch.amp.GradScaler`` enabled for fp16 only (it skips a step whose
gradients overflowed and lowers the scale). TF32 (``train.tf32``) lets fp32 matmuls and convolutions use
the tensor cores of a CUDA GPU (Ampere and later), a process-wide switch.
"""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in for ``precision`` on ``device``."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {tuple(AUTOCAST_DTYPES)}, got {precision!r}")
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16; disabled (a pass-through) for fp32 and bf16."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA fp32 matmuls and cuDNN convolutions (no effect without a GPU)."""
    mode = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
