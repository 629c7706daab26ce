"""The ``handoff`` tool a model may call (OpenAI-style function calling, through LiteLLM): a structured
request for a person, never parsed out of the answer text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["HANDOFF_TOOL", "handoff_reason"]

HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "handoff",
        "description": (
            "Hand the conversation to a human support agent. Call it when the visitor asks for a person, "
            "or when the question needs someone with access to their account or order."
        ),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why a person is needed, briefly."}},
            "required": ["reason"],
        },
    },
}


def handoff_reason(tool_calls: Sequence[dict[str, Any]] | None) -> str | None:
    """The reason of the first ``handoff`` call (empty when it gave none); None when there was no such
    call. Malformed arguments still count as a call: the model asked for a person."""
    for call in tool_calls or ():
        if call.get("name") != "handoff":
            continue
        try:
            arguments = json.loads(call.get("arguments") or "{}")
        except ValueError:
            return ""
        reason = arguments.get("reason") if isinstance(arguments, dict) else None
        return str(reason)[:500] if reason else ""
    return None
