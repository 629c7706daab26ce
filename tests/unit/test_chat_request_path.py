"""The chat request path's small pure parts: grounding's cross-turn embedding cache, and error text from
an LLM provider that stays out of logs when it may quote the prompt (the visitor's words)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ragbot.generation import litellm_client as client
from ragbot.generation.litellm_client import import_litellm
from ragbot.services.chat import EmbeddingCache

pytestmark = pytest.mark.unit


class CountingEmbed:
    """A deterministic embedding (length, vowels) that records each batch it was asked for."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        self.batches.append(list(texts))
        return [(float(len(t)), float(sum(c in "aeiou" for c in t))) for t in texts]


def test_embedding_cache_encodes_only_unseen_texts_in_one_batch() -> None:
    embed = CountingEmbed()
    cache = EmbeddingCache(embed, size=10)

    first = cache(["alpha", "beta", "alpha"])
    again = cache(["beta", "gamma", "alpha"])

    assert embed.batches == [["alpha", "beta"], ["gamma"]]
    assert [list(v) for v in first] == [[5.0, 2.0], [4.0, 2.0], [5.0, 2.0]]
    assert [list(v) for v in again] == [[4.0, 2.0], [5.0, 2.0], [5.0, 2.0]]


def test_embedding_cache_drops_the_least_recently_used_past_its_size() -> None:
    embed = CountingEmbed()
    cache = EmbeddingCache(embed, size=2)
    cache(["a", "b"])
    cache(["a"])  # "a" is now the most recently used
    cache(["c"])  # evicts "b"
    cache(["a", "b"])
    assert embed.batches == [["a", "b"], ["c"], ["b"]]


def test_a_refused_request_is_described_without_the_providers_reply() -> None:
    exceptions = import_litellm().exceptions
    prompt = "my account number is 12345, why was I charged twice?"
    exc = exceptions.BadRequestError(message=f"invalid request: {prompt}", model="m", llm_provider="openai")
    described = client._describe(exc)
    assert "12345" not in described and "charged" not in described
    assert "BadRequestError 400" in described


def test_other_failures_keep_the_providers_reason() -> None:
    exceptions = import_litellm().exceptions
    exc = exceptions.APIConnectionError(message="connection refused", llm_provider="openai", model="m")
    assert "connection refused" in client._describe(exc)
