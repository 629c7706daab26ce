"""LiteLLMChat against real OpenAI-compatible HTTP servers on loopback, with injected faults.

llm-katan's echo backend answers "[echo] model=<served name> ... User: <last user message>", which tells
each test which deployment answered and that the right message went through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.katan import CuttingSSEServer, KatanServer, free_port, katan_fleet, llm_settings

from ragbot.generation import build_llm
from ragbot.generation.base import ChatMessage, LLMError, LLMStreamInterruptedError, LLMTimeoutError
from ragbot.generation.litellm_client import LiteLLMChat

pytestmark = pytest.mark.integration

FLEET = {
    "echo": (),
    "errors": ("--error-rate", "0.3"),
    "primary": ("--rate-limit-after", "2"),
    "limited": ("--rate-limit-after", "1"),
    "gateway": ("--timeout-after", "1"),
    "latency": ("--latency-ms", "3000"),
    "ttft": ("--ttft-ms", "3000"),
    "trickle": ("--chunk-delay-ms", "100"),
    "overloaded": ("--max-inflight", "1", "--latency-ms", "200"),
}


@pytest.fixture(scope="module")
def katan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, KatanServer]]:
    """One llm-katan per fault, booted side by side; each stateful one serves a single test."""
    log_dir: Path = tmp_path_factory.mktemp("katan")
    with katan_fleet(FLEET, log_dir=log_dir) as servers:
        yield servers


def drain(stream: Iterator[str], into: list[str]) -> None:
    """Consume a stream, keeping every delta that arrived before it raised."""
    into.extend(stream)


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=text)]


def test_streams_through_litellm_from_a_real_server(katan: dict[str, KatanServer]) -> None:
    llm = build_llm(llm_settings(katan["echo"].base_url, model="openai/echo"))
    deltas = list(llm.stream(ask("Where are conversations stored?")))
    assert len(deltas) > 1, "the answer should arrive as several streamed deltas"
    answer = "".join(deltas)
    assert "model=echo" in answer
    assert "User: Where are conversations stored?" in answer
    assert llm.complete(ask("again")).endswith("User: again")


def test_error_rate_every_call_answers_or_fails_clearly(katan: dict[str, KatanServer]) -> None:
    llm = build_llm(llm_settings(katan["errors"].base_url, model="openai/errors", llm_max_retries=2))
    answered, failed = 0, []
    for i in range(20):
        try:
            answer = llm.complete(ask(f"question {i}"))
        except LLMError as exc:
            failed.append(str(exc))
        else:
            assert answer.endswith(f"User: question {i}")
            answered += 1
    # Three attempts each: a call fails only if all three draw the 30% error (2.7%).
    assert answered >= 15, failed
    for message in failed:
        assert "unavailable" in message
        assert "openai/errors: 3 attempt(s)" in message
        assert "500" in message


def test_rate_limited_primary_hands_over_to_the_fallback(katan: dict[str, KatanServer]) -> None:
    settings = llm_settings(
        katan["primary"].base_url,
        model="openai/primary",
        llm_fallbacks=[f"openai/echo|{katan['echo'].base_url}"],
        llm_max_retries=1,
    )
    llm = build_llm(settings)
    assert isinstance(llm, LiteLLMChat)
    served = []
    for i in range(4):
        answer = llm.complete(ask(f"q{i}"))
        assert answer.endswith(f"User: q{i}")
        served.append((llm.last_model, "model=echo" in answer))
    assert served == [
        ("openai/primary", False),
        ("openai/primary", False),
        ("openai/echo", True),
        ("openai/echo", True),
    ]


def test_rate_limit_without_fallback_is_a_clear_error(katan: dict[str, KatanServer]) -> None:
    llm = build_llm(llm_settings(katan["limited"].base_url, llm_max_retries=1))
    llm.complete(ask("first"))
    with pytest.raises(LLMError, match="RateLimitError 429") as caught:
        llm.complete(ask("second"))
    assert not isinstance(caught.value, LLMTimeoutError)


def test_gateway_timeouts_are_reported_as_timeouts(katan: dict[str, KatanServer]) -> None:
    llm = build_llm(llm_settings(katan["gateway"].base_url, llm_max_retries=1))
    assert llm.complete(ask("before")).endswith("User: before")
    with pytest.raises(LLMTimeoutError, match="timed out") as caught:
        llm.complete(ask("after"))
    assert "504" in str(caught.value)


@pytest.mark.parametrize("server", ["latency", "ttft"])
def test_slow_first_token_fires_the_first_token_timeout(katan: dict[str, KatanServer], server: str) -> None:
    llm = build_llm(llm_settings(katan[server].base_url, llm_first_token_timeout_s=0.5, llm_max_retries=1))
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError, match=r"no first token within 0.5 s"):
        llm.complete(ask("slow"))
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"two 0.5 s attempts took {elapsed:.1f} s"


def test_total_timeout_bounds_retries_and_fallbacks(katan: dict[str, KatanServer]) -> None:
    slow = katan["latency"]
    settings = llm_settings(
        slow.base_url,
        llm_fallbacks=[f"openai/also-slow|{slow.base_url}"],
        llm_first_token_timeout_s=0.6,
        llm_total_timeout_s=1.5,
        llm_max_retries=5,
    )
    llm = build_llm(settings)
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError):
        llm.complete(ask("slow"))
    assert time.monotonic() - started < 2.5


def test_total_timeout_mid_stream_keeps_the_partial_answer(katan: dict[str, KatanServer]) -> None:
    llm = build_llm(llm_settings(katan["trickle"].base_url, llm_total_timeout_s=1.0))
    received: list[str] = []
    with pytest.raises(LLMStreamInterruptedError, match="total timeout") as caught:
        drain(llm.stream(ask("a long question that makes a long echo")), received)
    assert received, "some text should have arrived before the deadline"
    assert caught.value.partial == "".join(received)


@pytest.mark.parametrize("mode", ["reset", "eof"])
def test_stream_cut_halfway_raises_with_the_partial_text(mode: str) -> None:
    pieces = ["Ragbot ", "stores ", "conversations ", "in "]
    with CuttingSSEServer(pieces, mode=mode) as server:
        llm = build_llm(llm_settings(server.base_url, model="openai/cutter"))
        received: list[str] = []
        with pytest.raises(LLMStreamInterruptedError) as caught:
            drain(llm.stream(ask("where?")), received)
        assert caught.value.partial == "".join(pieces) == "".join(received)
        assert server.requests == 1, "text was already shown: no retry may restart the answer"


def test_complete_stream_from_the_cutting_server_control_case() -> None:
    with CuttingSSEServer(["All ", "there."], mode="complete") as server:
        llm = build_llm(llm_settings(server.base_url, model="openai/cutter"))
        assert llm.complete(ask("ok?")) == "All there."


def test_overloaded_server_recovers_through_backoff(katan: dict[str, KatanServer]) -> None:
    llm = build_llm(llm_settings(katan["overloaded"].base_url, llm_max_retries=6, llm_retry_backoff_s=0.15))
    results: list[str] = []
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results.append(llm.complete(ask(f"parallel {i}")))
        except LLMError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(r.rsplit("User: ", 1)[1] for r in results) == ["parallel 0", "parallel 1", "parallel 2"]


def test_nothing_listening_is_a_clear_error_quickly() -> None:
    llm = build_llm(llm_settings(f"http://127.0.0.1:{free_port()}/v1", llm_max_retries=1))
    started = time.monotonic()
    with pytest.raises(LLMError, match="unavailable"):
        llm.complete(ask("anyone?"))
    assert time.monotonic() - started < 5
