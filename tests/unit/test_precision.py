"""Encoder precision: how ``auto`` resolves, and a bf16 linear layer that keeps fp32 around it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ragbot.encoders import precision
from ragbot.encoders.precision import Bf16Linear, resolve_precision, use_bf16_linears

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
