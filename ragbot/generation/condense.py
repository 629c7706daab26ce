"""Follow-up questions rewritten into standalone retrieval queries.

"How do I change it?" retrieves nothing useful on its own; "How do I change the dense model?" does.
The LLM rewrites the follow-up from the conversation (``prompts/condense.md``). First turns skip the
call. Small local models sometimes answer instead of rewriting, wrap the question in quotes or a
preamble, run on, or drift to words the conversation never used: the output is cleaned, and when it
still does not look like a restatement of the conversation, the fallback is the follow-up appended to
the previous user turn, which keeps the topic words retrieval needs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from ragbot.generation.attribution import content_words
from ragbot.generation.base import ChatLLM, ChatMessage, LLMStreamInterruptedError
from ragbot.generation.prompts import PromptLibrary

log = logging.getLogger(__name__)

__all__ = ["clean_condensed", "condense_question", "fallback_query"]

_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:(?:rewritten|standalone|reformulated|rephrased|new|follow-up)?\s*(?:question|query)|user)"
    r"\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is)[^:]*)[,.!:]*\s*(?:here(?:'s| is)[^:]*:)?\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'`“”‘’«»"
#: A rewrite much longer than the question plus the previous turn is an answer, not a question.
_MAX_GROWTH_CHARS = 200
#: Share of a rewrite's content words that must come from the conversation or the follow-up.
_MIN_GROUNDED_SHARE = 0.6
#: Share of the follow-up's own content words that a faithful rewrite keeps.
_MIN_KEPT_SHARE = 0.5


def clean_condensed(raw: str) -> str:
    """The first meaningful line of the model's output, without labels, preambles or quotes."""
    for line in raw.strip().splitlines():
        text = line.strip()
        if not text:
            continue
        text = _PREAMBLE.sub("", text, count=1)
        text = _LABEL.sub("", text, count=1)
        text = text.strip().strip(_QUOTES).strip()
        if text:
            return text
    return ""


#: User turns ``fallback_query`` keeps before the follow-up: a second follow-up in a row ("Does that work on
#: PostgreSQL too?" after "How do I change it?") still needs the question that named the topic.
CONCAT_TURNS = 2


def _user_turns(history: Sequence[ChatMessage], count: int) -> list[str]:
    """The last ``count`` non-empty user turns, oldest first, whitespace folded."""
    turns: list[str] = []
    for message in reversed(history):
        if len(turns) == count:
            break
        if message["role"] == "user" and message["content"].strip():
            turns.append(" ".join(message["content"].split()))
    return turns[::-1]


def _last_user_turn(history: Sequence[ChatMessage]) -> str:
    return next(iter(_user_turns(history, 1)), "")


def fallback_query(history: Sequence[ChatMessage], question: str, turns: int = CONCAT_TURNS) -> str:
    """The previous user turns followed by the follow-up: crude, but it carries the topic words."""
    return " ".join([*_user_turns(history, turns), question.strip()]).strip()


def _plausible(rewrite: str, question: str, history: Sequence[ChatMessage]) -> bool:
    """A rewrite restates the follow-up: short, keeping its words, adding words of the conversation
    (that is what resolving "it" means) and few others.

    A small model that copies an earlier turn, answers the question, merely rephrases it or drifts to
    another topic fails one of these checks; such output would retrieve the wrong pages.
    """
    if not rewrite or len(rewrite) < 3:
        return False
    limit = len(question) + len(_last_user_turn(history)) + _MAX_GROWTH_CHARS
    if len(rewrite) > limit:
        return False
    normalized = " ".join(rewrite.lower().split())
    if any(normalized == " ".join(m["content"].lower().split()) for m in history):
        return False  # an earlier turn copied back: the follow-up itself got lost
    words = content_words(rewrite)
    asked = content_words(question)
    if asked and len(asked & words) / len(asked) < _MIN_KEPT_SHARE:
        return False  # the follow-up's own topic words were dropped: an answer or another question
    from_history: set[str] = set()
    for message in history:
        from_history |= content_words(message["content"])
    if not (words - asked) & from_history:
        return False  # nothing was resolved from the conversation: "it" is still unexplained
    return len(words & (asked | from_history)) / len(words) >= _MIN_GROUNDED_SHARE


def _first_line(llm: ChatLLM, messages: list[ChatMessage], *, limit: int) -> str:
    """Stream until the first complete non-preamble line: the rewrite is one line, and closing the
    stream early stops a model that would run on."""
    parts: list[str] = []
    size = 0
    stream = llm.stream(messages)
    try:
        for delta in stream:
            parts.append(delta)
            size += len(delta)
            text = "".join(parts)
            if size > limit or ("\n" in text and clean_condensed(text[: text.rfind("\n")])):
                break
    except LLMStreamInterruptedError as exc:
        return exc.partial
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return "".join(parts)


def condense_question(
    llm: ChatLLM, prompts: PromptLibrary, history: Sequence[ChatMessage], question: str
) -> str:
    """A standalone version of ``question``; unchanged on a first turn (no LLM call)."""
    if not any(m["role"] in ("user", "assistant") and m["content"].strip() for m in history):
        return question
    messages = prompts.condense_messages(history, question, count_tokens=llm.count_tokens)
    raw = _first_line(llm, messages, limit=len(question) + len(_last_user_turn(history)) + _MAX_GROWTH_CHARS)
    rewrite = clean_condensed(raw)
    if _plausible(rewrite, question, history):
        log.debug("condensed %r -> %r", question, rewrite)
        return rewrite
    fallback = fallback_query(history, question)
    # Both texts carry what the visitor typed: their words stay out of logs below DEBUG.
    log.info("condensation output rejected; retrieving with the follow-up after the previous question")
    log.debug("condensation output %r rejected; retrieving with %r", raw[:200], fallback)
    return fallback
