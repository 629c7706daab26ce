"""Sparse (SPLADE), dense and lexical (BM25) encoders, built from ``Settings``.

Importing this package loads no model and imports neither torch nor transformers: the loaders import them
when called, so the API, the CLI and the tests that never encode stay fast to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragbot.config import Settings
from ragbot.encoders.base import DenseEncoder, SparseEncoder

if TYPE_CHECKING:
    from ragbot.encoders.lexical import Bm25Encoder

__all__ = [
    "DenseEncoder",
    "SparseEncoder",
    "apply_torch_threads",
    "load_dense_encoder",
    "load_lexical_encoder",
    "load_sparse_encoder",
]


def apply_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count (process-wide); ``None`` keeps torch's default."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {threads}")
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def load_sparse_encoder(settings: Settings) -> SparseEncoder:
    from ragbot.encoders.sparse import SpladeEncoder

    apply_torch_threads(settings.torch_threads)
    return SpladeEncoder(
        settings.sparse_model, max_length=settings.sparse_max_length, batch_size=settings.encode_batch_size
    )


def load_dense_encoder(settings: Settings) -> DenseEncoder:
    from ragbot.encoders.dense import TransformerDenseEncoder

    apply_torch_threads(settings.torch_threads)
    return TransformerDenseEncoder(
        settings.dense_model,
        max_length=settings.dense_max_length,
        batch_size=settings.encode_batch_size,
        query_prefix=settings.dense_query_prefix,
        document_prefix=settings.dense_document_prefix,
        precision=settings.dense_precision,
        query_precision=settings.dense_query_precision,
    )


def load_lexical_encoder(settings: Settings) -> Bm25Encoder:
    """The BM25 encoder: no model, only PyStemmer and py3langid (its model loads on first detection)."""
    from ragbot.encoders.lexical import Bm25Encoder

    del settings  # nothing to configure yet: the constants are documented in ragbot.encoders.lexical
    return Bm25Encoder()
