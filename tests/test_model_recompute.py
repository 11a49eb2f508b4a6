"""raytal.model.recompute: the same outputs and gradients as the plain layers, with less kept for backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raytal.model.recompute import gelu_linear, norm_linear


def _grads(fn, *tensors):
    out = fn()
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))  # a gradient that is not uniform
    return out.detach(), [t.grad.clone() for t in tensors]


def test_norm_linear_matches_layernorm_then_linear():
    torch.manual_seed(0)
    norm, lin = nn.LayerNorm(6), nn.Linear(6, 5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 7, 6, requires_grad=True)
    params = [x, norm.weight, norm.bias, lin.weight, lin.bias]
    fused, g_fused = _grads(lambda: norm_linear(x, norm, lin), *params)
    for p in params:
        p.grad = None
    plain, g_plain = _grads(lambda: lin(norm(x)), *params)
    assert torch.equal(fused, plain)  # the same kernels forward
    for a, b in zip(g_fused, g_plain):
        assert torch.allclose(a, b, atol=1e-6)


def test_gelu_linear_matches_gelu_then_linear_and_keeps_less():
    torch.manual_seed(0)
    lin = nn.Linear(8, 3)
    h = torch.randn(2, 5, 8, requires_grad=True)
    fused, g_fused = _grads(lambda: gelu_linear(h, lin), h, lin.weight, lin.bias)
    h.grad = lin.weight.grad = lin.bias.grad = None
    plain, g_plain = _grads(lambda: lin(F.gelu(h)), h, lin.weight, lin.bias)
    assert torch.equal(fused, plain)
    for a, b in zip(g_fused, g_plain):
        assert torch.allclose(a, b, atol=1e-6)
    # what autograd keeps: the plain pair holds h and gelu(h) (2 x 80 floats); the fused one h only
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
        gelu_linear(h, lin)
    assert sorted(kept) == [24, 80]  # h and the weight
    with torch.no_grad():  # nothing to keep: the plain layers run
        assert torch.equal(gelu_linear(h, lin), plain)
