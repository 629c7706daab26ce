"""SPLADE learned-sparse encoder over any Hugging Face masked LM (hub name, local path or packaged model).

The pooling itself is the pure function ``splade_max_pool`` (the fastembed / naver formulation). The
encoder does not run it over full logits: ``SpladeHead`` computes the same vectors from the hidden states
several times faster. At load, both paths encode a probe text; a checkpoint whose head does not fit the
fast path (an unusual output layer) keeps the full-logits path instead of returning wrong vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from ragbot.encoders.batching import SerialTokenizer, check_texts, pad_batch, padded_batches
from ragbot.encoders.packaged import resolve_model_path
from ragbot.encoders.query_graph import SingleTextGraph
from ragbot.encoders.splade_head import SpladeHead
from ragbot.types import SparseVector

__all__ = ["SpladeEncoder", "sparse_vector_from_weights", "splade_max_pool"]

logger = logging.getLogger(__name__)

#: Largest difference allowed between the fast path and full logits on the load-time probe.
_PROBE_TOLERANCE = 1e-4
_NO_TERMS = SparseVector(indices=(), values=())
_PROBE_TEXTS = (
    "Learned sparse retrieval expands a passage with related vocabulary terms.",
    "SPLADE",
)


def splade_max_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(texts, tokens, vocab) logits -> (texts, vocab): max over real tokens of log(1 + relu(logit))."""
    activated = torch.log1p(torch.relu(logits))
    return (activated * attention_mask.unsqueeze(-1).to(activated.dtype)).amax(dim=1)


def sparse_vector_from_weights(weights: torch.Tensor) -> SparseVector:
    """Keep the positive entries of a 1-d weight vector, ids increasing."""
    indices = torch.nonzero(weights > 0).squeeze(1)
    return SparseVector(indices=tuple(indices.tolist()), values=tuple(weights[indices].tolist()))


class SpladeEncoder:
    """``SparseEncoder`` backed by ``AutoModelForMaskedLM`` with SPLADE max pooling.

    Queries and documents share the model (SPLADE-tiny has one); they are separate calls so a model with a
    distinct query encoder can slot in without touching callers. ``fast_head=False`` keeps the full-logits
    computation (the reference the fast head is tested against).
    """

    def __init__(
        self,
        model: str,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        device: str = "cpu",
        fast_head: bool = True,
        trace_queries: bool = True,
    ) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        if max_length < 3:
            raise ValueError(f"max_length must leave room for special tokens and text, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.max_length = max_length
        self.batch_size = batch_size
        self._device = torch.device(device)
        path = resolve_model_path(model)
        self._tokenizer = SerialTokenizer(AutoTokenizer.from_pretrained(path))
        mlm = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32)
        self._model = mlm.to(self._device).eval()
        output_layer = self._model.get_output_embeddings()
        vocab_size = int(output_layer.weight.shape[0])
        self._vocab = self._tokenizer.terms(vocab_size)
        self._head = self._install_fast_head(output_layer) if fast_head else None
        # Traced only with the fast head: its output is then the small hidden states, not 30k logits.
        self._query_graph = (
            SingleTextGraph(self._model, vocab_size=vocab_size)
            if trace_queries and self._head is not None
            else None
        )

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def uses_fast_head(self) -> bool:
        return self._head is not None

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return self._encode(check_texts(texts))

    def encode_query(self, text: str) -> SparseVector:
        if not isinstance(text, str):
            raise TypeError(f"query must be str, got {type(text).__name__}")
        if self._query_graph is None or self._head is None:
            return self._encode([text])[0]
        [token_ids] = self._tokenizer.token_ids([text], self.max_length)
        with torch.inference_mode():
            input_ids = torch.tensor([token_ids], device=self._device)
            [(ids, weights)] = self._head(self._query_graph.hidden(input_ids), torch.ones_like(input_ids))
            return SparseVector(indices=tuple(ids.tolist()), values=tuple(weights.tolist()))

    def vocabulary_term(self, index: int) -> str:
        if not 0 <= index < len(self._vocab):
            raise IndexError(f"term id {index} outside the vocabulary [0, {len(self._vocab)})")
        return self._vocab[index]

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count(text)

    def _encode(self, texts: list[str]) -> list[SparseVector]:
        vectors = [_NO_TERMS] * len(texts)
        token_ids = self._tokenizer.token_ids(texts, self.max_length)
        with torch.inference_mode():
            for batch in padded_batches(token_ids, self._tokenizer.pad_id, self.batch_size):
                input_ids = torch.from_numpy(batch.input_ids).to(self._device)
                mask = torch.from_numpy(batch.attention_mask).to(self._device)
                for position, vector in zip(batch.positions, self._pool(input_ids, mask), strict=True):
                    vectors[position] = vector
        return vectors

    def _pool(self, input_ids: torch.Tensor, mask: torch.Tensor) -> list[SparseVector]:
        output = self._model(input_ids=input_ids, attention_mask=mask).logits
        if self._head is None:
            return [sparse_vector_from_weights(row) for row in splade_max_pool(output, mask).cpu()]
        return [
            SparseVector(indices=tuple(ids.tolist()), values=tuple(weights.tolist()))
            for ids, weights in self._head(output, mask)
        ]

    def _install_fast_head(self, output_layer: nn.Module) -> SpladeHead | None:
        """Swap the vocabulary projection for ``SpladeHead`` if, on a probe, it matches full logits."""
        if not isinstance(output_layer, nn.Linear):
            logger.warning(
                "SPLADE %s: output layer is %s, using full logits", self.model_name, type(output_layer)
            )
            return None
        name = next(n for n, module in self._model.named_modules() if module is output_layer)
        ids = self._tokenizer.token_ids(_PROBE_TEXTS, self.max_length)
        input_ids, mask = (
            torch.from_numpy(a).to(self._device) for a in pad_batch(ids, self._tokenizer.pad_id)
        )
        head = SpladeHead(output_layer.weight, output_layer.bias)
        with torch.inference_mode():
            expected = splade_max_pool(self._model(input_ids=input_ids, attention_mask=mask).logits, mask)
            self._model.set_submodule(name, nn.Identity())
            try:
                got = torch.zeros_like(expected)
                for row, (term_ids, weights) in enumerate(
                    head(self._model(input_ids=input_ids, attention_mask=mask).logits, mask)
                ):
                    got[row, term_ids] = weights
                error = float((got - expected).abs().max())
            except (RuntimeError, ValueError) as exc:  # a head that adds terms after the projection
                error, reason = float("inf"), repr(exc)
            else:
                reason = f"max difference {error:.2e} on the probe"
        if error > _PROBE_TOLERANCE:
            self._model.set_submodule(name, output_layer)
            logger.warning("SPLADE %s: fast head rejected (%s), using full logits", self.model_name, reason)
            return None
        return head
