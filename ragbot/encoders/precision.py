"""Encoder precision: bf16 matrix products where the hardware does them natively, fp32 everywhere else.

A BERT-style encoder on a CPU spends nearly all its time in its linear layers, and for short inputs (a
query) it is bound by reading their weights from memory. Storing those weights in bf16 halves the traffic,
and CPUs with AVX512-BF16 or AMX multiply them 2-3x faster than fp32. Only the linear layers change, the
way ``torch.autocast`` would run them: inputs rounded to bf16, products accumulated in fp32, outputs handed
back in fp32, so layer norms, softmax, residual sums and pooling stay fp32. On the packaged MiniLM that
keeps every embedding within cosine 0.9999 of fp32 (``benchmarks/encode.py`` prints the figure).

On a CPU without native bf16 the same code would be emulated and slower, so ``auto`` keeps fp32 there.

Queries can go one step further, on request (``Int8Linear``): a query is a handful of tokens, so its
encoding is nearly all weight reads, and int8 weights with one scale per output row halve them again.
Activations stay bf16 and products accumulate in fp32 (weight-only quantisation), which keeps MiniLM queries
within cosine 0.999 of fp32 and ~1.25x faster than bf16. Documents keep bf16: a batch of passages is
compute-bound, and there int8 weights buy nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = [
    "Bf16Linear",
    "Int8Linear",
    "Precision",
    "QueryPrecision",
    "int8_weights_available",
    "native_bf16",
    "resolve_precision",
    "resolve_query_precision",
    "use_bf16_linears",
    "use_int8_linears",
]

Precision = Literal["auto", "fp32", "bf16"]
QueryPrecision = Literal["auto", "fp32", "bf16", "int8"]
_PRECISIONS = ("auto", "fp32", "bf16")
_QUERY_PRECISIONS = ("auto", "fp32", "bf16", "int8")


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


def resolve_query_precision(
    precision: str, documents: Literal["fp32", "bf16"], device: torch.device
) -> Literal["fp32", "bf16", "int8"]:
    """``auto`` -> the documents' precision; ``int8`` where asked for and the int8 kernel works here.

    int8 is not the default: on three of five BEIR sets it cost hybrid nDCG@10 0.003-0.006 against bf16
    queries (dense alone unchanged), which eats most of the fused margin where dense leads (dbpedia).
    """
    if precision not in _QUERY_PRECISIONS:
        raise ValueError(f"query precision must be one of {', '.join(_QUERY_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return documents
    if precision == "int8":
        if not int8_weights_available(device):
            raise ValueError(f"int8 query weights are not available on {device} with this torch build")
        return "int8"
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
    return _replace_linears(module, Bf16Linear)


def _replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> int:
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
            replaced += 1
        else:
            replaced += _replace_linears(child, make)
    return replaced


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (one fp scale per output row), bf16 activations, fp32 accumulation.

    Rounding each weight to the nearest of 255 levels of its row's range errs by at most half a level, i.e.
    ``|w - w~| <= max|w_row| / 254`` (slightly more: the scale is stored in bf16, rounded up), about bf16's
    relative error for a row's largest weights.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach().to(torch.float32)
        # The kernel takes bf16 scales: widen by 2**-7 before rounding so the stored scale still covers the
        # row's largest weight (|w / scale| <= 127), then quantise against the scale actually stored.
        row_max = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.bfloat16).tiny)
        scale = (row_max / 127.0 * (1.0 + 2.0**-7)).to(torch.bfloat16)
        quantised = torch.round(weight / scale.to(torch.float32)[:, None]).clamp(-127, 127)
        self.register_buffer("weight", quantised.to(torch.int8).contiguous())
        self.register_buffer("scale", scale)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scale)
        if self.bias is not None:
            y = y + self.bias
        out: torch.Tensor = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return out


def use_int8_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``module`` in place by an ``Int8Linear``; returns how many."""
    return _replace_linears(module, Int8Linear)


def int8_weights_available(device: torch.device) -> bool:
    """Whether this torch build has the weight-only int8 product for ``device`` and it computes correctly
    (checked once on a small layer; a missing or broken kernel keeps the caller on bf16)."""
    return _int8_probe(device.type)


@functools.cache
def _int8_probe(device_type: str) -> bool:
    if device_type != "cpu" or not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return False
    generator = torch.Generator().manual_seed(0)  # its own generator: the global RNG is left alone
    linear: nn.Linear = nn.utils.skip_init(nn.Linear, 64, 32)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        linear.weight.copy_(torch.randn(32, 64, generator=generator) / 8)
        linear.bias.copy_(torch.randn(32, generator=generator))
    x = torch.randn(4, 64, generator=generator)
    try:
        with torch.inference_mode():
            got, exact = Int8Linear(linear)(x), linear(x)
    except (RuntimeError, NotImplementedError):
        return False
    cosine = torch.nn.functional.cosine_similarity(got, exact, dim=1)
    return bool(cosine.min() > 0.999)
