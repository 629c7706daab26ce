"""Encoder contracts. Query and document encoding are separate calls: SPLADE and many dense models
treat them differently (instructions, max lengths), and the API keeps callers honest about which is which."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ragbot.types import SparseVector


@runtime_checkable
class SparseEncoder(Protocol):
    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]: ...

    def encode_query(self, text: str) -> SparseVector: ...

    def vocabulary_term(self, index: int) -> str:
        """The token string behind a sparse dimension, for explanations."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see (without special tokens), so chunking never exceeds the limit."""
        ...


@runtime_checkable
class DenseEncoder(Protocol):
    @property
    def dim(self) -> int: ...

    def encode_documents(self, texts: Sequence[str]) -> list[tuple[float, ...]]: ...

    def encode_query(self, text: str) -> tuple[float, ...]: ...

    def count_tokens(self, text: str) -> int: ...
