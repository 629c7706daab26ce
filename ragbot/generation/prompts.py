"""Prompt files (``prompts/*.md``) turned into chat messages that fit the model's context window.

The templates are plain Markdown with ``$name`` placeholders (``string.Template``), so a deployment
can rewrite them without touching code; ``RAGBOT_PROMPTS_DIR`` points at its own copy. Placeholders:

* ``system.md``:   ``$persona`` (the per-deployment tone, may be empty)
* ``answer.md``:   ``$sources`` (numbered ``[1]..[n]``), ``$question`` (optional), ``$length`` (optional:
  "Answer in at most N words.", from the bot's answer length; empty when unset)
* ``condense.md``: ``$history`` (``User:`` / ``Assistant:`` lines), ``$question``
* ``refusal.md``:  ``$persona`` (optional; the shipped text does not use it)

An answer is laid out as ``system`` (system.md, then answer.md with the sources), the conversation so
far, then the visitor's question as the last user turn: grounding stays in one place however long the
conversation gets, and the question reads as a natural chat turn (small models followed this layout
best in our trials).

Budgeting is done in tokens with the model's own counter: the answer's reserve and the fixed parts
come first, then the sources in rank order (they ground the answer, and the question was already
made standalone), then as many of the most recent history turns as still fit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ragbot.generation.base import ChatMessage
from ragbot.types import Hit

log = logging.getLogger(__name__)

__all__ = ["AnswerPrompt", "PromptLibrary", "default_prompts_dir"]

PROMPT_NAMES = ("system", "answer", "condense", "refusal")
#: Chat templates wrap every message in role markers; a few tokens each is what common templates spend.
MESSAGE_OVERHEAD_TOKENS = 8
#: A source cut to fewer tokens than this tells the model nothing useful; it is dropped instead.
MIN_SOURCE_TOKENS = 32


def default_prompts_dir() -> Path:
    """The repository's ``prompts/`` folder for an editable install, else the copy a wheel installs.

    A wheel carries ``prompts/*.md`` as data files under ``<prefix>/share/ragbot/prompts``.
    """
    checkout = Path(__file__).resolve().parents[2] / "prompts"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "ragbot" / "prompts"


@dataclass(frozen=True, slots=True)
class AnswerPrompt:
    """The messages for one answer and the hits numbered in them (``sources[n - 1]`` is ``[n]``)."""

    messages: list[ChatMessage]
    sources: tuple[Hit, ...]
    history_messages: int
    prompt_tokens: int


class PromptLibrary:
    def __init__(self, prompts_dir: Path | None = None) -> None:
        folder = Path(prompts_dir) if prompts_dir is not None else default_prompts_dir()
        missing = [name for name in PROMPT_NAMES if not (folder / f"{name}.md").is_file()]
        if missing:
            raise FileNotFoundError(
                f"prompt files {', '.join(f'{m}.md' for m in missing)} not found in {folder} "
                "(set RAGBOT_PROMPTS_DIR to a folder holding system.md, answer.md, condense.md, refusal.md)"
            )
        self.prompts_dir = folder
        self._templates = {
            name: Template((folder / f"{name}.md").read_text(encoding="utf-8").strip())
            for name in PROMPT_NAMES
        }

    # ------------------------------------------------------------------ answering
    def system_text(self, persona: str) -> str:
        return _render(self._templates["system"], persona=persona.strip())

    def build_answer(
        self,
        question: str,
        hits: Sequence[Hit],
        history: Sequence[ChatMessage],
        *,
        persona: str,
        context_window: int,
        max_answer_tokens: int,
        count_tokens: Callable[[str], int],
        max_words: int | None = None,
    ) -> AnswerPrompt:
        """Messages for a grounded answer, trimmed to ``context_window`` tokens.

        Hits that do not fit are dropped from the end of the ranking, so the numbering of the kept ones
        never changes: ``[n]`` is always ``hits[n - 1]``.
        """
        question = question.strip()
        persona_text = self.system_text(persona)
        length = f"Answer in at most {max_words} words." if max_words else ""
        frame = self._grounding(persona_text, question, "", length)
        budget = (
            context_window
            - max_answer_tokens
            - count_tokens(frame)
            - count_tokens(question)
            - 2 * MESSAGE_OVERHEAD_TOKENS
        )
        if budget < 0:
            raise ValueError(
                f"the context window ({context_window} tokens) cannot hold the prompt and a "
                f"{max_answer_tokens}-token answer; raise RAGBOT_LLM_CONTEXT_WINDOW or lower "
                "RAGBOT_LLM_MAX_TOKENS"
            )
        blocks: list[str] = []
        for n, hit in enumerate(hits, start=1):
            block = _format_source(n, hit)
            cost = count_tokens(block) + 2  # the blank line between sources
            if cost > budget:
                block = _clip_to_tokens(block, budget - 2, count_tokens)
                cost = count_tokens(block) + 2 if block else 0
                if not block or cost - 2 < MIN_SOURCE_TOKENS:
                    break
            blocks.append(block)
            budget -= cost
        if len(blocks) < len(hits):
            log.info("context window holds %d of %d sources", len(blocks), len(hits))

        kept: list[ChatMessage] = []
        for message in reversed(_conversational(history)):
            cost = count_tokens(message["content"]) + MESSAGE_OVERHEAD_TOKENS
            if cost > budget:
                break
            kept.append(message)
            budget -= cost
        kept.reverse()
        while kept and kept[0]["role"] != "user":  # chat templates want the first turn to be the user's
            kept.pop(0)

        system = self._grounding(persona_text, question, "\n\n".join(blocks), length)
        messages: list[ChatMessage] = [
            ChatMessage(role="system", content=system),
            *kept,
            ChatMessage(role="user", content=question),
        ]
        used = context_window - max_answer_tokens - budget
        return AnswerPrompt(
            messages=_merge_same_role(messages),
            sources=tuple(hits[: len(blocks)]),
            history_messages=len(kept),
            prompt_tokens=used,
        )

    def answer_messages(
        self,
        question: str,
        hits: Sequence[Hit],
        history: Sequence[ChatMessage],
        *,
        persona: str,
        context_window: int,
        max_answer_tokens: int,
        count_tokens: Callable[[str], int],
    ) -> list[ChatMessage]:
        return self.build_answer(
            question,
            hits,
            history,
            persona=persona,
            context_window=context_window,
            max_answer_tokens=max_answer_tokens,
            count_tokens=count_tokens,
        ).messages

    def _grounding(self, persona_text: str, question: str, sources: str, length: str = "") -> str:
        grounding = _render(self._templates["answer"], sources=sources, question=question, length=length)
        return f"{persona_text}\n\n{grounding}" if persona_text else grounding

    # ------------------------------------------------------------------ condensing
    def condense_messages(
        self,
        history: Sequence[ChatMessage],
        question: str,
        *,
        count_tokens: Callable[[str], int] | None = None,
        max_history_tokens: int = 600,
        max_turn_chars: int = 500,
    ) -> list[ChatMessage]:
        """One user message asking to rewrite ``question`` as a standalone query.

        Only the latest turns matter for resolving "it" or "and the price?", so history is taken
        newest first up to ``max_history_tokens`` (characters / 4 without a counter), each turn clipped
        to ``max_turn_chars``: long assistant answers would drown a small model's attention.
        """
        count = count_tokens or (lambda text: len(text) // 4 + 1)
        lines: list[str] = []
        budget = max_history_tokens
        for message in reversed(_conversational(history)):
            speaker = "User" if message["role"] == "user" else "Assistant"
            text = " ".join(message["content"].split())
            if len(text) > max_turn_chars:
                text = text[:max_turn_chars].rsplit(" ", 1)[0] + " ..."
            line = f"{speaker}: {text}"
            cost = count(line)
            if cost > budget and lines:
                break
            lines.append(line)
            budget -= cost
        lines.reverse()
        content = _render(self._templates["condense"], history="\n".join(lines), question=question.strip())
        return [ChatMessage(role="user", content=content)]

    # ------------------------------------------------------------------ refusing
    def refusal_text(self, persona: str = "") -> str:
        """What the bot says when retrieval found nothing relevant: it does not know and offers a human."""
        return _render(self._templates["refusal"], persona=persona.strip())


def _render(template: Template, **values: str) -> str:
    text = template.safe_substitute(**values)
    # An empty placeholder on a line of its own leaves a blank line behind: collapse runs of blank lines.
    lines = text.splitlines()
    out: list[str] = []
    for line in lines:
        if not line.strip() and out and not out[-1].strip():
            continue
        out.append(line.rstrip())
    return "\n".join(out).strip()


def _format_source(n: int, hit: Hit) -> str:
    chunk = hit.chunk
    parts: list[str] = []
    for part in (chunk.title, *chunk.heading_path):
        if part and (not parts or part != parts[-1]):  # a document's H1 usually repeats its title
            parts.append(part)
    title = " > ".join(parts)
    where = []
    if chunk.page is not None:
        where.append(f"page {chunk.page}")
    if chunk.start_s is not None:
        where.append(f"at {_timestamp(chunk.start_s)}")
    header = f"[{n}] {title}" + (f" ({', '.join(where)})" if where else "")
    # One paragraph per source: Markdown structure (headings, table rules) distracts small models and
    # is noise to large ones.
    return f"{header}\n{' '.join(chunk.text.split())}"


def _timestamp(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _clip_to_tokens(text: str, limit: int, count_tokens: Callable[[str], int]) -> str:
    """The longest word prefix of ``text`` within ``limit`` tokens (binary search: O(log n) counts)."""
    if limit <= 0:
        return ""
    words = text.split(" ")
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid]) + " ...") <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " ..." if lo else ""


def _conversational(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """User and assistant turns only, with empty ones (a failed answer) left out."""
    return [
        ChatMessage(role=m["role"], content=m["content"])
        for m in history
        if m["role"] in ("user", "assistant") and m["content"].strip()
    ]


def _merge_same_role(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Strict chat templates need alternating roles; a turn left unanswered would break that."""
    merged: list[ChatMessage] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = ChatMessage(
                role=message["role"], content=f"{merged[-1]['content']}\n\n{message['content']}"
            )
        else:
            merged.append(message)
    return merged
