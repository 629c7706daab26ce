"""The LiteLLM client records every call in ``/metrics``: its duration by outcome and the LLM's own time
to first token (the share of a turn's first token that is not ragbot's). Real llm-katan on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from integration.katan import KatanServer, free_port, llm_settings
from prometheus_client import REGISTRY

from ragbot.generation.base import LLMError
from ragbot.generation.litellm_client import LiteLLMChat

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is SPLADE?"}]


def _count(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_streamed_answer_is_recorded_with_its_first_token(
    katan_factory: Callable[..., KatanServer],
) -> None:
    katan = katan_factory("--ttft-ms", "150")
    llm = LiteLLMChat(llm_settings(katan.base_url))
    calls = _count("ragbot_llm_request_duration_seconds_count", {"outcome": "ok"})
    first = _count("ragbot_llm_time_to_first_token_seconds_count")
    first_sum = _count("ragbot_llm_time_to_first_token_seconds_sum")

    assert "SPLADE" in "".join(llm.stream(MESSAGES))  # type: ignore[arg-type]

    assert _count("ragbot_llm_request_duration_seconds_count", {"outcome": "ok"}) == calls + 1
    assert _count("ragbot_llm_time_to_first_token_seconds_count") == first + 1
    assert _count("ragbot_llm_time_to_first_token_seconds_sum") - first_sum >= 0.15


def test_a_call_that_fails_is_recorded_as_an_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    llm = LiteLLMChat(llm_settings(dead, llm_max_retries=0))
    errors = _count("ragbot_llm_request_duration_seconds_count", {"outcome": "error"})
    with pytest.raises(LLMError):
        "".join(llm.stream(MESSAGES))  # type: ignore[arg-type]
    assert _count("ragbot_llm_request_duration_seconds_count", {"outcome": "error"}) == errors + 1
