"""Encoder precision: bf16 matrix products where the hardware does them natively, fp32 everywhere else.

A BERT-style encoder on a CPU spends nearly all its time in its linear layers, and for short inputs (a
query) it is bound by reading their weights from memory. Storing those weights in bf16 halves the traffic,
and CPUs with AVX512-BF16 or AMX multiply them 2-3x faster than fp32. Only the linear layers change, the
way ``torch.autocast`` would run them: inputs rounded to bf16, products accumulated in fp32, outputs handed
back in fp32, so layer norms, softmax, residual sums and pooling stay fp32. On the packaged MiniLM that
keeps every embedding within cosine 0.9999 of fp32 (``benchmarks/encode.py`` prints the figure).

On a CPU without native bf16 the same code would be emulated and slower, so ``auto`` keeps fp32 there.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["Bf16Linear", "Precision", "native_bf16", "resolve_precision", "use_bf16_linears"]

Precision = Literal["auto", "fp32", "bf16"]
_PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (AVX512-BF16 / AMX on x86, CUDA >= Ampere)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 on hardware with native bf16 products, fp32 elsewhere; explicit values pass."""
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


class Bf16Linear(nn.Module):
    """``nn.Linear`` with bf16 weights: bf16 inputs and product, output cast back to the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = linear.bias
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def use_bf16_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``module`` in place by a ``Bf16Linear``; returns how many."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Bf16Linear(child))
            replaced += 1
        else:
            replaced += use_bf16_linears(child)
    return replaced
