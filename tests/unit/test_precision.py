"""Encoder precision: how ``auto`` resolves, and a bf16 linear layer that keeps fp32 around it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ragbot.encoders import precision
from ragbot.encoders.precision import (
    Bf16Linear,
    Int8Linear,
    int8_weights_available,
    resolve_precision,
    resolve_query_precision,
    use_bf16_linears,
    use_int8_linears,
)

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")


def test_explicit_precisions_pass_and_unknown_ones_are_refused() -> None:
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int4", CPU)


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")


def test_bf16_linear_is_close_to_fp32_and_keeps_fp32_outside() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 32, bias=False))
    x = torch.randn(8, 64)
    with torch.inference_mode():
        exact = model(x)
    assert use_bf16_linears(model) == 2
    assert isinstance(model[0], Bf16Linear)
    assert model[0].weight.dtype == torch.bfloat16
    assert model[3].bias is None
    assert model[1].weight.dtype == torch.float32  # layer norms stay fp32
    with torch.inference_mode():
        approx = model(x)
    assert approx.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(exact, approx, dim=1)
    assert float(cosine.min()) > 0.999


def test_query_precision_auto_follows_documents_and_int8_needs_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision, "int8_weights_available", lambda device: True)
    assert resolve_query_precision("auto", "bf16", CPU) == "bf16"
    assert resolve_query_precision("auto", "fp32", CPU) == "fp32"  # exact documents keep exact queries
    assert resolve_query_precision("bf16", "fp32", CPU) == "bf16"
    assert resolve_query_precision("int8", "bf16", CPU) == "int8"
    monkeypatch.setattr(precision, "int8_weights_available", lambda device: False)
    with pytest.raises(ValueError, match="int8"):
        resolve_query_precision("int8", "bf16", CPU)
    with pytest.raises(ValueError, match="query precision"):
        resolve_query_precision("int4", "bf16", CPU)


@pytest.mark.skipif(not int8_weights_available(CPU), reason="no int8 weight-only product in this torch build")
def test_int8_linear_is_close_to_fp32_and_keeps_fp32_outside() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 32, bias=False))
    x = torch.randn(3, 5, 64)  # leading dims are kept, as for (texts, tokens, hidden)
    with torch.inference_mode():
        exact = model(x)
    assert use_int8_linears(model) == 2
    assert isinstance(model[0], Int8Linear)
    assert model[0].weight.dtype == torch.int8
    assert model[3].bias is None
    with torch.inference_mode():
        approx = model(x)
    assert approx.shape == exact.shape
    assert approx.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(exact.flatten(0, 1), approx.flatten(0, 1), dim=1)
    assert float(cosine.min()) > 0.999


def test_int8_weights_round_within_half_a_level_of_each_row() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(16, 4)
    with torch.no_grad():
        linear.weight[2].zero_()  # an all-zero row must not divide by zero
    layer = Int8Linear(linear)
    scale = layer.scale.to(torch.float32)
    restored = layer.weight.to(torch.float32) * scale[:, None]
    step = linear.weight.abs().amax(dim=1) / 127
    assert bool((scale[[0, 1, 3]] <= step[[0, 1, 3]] * 1.02).all())  # bf16 scale, rounded up a little
    assert bool(((restored - linear.weight).abs() <= scale[:, None] / 2 + 1e-7).all())
    assert bool((restored[2] == 0).all())
