"""``ChatLLM`` over LiteLLM: streaming, deadlines, retries with backoff, an ordered fallback chain.

Policy, in the order it applies to one ``stream()`` call:

1. Deployments are tried in order: ``llm_model`` first, then each of ``llm_fallbacks``.
2. Each deployment gets ``1 + llm_max_retries`` attempts. Only transient failures are retried (429,
   5xx, timeouts, connection errors), with exponential backoff (``llm_retry_backoff_s * 2**n``, jittered,
   raised to a server's ``Retry-After``); a permanent one (bad key, unknown model, bad request) moves
   straight to the next deployment.
3. Deadlines: no text within ``llm_first_token_timeout_s`` of an attempt's start (or no new text for as
   long, mid-stream) ends that attempt; ``llm_total_timeout_s`` bounds the whole call, retries and
   fallbacks included, so a visitor never waits longer than that. ``llm_connect_timeout_s`` goes to
   the HTTP client. The deadlines are enforced here, on a worker thread that drives LiteLLM's stream,
   because a provider (or the local model) can block inside one chunk for any length of time.
4. Retries and fallbacks happen only before any text was yielded: once the caller has shown text, a
   failure raises ``LLMStreamInterruptedError`` carrying the partial answer, never a silent truncation.
5. When nothing worked: ``LLMTimeoutError`` if the last failures were timeouts (or the total deadline
   ran out), else ``LLMError``, with one line per deployment saying what happened.

Fallback entries are LiteLLM model strings, optionally ``MODEL|API_BASE`` for a server of their own
(which then uses ``llm_api_key``). An entry without a base on the same provider as ``llm_model``
inherits ``llm_api_base`` and ``llm_api_key``; one on another provider uses that provider's standard
environment variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...), as LiteLLM does.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ragbot.config import Settings
from ragbot.generation.base import ChatMessage, LLMError, LLMStreamInterruptedError, LLMTimeoutError
from ragbot.observability import metrics

if TYPE_CHECKING:
    from ragbot.generation.local_provider import RagbotLocalLLM

log = logging.getLogger(__name__)

__all__ = ["Deployment", "LiteLLMChat", "deployments_from_settings", "import_litellm"]

LOCAL_PROVIDER = "ragbot-local"


def import_litellm() -> Any:
    """Import LiteLLM configured for offline, quiet use (the package ``__init__`` set its env flags)."""
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.disable_hf_tokenizer_download = True  # token counting must never reach a model hub
    litellm.drop_params = True  # a provider that lacks e.g. ``temperature`` ignores it instead of failing
    # No LiteLLM callbacks are used: without this, every streamed chunk is handed to a thread pool that
    # starts an event loop of its own to run them (a third of the client's CPU time under load).
    litellm.disable_streaming_logging = True
    return litellm


@dataclass(frozen=True, slots=True)
class Deployment:
    """One entry of the chain: a LiteLLM model string and where to reach it."""

    model: str
    api_base: str | None = None
    api_key: str | None = None

    @property
    def is_local(self) -> bool:
        return self.model.startswith(f"{LOCAL_PROVIDER}/")


def _provider_of(model: str) -> str:
    if "/" in model:
        return model.split("/", 1)[0]
    try:
        _, provider, _, _ = import_litellm().get_llm_provider(model)
        return str(provider)
    except Exception:  # an unknown bare name: treat it as its own provider
        return model


def deployments_from_settings(settings: Settings) -> list[Deployment]:
    primary = Deployment(settings.llm_model, settings.llm_api_base, settings.llm_api_key)
    chain = [primary]
    for entry in settings.llm_fallbacks:
        model, sep, base = (part.strip() for part in entry.partition("|"))
        if not model:
            raise ValueError(f"empty model in RAGBOT_LLM_FALLBACKS entry {entry!r}")
        if sep:
            chain.append(Deployment(model, base or None, settings.llm_api_key))
        elif _provider_of(model) == _provider_of(primary.model):
            chain.append(Deployment(model, primary.api_base, primary.api_key))
        else:
            chain.append(Deployment(model))
    return chain


class _PerThread(threading.local):
    """What one stream reported, kept per thread: a turn reads it on the thread that streamed."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tool_calls: list[dict[str, str]] = []


def _speaks_openai(deployment: Deployment) -> bool:
    return deployment.model.startswith("openai/")


class _AttemptTimeoutError(Exception):
    """A deadline enforced by this module (as opposed to one raised by the HTTP client)."""


class _TotalDeadlineError(_AttemptTimeoutError):
    pass


class _TruncatedStreamError(Exception):
    """The body ended cleanly but the provider never said the answer was finished."""


_DONE = object()


class _StreamPump:
    """Drives one LiteLLM streaming call on a worker thread and hands text deltas over a queue.

    The consumer waits on the queue with a timeout, so deadlines hold whatever the provider does; an
    abandoned worker notices ``cancel`` at its next chunk and closes the stream (which also stops the
    local model's generation thread).
    """

    def __init__(self, start: Callable[[], Iterable[Any]], name: str) -> None:
        self._start = start
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream: Iterable[Any] | None = None
        tool_calls: dict[int, dict[str, str]] = {}
        try:
            stream = self._start()
            finished = False
            for chunk in stream:
                if self._cancel.is_set():
                    return
                finished = finished or _has_finish_reason(chunk)
                text = _delta_text(chunk)
                if text:
                    self._queue.put(("text", text))
                usage = _usage(chunk)
                if usage is not None:
                    self._queue.put(("usage", usage))
                _collect_tool_calls(chunk, tool_calls)
            if _ended_without_finish_reason(stream, finished):
                raise _TruncatedStreamError(
                    "the stream ended without a finish reason (connection closed early)"
                )
            if tool_calls:
                self._queue.put(("tools", [tool_calls[i] for i in sorted(tool_calls)]))
            self._queue.put(("end", _DONE))
        except BaseException as exc:  # handed to the consumer, which decides
            self._queue.put(("error", exc))
        finally:
            _close_quietly(stream)

    def get(self, timeout: float) -> tuple[str, Any]:
        return self._queue.get(timeout=timeout)

    def cancel(self) -> None:
        self._cancel.set()


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None)
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    content = getattr(delta, "content", None) if delta is not None else None
    return content if isinstance(content, str) else ""


def _collect_tool_calls(chunk: Any, calls: dict[int, dict[str, str]]) -> None:
    """Tool calls arrive in pieces (name first, then the arguments' JSON in fragments), keyed by index."""
    choices = getattr(chunk, "choices", None)
    delta = getattr(choices[0], "delta", None) if choices else None
    for piece in getattr(delta, "tool_calls", None) or ():
        index = getattr(piece, "index", None)
        index = index if isinstance(index, int) else len(calls)
        call = calls.setdefault(index, {"name": "", "arguments": ""})
        function = getattr(piece, "function", None)
        name = getattr(function, "name", None)
        arguments = getattr(function, "arguments", None)
        if isinstance(name, str) and name:
            call["name"] = name
        if isinstance(arguments, str):
            call["arguments"] += arguments


def _usage(chunk: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens, on the chunk where the provider reports them (OpenAI-style
    ``include_usage``: the last one); None elsewhere."""
    usage = getattr(chunk, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
    completion = getattr(usage, "completion_tokens", None) if usage is not None else None
    if isinstance(prompt, int) and isinstance(completion, int) and (prompt or completion):
        return prompt, completion
    return None


def _has_finish_reason(chunk: Any) -> bool:
    choices = getattr(chunk, "choices", None)
    if not choices:
        return False
    return bool(getattr(choices[0], "finish_reason", None))


def _ended_without_finish_reason(stream: Any, finished: bool) -> bool:
    """Whether the provider never said the answer was finished (``finished``: a chunk said so).

    An OpenAI-style stream closed by a proxy or a crashed worker after some chunks (a clean EOF, no
    ``[DONE]``) would otherwise pass for a complete answer. LiteLLM appends a synthetic ``stop`` chunk to
    every stream, so for its streams the wrapper's own record of what was real is read instead.
    """
    if not hasattr(stream, "received_finish_reason"):
        return not finished
    return (
        stream.received_finish_reason is None and getattr(stream, "intermittent_finish_reason", None) is None
    )


def _close_quietly(stream: Any) -> None:
    for target in (getattr(stream, "completion_stream", None), stream):
        close = getattr(target, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing is best effort; the worker is exiting anyway
                log.debug("closing an LLM stream failed", exc_info=True)


#: The HTTP client's own read timeout trails the first-token deadline enforced here by this much, so the
#: deadline (with its clear message) fires first; the client's frees the thread reading a stalled server.
_READ_TIMEOUT_MARGIN_S = 1.0
_TRANSIENT_STATUS = {408, 409, 425, 429}
_TIMEOUT_STATUS = {408, 504}


def _is_timeout(exc: BaseException) -> bool:
    import httpx
    import openai

    litellm = import_litellm()
    if getattr(exc, "status_code", None) in _TIMEOUT_STATUS:  # a gateway or the server gave up waiting
        return True
    return isinstance(
        exc,
        _AttemptTimeoutError | litellm.exceptions.Timeout | openai.APITimeoutError | httpx.TimeoutException,
    )


def _is_transient(exc: BaseException) -> bool:
    import httpx
    import openai

    litellm = import_litellm()
    if _is_timeout(exc) or isinstance(exc, _TruncatedStreamError):
        return True
    if isinstance(
        exc,
        litellm.exceptions.RateLimitError
        | litellm.exceptions.APIConnectionError
        | litellm.exceptions.ServiceUnavailableError
        | litellm.exceptions.InternalServerError
        | litellm.exceptions.BadGatewayError
        | openai.APIConnectionError
        | httpx.TransportError,
    ):
        return True
    if isinstance(
        exc,
        litellm.exceptions.AuthenticationError
        | litellm.exceptions.PermissionDeniedError
        | litellm.exceptions.NotFoundError
        | litellm.exceptions.BadRequestError,
    ):
        return False
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in _TRANSIENT_STATUS or status >= 500)


def _retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # RFC 9110 also allows an HTTP date
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


#: Provider replies to these may quote the request (the prompt, so the visitor's words): their text is
#: left out of error messages and logs (DEBUG logs it).
_QUOTING_STATUS = {400, 413, 422}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _AttemptTimeoutError | _TruncatedStreamError):
        return str(exc)
    status = getattr(exc, "status_code", None)
    if status in _QUOTING_STATUS:
        log.debug("the provider's reply to a refused request: %s", exc)
        return f"{type(exc).__name__} {status}: the provider refused the request (reply not logged)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"


class LiteLLMChat:
    """The one ``ChatLLM`` implementation: every call goes through ``litellm.completion(stream=True)``,
    except ``openai/`` deployments, whose stream is read from the ``openai`` SDK directly (the client
    LiteLLM would use, without its per-chunk overhead: ``_openai_start``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._chain = deployments_from_settings(settings)
        self._litellm = import_litellm()
        self._local: RagbotLocalLLM | None = None
        if any(d.is_local for d in self._chain):
            from ragbot.generation.local_provider import register_local_provider

            self._local = register_local_provider(settings.model_cache_dir)
        # One client serves every turn in flight, each on its own thread (``_PerThread``).
        self._calls = _PerThread()
        self._openai_clients: dict[tuple[str | None, str | None], Any] = {}

    @property
    def last_model(self) -> str | None:
        """The deployment that produced this thread's last successful stream."""
        return self._calls.model

    @property
    def last_usage(self) -> dict[str, Any] | None:
        """``{"prompt_tokens", "completion_tokens", "cost_usd"}`` of this thread's last stream, where
        reported."""
        return self._calls.usage

    @property
    def last_tool_calls(self) -> list[dict[str, str]]:
        """``[{"name", "arguments"}]``: the tools the model called in this thread's last stream."""
        return self._calls.tool_calls

    @property
    def model_name(self) -> str:
        return self._chain[0].model

    @property
    def deployments(self) -> list[Deployment]:
        return list(self._chain)

    def warm_up(self) -> None:
        """Load the embedded model now (server start) instead of on the first question."""
        for deployment in self._chain:
            if deployment.is_local:
                self._load_local(deployment)

    def _load_local(self, deployment: Deployment) -> None:
        if self._local is None:  # pragma: no cover - set whenever the chain has a local deployment
            raise LLMError(f"the {LOCAL_PROVIDER} provider is not registered")
        from ragbot.encoders import apply_torch_threads

        apply_torch_threads(self._settings.torch_threads)
        try:
            self._local.model_for(deployment.model.split("/", 1)[1])
        except Exception as exc:  # a missing package or unreadable weights: say which model and why
            raise LLMError(f"cannot load the local model {deployment.model}: {exc}") from exc

    def count_tokens(self, text: str) -> int:
        primary = self._chain[0]
        if primary.is_local and self._local is not None:
            return self._local.model_for(primary.model.split("/", 1)[1]).count_tokens(text)
        try:
            return int(self._litellm.token_counter(model=primary.model, text=text))
        except Exception:  # a tokenizer LiteLLM cannot resolve offline: a conservative estimate
            return max(1, len(text) // 3)

    def complete(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(self.stream(messages))

    def supports_tools(self) -> bool:
        """Whether the first deployment takes tool calls: ``RAGBOT_LLM_TOOLS=on|off``, or (auto) what
        LiteLLM knows of the model; the embedded model never does."""
        mode = self._settings.llm_tools
        primary = self._chain[0]
        if mode == "off" or primary.is_local:
            return False
        if mode == "on":
            return True
        try:
            return bool(self._litellm.supports_function_calling(model=primary.model))
        except Exception:  # a model LiteLLM does not know: no tools rather than a failing call
            return False

    def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> Iterator[str]:
        settings = self._settings
        calls = self._calls
        calls.usage, calls.tool_calls = None, []
        started = time.monotonic()
        first_token_s: float | None = None
        deadline = started + settings.llm_total_timeout_s
        payload = [{"role": m["role"], "content": m["content"]} for m in messages]
        failures: list[tuple[Deployment, int, BaseException]] = []
        for index, deployment in enumerate(self._chain):
            if index:
                log.warning(
                    "falling back to %s after %s failed", deployment.model, self._chain[index - 1].model
                )
            if deployment.is_local:
                # Loading the embedded model (seconds, or a one-off GGUF conversion) is not the model
                # being slow to answer: it happens outside the deadlines.
                loading = time.monotonic()
                try:
                    self._load_local(deployment)
                except LLMError as exc:
                    failures.append((deployment, 0, exc))
                    log.error("%s", exc)
                    continue
                deadline += time.monotonic() - loading
            for attempt in range(settings.llm_max_retries + 1):
                if attempt:
                    delay = self._backoff(attempt, failures[-1][2])
                    if time.monotonic() + delay >= deadline:
                        break
                    time.sleep(delay)
                if time.monotonic() >= deadline:
                    break
                partial: list[str] = []
                try:
                    for text in self._attempt(deployment, payload, deadline, tools):
                        if not partial:
                            first_token_s = time.monotonic() - started
                        partial.append(text)
                        yield text
                except GeneratorExit:  # the caller stopped reading (enough text, or the visitor left)
                    if partial:
                        metrics.llm_call(time.monotonic() - started, "ok", first_token_s=first_token_s)
                    raise
                except Exception as exc:
                    if partial:
                        metrics.llm_call(
                            time.monotonic() - started, "interrupted", first_token_s=first_token_s
                        )
                        raise LLMStreamInterruptedError(
                            f"the answer from {deployment.model} broke off after {sum(map(len, partial))} "
                            f"characters: {_describe(exc)}",
                            partial="".join(partial),
                        ) from exc
                    failures.append((deployment, attempt, exc))
                    log.warning("%s attempt %d failed: %s", deployment.model, attempt + 1, _describe(exc))
                    if isinstance(exc, _TotalDeadlineError) or not _is_transient(exc):
                        break
                    continue
                calls.model = deployment.model
                metrics.llm_call(time.monotonic() - started, "ok", first_token_s=first_token_s)
                return
            if time.monotonic() >= deadline:
                break
        metrics.llm_call(time.monotonic() - started, "error")
        raise self._give_up(failures, deadline)

    def _attempt(
        self,
        deployment: Deployment,
        payload: list[dict[str, str]],
        deadline: float,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Iterator[str]:
        import httpx

        settings = self._settings
        litellm = self._litellm
        gap = settings.llm_first_token_timeout_s
        kwargs: dict[str, Any] = {
            "model": deployment.model,
            "messages": payload,
            "stream": True,
            "temperature": settings.llm_temperature,
            "max_tokens": settings.llm_max_tokens,
            "timeout": httpx.Timeout(
                connect=settings.llm_connect_timeout_s,
                read=gap + _READ_TIMEOUT_MARGIN_S,  # a backstop: the deadline above fires first
                write=settings.llm_connect_timeout_s,
                pool=settings.llm_connect_timeout_s,
            ),
            "max_retries": 0,  # retries are ours: the SDKs' own would hide attempts and ignore our deadline
            "num_retries": 0,
        }
        if deployment.model.startswith("openai/") or "/" not in deployment.model:
            kwargs["stream_options"] = {"include_usage": True}  # usage arrives on the last chunk
        if tools and not deployment.is_local:
            kwargs["tools"] = list(tools)
        if deployment.api_base:
            kwargs["api_base"] = deployment.api_base
        if deployment.api_key:
            kwargs["api_key"] = deployment.api_key
        start: Callable[[], Iterable[Any]] = lambda: litellm.completion(**kwargs)  # noqa: E731
        if _speaks_openai(deployment):
            start = self._openai_start(deployment, kwargs)
        pump = _StreamPump(start, name=f"llm:{deployment.model}")
        received = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _TotalDeadlineError(f"total timeout of {settings.llm_total_timeout_s:g} s reached")
                try:
                    kind, value = pump.get(timeout=min(gap, remaining))
                except queue.Empty:
                    if remaining <= gap:
                        raise _TotalDeadlineError(
                            f"total timeout of {settings.llm_total_timeout_s:g} s reached"
                        ) from None
                    what = "next token" if received else "first token"
                    raise _AttemptTimeoutError(f"no {what} within {gap:g} s") from None
                if kind == "text":
                    received = True
                    yield value
                elif kind == "usage":
                    self._calls.usage = self._priced(deployment, *value)
                elif kind == "tools":
                    self._calls.tool_calls = list(value)
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            pump.cancel()

    def _openai_start(self, deployment: Deployment, kwargs: dict[str, Any]) -> Callable[[], Iterable[Any]]:
        """The same request through the ``openai`` SDK (which LiteLLM itself uses for these models).

        LiteLLM's streaming wrapper costs about 50 ms of CPU a call on top of the SDK (it rebuilds each
        chunk, then the whole response twice, and prices it): under load that was most of the client's
        time. For ``openai/`` deployments (OpenAI and the OpenAI-compatible servers: vLLM, llama.cpp,
        LM Studio, Ollama's /v1) the SDK's stream is read directly, with one HTTP client per server.
        """
        key = (deployment.api_base, deployment.api_key)
        client = self._openai_clients.get(key)
        if client is None:
            import openai

            # no key: OpenAI's own variable, as LiteLLM reads it; a local server may want none at all
            api_key = deployment.api_key or os.environ.get("OPENAI_API_KEY") or "none"
            client = openai.OpenAI(base_url=deployment.api_base, api_key=api_key, max_retries=0)
            client = self._openai_clients.setdefault(key, client)
        request = {
            k: v for k, v in kwargs.items() if k not in ("api_base", "api_key", "num_retries", "max_retries")
        }
        request["model"] = deployment.model.split("/", 1)[1]
        return lambda: client.chat.completions.create(**request)

    def _priced(self, deployment: Deployment, prompt: int, completion: int) -> dict[str, Any]:
        """Reported token counts and, where LiteLLM's bundled price list knows the model, the cost."""
        cost: float | None = None
        if not deployment.is_local:
            try:
                prompt_cost, completion_cost = self._litellm.cost_per_token(
                    model=deployment.model, prompt_tokens=prompt, completion_tokens=completion
                )
                cost = float(prompt_cost) + float(completion_cost)
            except Exception:  # a model without a price: tokens are still worth keeping
                cost = None
        return {"prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost}

    def _backoff(self, attempt: int, error: BaseException) -> float:
        delay: float = self._settings.llm_retry_backoff_s * (2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
        retry_after = _retry_after_s(error)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _give_up(self, failures: list[tuple[Deployment, int, BaseException]], deadline: float) -> LLMError:
        if not failures:
            return LLMTimeoutError(
                f"no attempt could start within the total timeout of {self._settings.llm_total_timeout_s:g} s"
            )
        lines: list[str] = []
        for deployment in self._chain:
            mine = [exc for d, _, exc in failures if d is deployment]
            if mine:
                lines.append(f"{deployment.model}: {len(mine)} attempt(s), last {_describe(mine[-1])}")
        summary = "; ".join(lines)
        last = failures[-1][2]
        out_of_time = time.monotonic() >= deadline
        if _is_timeout(last) or out_of_time:
            error: LLMError = LLMTimeoutError(f"the language model timed out ({summary})")
        else:
            error = LLMError(f"the language model is unavailable ({summary})")
        error.__cause__ = last
        return error
