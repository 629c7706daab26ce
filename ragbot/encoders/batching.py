"""Tokenization and length-sorted batching shared by the encoders.

Padding is wasted compute: a batch costs as much as its longest text. Tokenizing everything once, sorting
by length and padding each batch only to its own longest member keeps the waste near zero; results go back
in the caller's order.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "PaddedBatch",
    "SerialTokenizer",
    "check_texts",
    "length_sorted_batches",
    "pad_batch",
    "padded_batches",
]


@dataclass(frozen=True, slots=True)
class PaddedBatch:
    positions: list[int]  # where each row's result goes in the caller's list
    input_ids: npt.NDArray[np.int64]  # (rows, longest)
    attention_mask: npt.NDArray[np.int64]  # 1 for real tokens, 0 for padding


def check_texts(texts: Sequence[str]) -> list[str]:
    """Reject the classic mistakes (one string instead of a list, a None inside) before any model runs."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single str; wrap it in a list")
    checked = list(texts)
    for i, text in enumerate(checked):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return checked


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped so that texts of similar length share a batch (stable for equal lengths)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Right-pad token id lists to the longest one; returns (input_ids, attention_mask)."""
    longest = max((len(seq) for seq in sequences), default=0)
    input_ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def padded_batches(token_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int) -> list[PaddedBatch]:
    batches = []
    for positions in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
        input_ids, attention_mask = pad_batch([token_ids[p] for p in positions], pad_id)
        batches.append(PaddedBatch(positions=positions, input_ids=input_ids, attention_mask=attention_mask))
    return batches


class SerialTokenizer:
    """A Hugging Face tokenizer whose calls never overlap.

    The fast tokenizer keeps truncation settings as state that every call rewrites, so a ``count_tokens``
    (no truncation) racing a truncated batch encode on another thread, say a chat query during an ingest,
    can return a truncated count or an over-long sequence. A lock costs nothing next to the model.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def token_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Ids with special tokens, truncated to ``max_length``."""
        if not texts:
            return []  # tokenizers reject an empty batch
        with self._lock:
            encoded = self._tokenizer(list(texts), truncation=True, max_length=max_length)
        return [list(ids) for ids in encoded["input_ids"]]

    def count(self, text: str) -> int:
        """Tokens without special tokens and without truncation."""
        with self._lock:
            return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def terms(self, vocab_size: int) -> list[str]:
        with self._lock:
            tokens = self._tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        return [str(token) for token in tokens]
