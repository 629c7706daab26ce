"""Dense encoder over any Hugging Face encoder model, pooled the sentence-transformers way.

sentence-transformers itself is not a dependency: for retrieval it is a tokenizer, ``AutoModel``, a pooling
step and an L2 norm, and doing those here keeps batching (length-sorted) and threading under our control.
The pooling mode is read from a local ``1_Pooling/config.json`` when the model folder has one (mean for
all-MiniLM-L6-v2, CLS for the bge family); instruction-tuned models (e5, bge) get their query and document
prefixes through the constructor.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812

from ragbot.encoders.batching import SerialTokenizer, check_texts, padded_batches
from ragbot.encoders.packaged import resolve_model_path
from ragbot.encoders.precision import (
    Precision,
    QueryPrecision,
    resolve_precision,
    resolve_query_precision,
    use_bf16_linears,
    use_int8_linears,
)
from ragbot.encoders.query_graph import SingleTextGraph

__all__ = ["Pooling", "TransformerDenseEncoder", "cls_pool", "mean_pool"]

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(texts, tokens, dim) -> (texts, dim): the average of real-token states; padding never counts."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(texts, tokens, dim) -> (texts, dim): the first token's state (right padding assumed)."""
    del attention_mask
    return hidden[:, 0]


_POOLERS = {"mean": mean_pool, "cls": cls_pool}


def sentence_transformers_pooling(model_dir: str) -> Pooling | None:
    """The pooling a sentence-transformers folder declares, or None when it declares none we support."""
    config_path = Path(model_dir) / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    logger.warning("%s: unsupported pooling %s, falling back to mean", config_path, config)
    return None


class TransformerDenseEncoder:
    """``DenseEncoder``: ``AutoModel`` + pooling + optional L2 normalisation (cosine == dot product)."""

    def __init__(
        self,
        model: str,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        query_prefix: str = "",
        document_prefix: str = "",
        pooling: Pooling | None = None,
        normalize: bool = True,
        device: str = "cpu",
        precision: Precision = "fp32",
        query_precision: QueryPrecision = "auto",
        trace_queries: bool = True,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if max_length < 3:
            raise ValueError(f"max_length must leave room for special tokens and text, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pooling is not None and pooling not in _POOLERS:
            raise ValueError(f"pooling must be one of {sorted(_POOLERS)}, got {pooling!r}")
        self.model_name = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.normalize = normalize
        path = resolve_model_path(model)
        self.pooling: Pooling = pooling or sentence_transformers_pooling(path) or "mean"
        self._device = torch.device(device)
        self._tokenizer = SerialTokenizer(AutoTokenizer.from_pretrained(path))
        self._model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self._device).eval()
        self._dim = int(self._model.config.hidden_size)
        #: What the linear layers really run in: ``precision`` with ``auto`` resolved for this device.
        self.precision = resolve_precision(precision, self._device)
        #: The same for queries; ``int8`` queries run on their own copy of the layers (embeddings shared).
        self.query_precision = resolve_query_precision(query_precision, self.precision, self._device)
        query_model = self._model
        if self.query_precision != self.precision:
            query_model = _shared_embeddings_copy(self._model)
            _set_precision(query_model, self.query_precision)
        _set_precision(self._model, self.precision)
        self._query_model = query_model
        vocab = int(getattr(self._model.config, "vocab_size", 0) or 1)
        self._query_graph = SingleTextGraph(query_model, vocab_size=vocab) if trace_queries else None

    @property
    def dim(self) -> int:
        return self._dim

    def encode_documents(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        return self._encode([self.document_prefix + text for text in check_texts(texts)])

    def encode_query(self, text: str) -> tuple[float, ...]:
        if not isinstance(text, str):
            raise TypeError(f"query must be str, got {type(text).__name__}")
        if self._query_graph is None:
            return self._encode([self.query_prefix + text], self._query_model)[0]
        [token_ids] = self._tokenizer.token_ids([self.query_prefix + text], self.max_length)
        with torch.inference_mode():
            input_ids = torch.tensor([token_ids], device=self._device)
            hidden = self._query_graph.hidden(input_ids)
            pooled = _POOLERS[self.pooling](hidden, torch.ones_like(input_ids))
            if self.normalize:
                pooled = F.normalize(pooled, p=2.0, dim=-1)
            return tuple(pooled[0].cpu().tolist())

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count(text)

    def _encode(self, texts: list[str], model: torch.nn.Module | None = None) -> list[tuple[float, ...]]:
        model = self._model if model is None else model
        vectors: list[tuple[float, ...]] = [()] * len(texts)
        pool = _POOLERS[self.pooling]
        token_ids = self._tokenizer.token_ids(texts, self.max_length)
        with torch.inference_mode():
            for batch in padded_batches(token_ids, self._tokenizer.pad_id, self.batch_size):
                input_ids = torch.from_numpy(batch.input_ids).to(self._device)
                mask = torch.from_numpy(batch.attention_mask).to(self._device)
                pooled = pool(model(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask)
                if self.normalize:
                    pooled = F.normalize(pooled, p=2.0, dim=-1)
                for position, row in zip(batch.positions, pooled.cpu().tolist(), strict=True):
                    vectors[position] = tuple(row)
        return vectors


def _set_precision(model: torch.nn.Module, precision: str) -> None:
    if precision == "bf16":
        use_bf16_linears(model)
    elif precision == "int8":
        use_int8_linears(model)


def _shared_embeddings_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy whose embedding tables are the original's: they are looked up, not multiplied, so a
    second precision gains nothing there and a copy would double the model's largest tensors."""
    memo: dict[int, object] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            memo[id(module.weight)] = module.weight
    return copy.deepcopy(model, memo)
