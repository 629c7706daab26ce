"""Length-sorted batching shared by the encoders.

Padding is wasted compute: a batch costs as much as its longest text. Tokenizing everything once, sorting
by length and padding each batch only to its own longest member keeps the waste near zero, and results go
back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PaddedBatch", "check_texts", "length_sorted_batches", "pad_batch", "tokenized_batches"]


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


def tokenized_batches(
    tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int
) -> Iterator[PaddedBatch]:
    """Tokenize once (truncating to ``max_length``, special tokens included), then yield sorted batches."""
    ids: list[list[int]] = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for positions in length_sorted_batches([len(seq) for seq in ids], batch_size):
        input_ids, attention_mask = pad_batch([ids[p] for p in positions], pad_id)
        yield PaddedBatch(positions=positions, input_ids=input_ids, attention_mask=attention_mask)
