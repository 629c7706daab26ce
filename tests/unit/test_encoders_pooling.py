"""Pure encoder pieces on small hand-made tensors: SPLADE pooling, the fast SPLADE head, dense pooling and
length-sorted batching. No model is loaded."""

from __future__ import annotations

import math

import pytest
import torch

from ragbot.encoders.batching import check_texts, length_sorted_batches, pad_batch, padded_batches
from ragbot.encoders.dense import cls_pool, mean_pool
from ragbot.encoders.sparse import sparse_vector_from_weights, splade_max_pool
from ragbot.encoders.splade_head import SpladeHead

pytestmark = pytest.mark.unit


def loop_splade_pool(logits: list[list[list[float]]], mask: list[list[int]]) -> list[list[float]]:
    """The SPLADE formula written out: weight_v = max over real tokens t of log(1 + max(0, logit_tv))."""
    pooled = []
    for text_logits, text_mask in zip(logits, mask, strict=True):
        vocab = len(text_logits[0])
        weights = [0.0] * vocab
        for token_logits, real in zip(text_logits, text_mask, strict=True):
            if real:
                for v in range(vocab):
                    weights[v] = max(weights[v], math.log1p(max(0.0, token_logits[v])))
        pooled.append(weights)
    return pooled


def test_splade_max_pool_matches_the_formula_and_ignores_padding() -> None:
    logits = [
        [[1.0, -2.0, 0.5, 0.0], [3.0, -1.0, -0.5, 2.0], [50.0, 50.0, 50.0, 50.0]],  # last position is padding
        [[-1.0, -1.0, -1.0, -1.0], [-3.0, 0.25, -2.0, -0.1], [0.0, 0.0, 7.0, 0.0]],
    ]
    mask = [[1, 1, 0], [1, 1, 1]]
    got = splade_max_pool(torch.tensor(logits), torch.tensor(mask))
    assert torch.allclose(got, torch.tensor(loop_splade_pool(logits, mask)), atol=1e-6)
    assert got[0, 0].item() == pytest.approx(math.log1p(3.0))
    assert got[0, 1].item() == 0.0  # only negative logits on real tokens


def test_sparse_vector_keeps_positive_weights_with_increasing_ids() -> None:
    vector = sparse_vector_from_weights(torch.tensor([0.0, 0.5, 0.0, 0.0, 1.25, 0.0, 2.0]))
    assert vector.indices == (1, 4, 6)
    assert vector.values == pytest.approx((0.5, 1.25, 2.0))
    assert sparse_vector_from_weights(torch.zeros(5)).indices == ()


def random_head(vocab: int, width: int, seed: int) -> tuple[SpladeHead, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, width, generator=generator) * 0.3
    # A bias that puts many logits near zero is where a loose screen would drop or keep the wrong terms.
    bias = torch.randn(vocab, generator=generator) - 2.0
    return SpladeHead(weight, bias, block_elements=512), weight, bias


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_head_equals_pooling_over_full_logits(seed: int) -> None:
    head, weight, bias = random_head(vocab=700, width=24, seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    hidden = torch.randn(4, 9, 24, generator=generator) * 3.0
    mask = torch.tensor(
        [[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8, [0] * 9],  # full, padded, one token, no token at all
    )
    hidden[1, 4:] = 100.0  # huge padding states must not leak into the result
    expected = splade_max_pool(hidden @ weight.T + bias, mask)
    pooled = head(hidden, mask)
    assert len(pooled) == 4
    for row, (ids, weights) in enumerate(pooled):
        assert torch.all(ids[1:] > ids[:-1])
        assert torch.all(weights > 0)
        got = torch.zeros(700)
        got[ids] = weights
        assert torch.allclose(got, expected[row], atol=1e-5), row
        assert set(ids.tolist()) == set(torch.nonzero(expected[row]).squeeze(1).tolist())
    assert pooled[3][0].numel() == 0


def test_fast_head_screen_never_drops_a_positive_term() -> None:
    head, weight, bias = random_head(vocab=2000, width=32, seed=7)
    hidden = torch.randn(3, 6, 32, generator=torch.Generator().manual_seed(8))
    exact_max = (hidden @ weight.T + bias).amax(dim=1)
    upper = head.upper_bounds(hidden.reshape(18, 32), counts=torch.tensor([6, 6, 6]))
    assert torch.all(upper >= exact_max)
    # and it screens tightly: few candidates beyond the terms that really are positive
    candidates, positive = int((upper > 0).sum()), int((exact_max > 0).sum())
    assert positive <= candidates < 1.1 * positive < 0.7 * upper.numel()


def test_fast_head_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="bias"):
        SpladeHead(torch.zeros(10, 4), torch.zeros(9))
    with pytest.raises(ValueError, match="weight"):
        SpladeHead(torch.zeros(10), None)


def test_mean_pool_averages_real_tokens_only() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [7.0, 8.0]]
    assert cls_pool(hidden, mask).tolist() == [[1.0, 2.0], [5.0, 6.0]]


def test_length_sorted_batches_group_similar_lengths_and_cover_every_index() -> None:
    lengths = [50, 3, 7, 50, 2, 9, 3]
    batches = length_sorted_batches(lengths, batch_size=3)
    assert batches == [[4, 1, 6], [2, 5, 0], [3]]
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert length_sorted_batches([], batch_size=4) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches(lengths, batch_size=0)


def test_pad_batch_right_pads_with_the_pad_id() -> None:
    input_ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert input_ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_padded_batches_pad_each_batch_to_its_own_longest_text() -> None:
    ids = [[101, 5, 6, 7, 102], [101, 102], [101, 5, 102], [101, 5, 6, 7, 8, 9, 102]]
    batches = padded_batches(ids, pad_id=0, batch_size=2)
    assert [b.positions for b in batches] == [[1, 2], [0, 3]]
    assert [b.input_ids.shape for b in batches] == [(2, 3), (2, 7)]
    for batch in batches:
        for row, position in enumerate(batch.positions):
            length = int(batch.attention_mask[row].sum())
            assert batch.input_ids[row, :length].tolist() == ids[position]


def test_check_texts_rejects_a_bare_string_and_non_strings() -> None:
    assert check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="single str"):
        check_texts("one text")
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        check_texts(["fine", None])  # type: ignore[list-item]
