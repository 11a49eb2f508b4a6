"""A Linear layer fed by a LayerNorm or a GELU, keeping less for the backward pass.

Autograd keeps the input of every layer for its backward: a LayerNorm → Linear pair keeps the norm's input
*and* its output, a GELU → Linear pair the GELU's input and output, each a [B, T, C] tensor (the GELU's is
4E wide in a transformer's MLP). Here the Linear's input (the norm's or the GELU's output) is not kept but
recomputed in the backward pass from what the first layer keeps anyway: one elementwise pass instead of a
tensor held from the forward to the backward pass. The forward runs the same kernels as ``nn.LayerNorm`` /
``nn.GELU`` and ``nn.Linear`` (identical outputs), the gradients the same formulas.

Used only where it can be: with gradients on and no autocast (under autocast the activations are half
precision already, and its dtype rules stay torch's own); the callers fall back to the plain modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def recompute_applies(x: Tensor) -> bool:
    """Whether ``x`` goes through a layer that autograd will differentiate, outside autocast."""
    return torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


class _NormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, norm_w: Tensor, norm_b: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
        shape = [x.shape[-1]]
        y, mean, rstd = torch.native_layer_norm(x, shape, norm_w, norm_b, eps)
        ctx.save_for_backward(x, mean, rstd, norm_w, norm_b, w)
        ctx.eps = eps
        return F.linear(y, w, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, mean, rstd, norm_w, norm_b, w = ctx.saved_tensors
        shape = [x.shape[-1]]
        y = torch.native_layer_norm(x, shape, norm_w, norm_b, ctx.eps)[0]  # the forward's norm, again
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_w = g2.T @ y.reshape(-1, y.shape[-1]) if ctx.needs_input_grad[3] else None
        grad_b = g2.sum(0) if ctx.needs_input_grad[4] else None
        gx, gnw, gnb = torch.ops.aten.native_layer_norm_backward(
            grad @ w, x, shape, mean, rstd, norm_w, norm_b, list(ctx.needs_input_grad[:3]))
        return gx, gnw, gnb, grad_w, grad_b, None


class _GeluLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(h, w)
        return F.linear(F.gelu(h), w, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_w = g2.T @ F.gelu(h).reshape(-1, h.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_b = g2.sum(0) if ctx.needs_input_grad[2] else None
        grad_h = torch.ops.aten.gelu_backward(grad @ w, h) if ctx.needs_input_grad[0] else None
        return grad_h, grad_w, grad_b


def norm_linear(x: Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> Tensor:
    """``linear(norm(x))`` over the last dim, without keeping ``norm(x)`` for the backward pass."""
    if not recompute_applies(x):
        return linear(norm(x))
    return _NormLinear.apply(x, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps)


def gelu_linear(h: Tensor, linear: nn.Linear) -> Tensor:
    """``linear(gelu(h))`` (exact GELU), without keeping ``gelu(h)`` for the backward pass."""
    if not recompute_applies(h):
        return linear(F.gelu(h))
    return _GeluLinear.apply(h, linear.weight, linear.bias)
