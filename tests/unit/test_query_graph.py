"""The traced single-text graph is used only where it reproduces the eager model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ragbot.encoders.query_graph import SingleTextGraph

pytestmark = pytest.mark.unit


class TinyEncoder(nn.Module):
    def __init__(self, branch_on_length: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.layer = nn.Linear(8, 8)
        self.branch_on_length = branch_on_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.tanh(self.layer(self.embed(input_ids))) * attention_mask.unsqueeze(-1)
        if self.branch_on_length and input_ids.shape[1] > 8:  # a Python branch a trace bakes in
            hidden = hidden * 2
        return {"last_hidden_state": hidden}


def test_a_faithful_trace_is_used_and_matches_eager() -> None:
    model = TinyEncoder().eval()
    graph = SingleTextGraph(model, vocab_size=50)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9]])
    with torch.inference_mode():
        got = graph.hidden(ids)
        expected = model(ids, torch.ones_like(ids))["last_hidden_state"]
    assert graph.traced
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_trace_that_bakes_in_a_shape_branch_is_refused() -> None:
    model = TinyEncoder(branch_on_length=True).eval()
    graph = SingleTextGraph(model, vocab_size=50)
    long_ids = torch.arange(20).unsqueeze(0)
    with torch.inference_mode():
        got = graph.hidden(long_ids)
        expected = model(long_ids, torch.ones_like(long_ids))["last_hidden_state"]
    assert not graph.traced  # the probes caught the drift: eager from now on
    assert torch.equal(got, expected)
