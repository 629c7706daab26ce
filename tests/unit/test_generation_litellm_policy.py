"""The retry / fallback policy's pure parts: the deployment chain and which errors are worth a retry."""

from __future__ import annotations

import httpx
import pytest

from ragbot.config import PACKAGED_LLM, Settings
from ragbot.generation import litellm_client as client
from ragbot.generation.litellm_client import Deployment, deployments_from_settings, import_litellm

pytestmark = pytest.mark.unit


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_default_chain_is_the_packaged_local_model() -> None:
    assert deployments_from_settings(settings()) == [Deployment(PACKAGED_LLM)]
    assert Deployment(PACKAGED_LLM).is_local


def test_fallbacks_keep_their_order_and_servers() -> None:
    chain = deployments_from_settings(
        settings(
            llm_model="hosted_vllm/llama",
            llm_api_base="http://10.0.0.5:8000/v1",
            llm_api_key="k1",
            llm_fallbacks=[
                "hosted_vllm/smaller",  # same provider: same server and key
                "openai/gpt-4o-mini",  # another provider: its own environment variables
                "openai/local | http://127.0.0.1:9000/v1",  # explicit server: uses llm_api_key
                PACKAGED_LLM,
            ],
        )
    )
    assert chain == [
        Deployment("hosted_vllm/llama", "http://10.0.0.5:8000/v1", "k1"),
        Deployment("hosted_vllm/smaller", "http://10.0.0.5:8000/v1", "k1"),
        Deployment("openai/gpt-4o-mini", None, None),
        Deployment("openai/local", "http://127.0.0.1:9000/v1", "k1"),
        Deployment(PACKAGED_LLM, None, None),
    ]


def test_bare_model_names_are_matched_to_their_provider() -> None:
    chain = deployments_from_settings(
        settings(llm_model="gpt-4o", llm_api_key="sk", llm_fallbacks=["openai/gpt-4o-mini"])
    )
    assert chain[1] == Deployment("openai/gpt-4o-mini", None, "sk")


def test_fallbacks_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RAGBOT_LLM_FALLBACKS", '["openai/a|http://127.0.0.1:1/v1", "ragbot-local/smollm2-135m-instruct"]'
    )
    assert [d.model for d in deployments_from_settings(Settings())][1:] == [
        "openai/a",
        "ragbot-local/smollm2-135m-instruct",
    ]


def test_empty_fallback_entry_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty model"):
        deployments_from_settings(settings(llm_fallbacks=["|http://127.0.0.1:1"]))


def _status_error(cls: type, status: int) -> BaseException:
    response = httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
    return cls(message="boom", llm_provider="openai", model="m", response=response)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "transient", "timeout"),
    [
        (lambda e: _status_error(e.RateLimitError, 429), True, False),
        (lambda e: _status_error(e.InternalServerError, 500), True, False),
        (lambda e: _status_error(e.ServiceUnavailableError, 503), True, False),
        (lambda e: e.Timeout(message="slow", model="m", llm_provider="openai"), True, True),
        (lambda e: e.APIConnectionError(message="refused", llm_provider="openai", model="m"), True, False),
        (lambda e: _status_error(e.AuthenticationError, 401), False, False),
        (lambda e: _status_error(e.NotFoundError, 404), False, False),
        (lambda e: e.BadRequestError(message="bad", model="m", llm_provider="openai"), False, False),
        (
            lambda e: e.ContextWindowExceededError(message="long", model="m", llm_provider="openai"),
            False,
            False,
        ),
        (lambda e: client._AttemptTimeoutError("no first token"), True, True),
        (lambda e: client._TruncatedStreamError("no finish reason"), True, False),
        (lambda e: httpx.ReadTimeout("read"), True, True),
        (lambda e: httpx.RemoteProtocolError("peer closed"), True, False),
        (lambda e: ValueError("a bug"), False, False),
    ],
)
def test_error_classification(make: object, transient: bool, timeout: bool) -> None:
    exceptions = import_litellm().exceptions
    exc = make(exceptions)  # type: ignore[operator]
    assert client._is_transient(exc) is transient
    assert client._is_timeout(exc) is timeout


def test_retry_after_header_raises_the_backoff() -> None:
    llm = client.LiteLLMChat.__new__(client.LiteLLMChat)
    llm._settings = settings(llm_retry_backoff_s=0.1)
    response = httpx.Response(
        429, headers={"retry-after": "3"}, request=httpx.Request("POST", "http://127.0.0.1/v1")
    )
    limited = import_litellm().exceptions.RateLimitError(
        message="slow down", llm_provider="openai", model="m", response=response
    )
    assert llm._backoff(1, limited) == 3.0
    plain = ValueError("x")
    delays = [llm._backoff(n, plain) for n in (1, 2, 3)]
    assert 0.075 <= delays[0] <= 0.125 and 0.15 <= delays[1] <= 0.25 and 0.3 <= delays[2] <= 0.5


def test_importing_litellm_sets_offline_flags() -> None:
    import os

    litellm = import_litellm()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"].lower() == "true"
    assert litellm.disable_hf_tokenizer_download is True
    assert litellm.suppress_debug_info is True


def test_unloadable_local_model_is_a_clear_error_naming_it() -> None:
    from ragbot.generation.base import ChatMessage, LLMError

    llm = client.LiteLLMChat(settings(llm_model="ragbot-local//nowhere/model.gguf", llm_max_retries=0))
    with pytest.raises(LLMError, match=r"cannot load the local model ragbot-local//nowhere/model\.gguf"):
        llm.complete([ChatMessage(role="user", content="hi")])


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from ragbot.generation.litellm_client import _retry_after_s

    class _Response:
        def __init__(self, value: str) -> None:
            self.headers = {"retry-after": value}

    class _Error(Exception):
        def __init__(self, value: str) -> None:
            super().__init__("rate limited")
            self.response = _Response(value)

    assert _retry_after_s(_Error("7")) == 7.0
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 50 <= (_retry_after_s(_Error(in_a_minute)) or 0) <= 61
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=60), usegmt=True)
    assert _retry_after_s(_Error(past)) == 0.0
    assert _retry_after_s(_Error("soon")) is None
