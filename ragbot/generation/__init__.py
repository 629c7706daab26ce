"""Generation: prompts, the LLM client (every call through LiteLLM), the embedded local model, citations.

Importing this package is cheap; LiteLLM and transformers load only when a client is built. Before any
submodule can import LiteLLM, its network lookups (model cost map, beta headers, blog feed) are pointed
at the copies bundled in the wheel, so generation never dials anything but the configured model server.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

for _flag in (
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS",
    "LITELLM_LOCAL_BLOG_POSTS",
):
    os.environ.setdefault(_flag, "True")

if TYPE_CHECKING:
    from ragbot.config import Settings
    from ragbot.generation.base import ChatLLM

__all__ = ["build_llm"]


def build_llm(settings: Settings) -> ChatLLM:
    """The configured chat model: any LiteLLM model string, ``ragbot-local/...`` by default."""
    from ragbot.generation.litellm_client import LiteLLMChat

    return LiteLLMChat(settings)
