"""The LLM seam. Every real implementation goes through LiteLLM; tests use a scripted fake at this seam
only where no issue names a real part."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypedDict, runtime_checkable


class ChatMessage(TypedDict):
    role: str  # system | user | assistant
    content: str


class LLMError(RuntimeError):
    """Every attempt (retries and fallbacks included) failed before any text arrived."""


class LLMTimeoutError(LLMError):
    """A connect, first-token or total timeout fired."""


class LLMStreamInterruptedError(LLMError):
    """The stream broke after some text arrived; ``partial`` holds what was received."""

    def __init__(self, message: str, partial: str) -> None:
        super().__init__(message)
        self.partial = partial


@runtime_checkable
class ChatLLM(Protocol):
    @property
    def model_name(self) -> str: ...

    def stream(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """Yield text deltas. Raises ``LLMError`` (or a subclass) on failure. Clients that offer tools
        also take ``tools=[...]`` and report the calls in ``last_tool_calls`` (see ``LiteLLMChat``)."""
        ...

    def complete(self, messages: Sequence[ChatMessage]) -> str: ...

    def count_tokens(self, text: str) -> int: ...
