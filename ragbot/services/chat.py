"""One chat turn: store the visitor's message, condense, retrieve, generate with citations, persist.

The turn is a generator of typed events (start, delta, citation, error, done) so the SSE route and the
blocking JSON route share one code path. The visitor's message is committed before any model runs, so a
failing LLM never loses it; the bot's message, its citations and the retrieval log are written in one
transaction at the end of the turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ragbot.config import Settings
from ragbot.db import repositories as repo
from ragbot.db.session import session_scope
from ragbot.generation.attribution import attribute_sources
from ragbot.generation.base import ChatLLM, ChatMessage, LLMError, LLMStreamInterruptedError
from ragbot.generation.citations import CitationStreamParser
from ragbot.generation.condense import condense_question
from ragbot.generation.prompts import PromptLibrary
from ragbot.retrieval.retriever import Retriever
from ragbot.services.keys import is_storable
from ragbot.types import ChatEvent, Citation, EventType, Hit, MessageStatus, OwnerMode, SenderType

log = logging.getLogger(__name__)

SNIPPET_CHARS = 280


class ConversationNotFoundError(LookupError):
    pass


class AnswerFailedError(RuntimeError):
    """The LLM could not produce an answer; the visitor's message was stored with the failure."""

    def __init__(self, message: str, conversation_id: str, message_id: str) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.message_id = message_id


@dataclass
class TurnResult:
    conversation_id: str
    message_id: str
    answer: str
    status: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    standalone_query: str | None = None
    error: str | None = None


def citation_to_dict(c: Citation) -> dict[str, Any]:
    return {
        "n": c.n,
        "chunk_id": c.chunk.id,
        "source_id": c.chunk.source_id,
        "title": c.chunk.title,
        "url": c.chunk.url,
        "path": c.chunk.path,
        "page": c.chunk.page,
        "start_s": c.chunk.start_s,
        "end_s": c.chunk.end_s,
        "snippet": c.snippet,
        "score": c.score,
        "matched_terms": [
            {"term": t.term, "contribution": t.contribution, "in_text": t.in_text} for t in c.matched_terms
        ],
    }


def make_snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + "…"


def build_citations(hits: Sequence[Hit], cited: Sequence[int]) -> list[Citation]:
    """Map the markers the answer used ([n] = n-th source given to the model) to their chunks.

    Listed in source order, which is retrieval rank: the first citation is the best-ranked source the
    answer actually relied on, whatever order the model happened to mention them in.
    """
    out: list[Citation] = []
    for n in sorted(set(cited)):
        if 1 <= n <= len(hits):
            hit = hits[n - 1]
            out.append(
                Citation(
                    n=n,
                    chunk=hit.chunk,
                    score=hit.score,
                    snippet=make_snippet(hit.chunk.text),
                    matched_terms=hit.matched_terms,
                )
            )
    return out


def _answering_model(llm: ChatLLM | None, configured: str) -> str:
    """The deployment that actually answered (a fallback, say), else the configured model."""
    if llm is None:
        return configured
    last = getattr(llm, "last_model", None)
    return str(last) if last else llm.model_name


class ChatService:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        retriever: Retriever,
        llm_factory: Callable[[], ChatLLM],
        prompts: PromptLibrary,
        settings: Settings,
    ) -> None:
        self._sessions = session_factory
        self._retriever = retriever
        self._llm_factory = llm_factory
        self._prompts = prompts
        self._settings = settings

    # ------------------------------------------------------------------ public API
    def ask(self, bot_id: str, message: str, conversation_id: str | None = None) -> TurnResult:
        """Blocking form of a turn; raises ``AnswerFailedError`` when no answer could be produced."""
        result: TurnResult | None = None
        parts: list[str] = []
        for event in self.stream(bot_id, message, conversation_id):
            if event.type is EventType.DELTA:
                parts.append(event.data["text"])
            elif event.type is EventType.DONE:
                result = TurnResult(
                    conversation_id=event.data["conversation_id"],
                    message_id=event.data["message_id"],
                    answer=event.data["answer"],
                    status=event.data["status"],
                    citations=event.data["citations"],
                    standalone_query=event.data.get("standalone_query"),
                    error=event.data.get("error"),
                )
        assert result is not None
        if result.status == MessageStatus.FAILED:
            raise AnswerFailedError(
                result.error or "the language model failed", result.conversation_id, result.message_id
            )
        return result

    def stream(self, bot_id: str, message: str, conversation_id: str | None = None) -> Iterator[ChatEvent]:
        started = time.perf_counter()
        if conversation_id is not None and not is_storable(conversation_id):
            raise ConversationNotFoundError(conversation_id)  # no row can have it; the database would fail
        with session_scope(self._sessions) as s:
            repo.ensure_bot(s, bot_id)
            if conversation_id is None:
                conv = repo.create_conversation(s, bot_id, title=message[:120])
            else:
                found = repo.get_conversation(s, bot_id, conversation_id)
                if found is None:
                    raise ConversationNotFoundError(conversation_id)
                conv = found
            history = repo.history(s, bot_id, conv.id)
            visitor = repo.add_message(s, bot_id, conv.id, SenderType.VISITOR, message)
            conv_id, visitor_id, owner_mode = conv.id, visitor.id, conv.owner_mode

        yield ChatEvent(EventType.START, {"conversation_id": conv_id, "visitor_message_id": visitor_id})

        if owner_mode != OwnerMode.BOT:
            # A human owns the conversation: the bot stays silent and the message waits for the agent.
            yield ChatEvent(
                EventType.DONE,
                {
                    "conversation_id": conv_id,
                    "message_id": visitor_id,
                    "answer": "",
                    "status": MessageStatus.COMPLETE.value,
                    "citations": [],
                    "owner_mode": owner_mode,
                },
            )
            return

        yield from self._answer(bot_id, conv_id, message, history, started)

    # ------------------------------------------------------------------ internals
    def _answer(
        self, bot_id: str, conv_id: str, question: str, history: list[ChatMessage], started: float
    ) -> Iterator[ChatEvent]:
        settings = self._settings
        standalone = question
        llm: ChatLLM | None = None
        error: str | None = None
        try:
            llm = self._llm_factory()
            if history:
                standalone = condense_question(llm, self._prompts, history, question)
        except LLMError as exc:
            # Retrieval can still run on the raw question; the answer call below reports the outage.
            log.warning("condensation failed, retrieving with the raw question: %s", exc)

        hits = self._retriever.retrieve(bot_id, standalone, settings.top_k)
        top = hits[0] if hits else None
        if top is None or not self._relevant_enough(top):
            yield from self._refuse(bot_id, conv_id, question, standalone, hits, started)
            return

        sources: Sequence[Hit] = hits
        parser = CitationStreamParser(len(sources))
        parts: list[str] = []
        status = MessageStatus.COMPLETE
        try:
            if llm is None:
                llm = self._llm_factory()
            prompt = self._prompts.build_answer(
                standalone if history else question,
                hits,
                history,
                persona=settings.persona,
                context_window=settings.llm_context_window,
                max_answer_tokens=settings.llm_max_tokens,
                count_tokens=llm.count_tokens,
            )
            sources = prompt.sources  # sources that did not fit the window are not numbered
            parser = CitationStreamParser(len(sources))
            for delta in llm.stream(prompt.messages):
                visible = parser.feed(delta)
                if visible:
                    parts.append(visible)
                    yield ChatEvent(EventType.DELTA, {"text": visible})
        except LLMStreamInterruptedError as exc:
            status, error = MessageStatus.PARTIAL, f"the answer stream was interrupted: {exc}"
            log.warning("partial answer stored for conversation %s: %s", conv_id, exc)
        except LLMError as exc:
            status, error = MessageStatus.FAILED, f"the language model is unavailable: {exc}"
            log.error("answer failed for conversation %s: %s", conv_id, exc)
        tail = parser.finish()
        if tail:
            parts.append(tail)
            yield ChatEvent(EventType.DELTA, {"text": tail})
        answer = "".join(parts).strip()
        if parser.dropped:
            log.warning("dropped citation markers %s (only %d sources)", parser.dropped, len(sources))

        cited = list(parser.cited)
        if status is MessageStatus.COMPLETE and answer and not cited:
            # Small models often answer from a source without writing its marker: attribute the answer
            # to the sources that support it (content-word overlap above a floor), and show the markers.
            cited = attribute_sources(answer, [h.chunk.text for h in sources])
            if cited:
                markers = " " + "".join(f"[{n}]" for n in cited)
                answer += markers
                yield ChatEvent(EventType.DELTA, {"text": markers})

        citations = build_citations(sources, cited) if status is not MessageStatus.FAILED else []
        latency_ms = (time.perf_counter() - started) * 1000
        with session_scope(self._sessions) as s:
            bot_msg = repo.add_message(
                s,
                bot_id,
                conv_id,
                SenderType.BOT,
                answer,
                status=status,
                error=error,
                standalone_query=standalone,
                model=_answering_model(llm, settings.llm_model),
                latency_ms=latency_ms,
            )
            repo.add_citations(s, bot_id, bot_msg.id, citations)
            repo.add_retrieval_log(s, bot_id, bot_msg.id, standalone, hits, {c.chunk.id for c in citations})
            message_id = bot_msg.id

        cited_out = [citation_to_dict(c) for c in citations]
        for c in cited_out:
            yield ChatEvent(EventType.CITATION, c)
        if error is not None:
            yield ChatEvent(
                EventType.ERROR, {"message": error, "status": status.value, "message_id": message_id}
            )
        yield ChatEvent(
            EventType.DONE,
            {
                "conversation_id": conv_id,
                "message_id": message_id,
                "answer": answer,
                "status": status.value,
                "citations": cited_out,
                "standalone_query": standalone,
                "error": error,
                "latency_ms": round(latency_ms, 1),
            },
        )

    def _relevant_enough(self, top: Hit) -> bool:
        floor = self._settings.min_relevance
        if floor is None:
            return True
        score = top.dense_score if top.dense_score is not None else top.score
        return score >= floor

    def _refuse(
        self, bot_id: str, conv_id: str, question: str, standalone: str, hits: Sequence[Hit], started: float
    ) -> Iterator[ChatEvent]:
        """Say "I don't know" and offer a human, without an LLM call; record the gap."""
        text = self._prompts.refusal_text(self._settings.persona)
        top_score = hits[0].dense_score if hits else None
        with session_scope(self._sessions) as s:
            bot_msg = repo.add_message(
                s,
                bot_id,
                conv_id,
                SenderType.BOT,
                text,
                status=MessageStatus.REFUSED,
                standalone_query=standalone,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
            repo.add_retrieval_log(s, bot_id, bot_msg.id, standalone, hits, set())
            repo.record_unanswered(s, bot_id, conv_id, bot_msg.id, question, top_score)
            message_id = bot_msg.id
        yield ChatEvent(EventType.DELTA, {"text": text})
        yield ChatEvent(
            EventType.DONE,
            {
                "conversation_id": conv_id,
                "message_id": message_id,
                "answer": text,
                "status": MessageStatus.REFUSED.value,
                "citations": [],
                "standalone_query": standalone,
                "handoff_offered": True,
            },
        )
