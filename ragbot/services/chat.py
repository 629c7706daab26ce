"""One chat turn: store the visitor's message, condense, retrieve, generate with citations, persist.

The turn is a generator of typed events (start, delta, citation, error, done) so the SSE route and the
blocking JSON route share one code path. The visitor's message is committed before any model runs, so a
failing LLM never loses it; the bot's message, its citations and the retrieval log are written in one
transaction at the end of the turn.

Once ``start`` is out, every turn ends with ``done``. A fault ends it with one ``error`` event before
``done``, ``{"code", "message", "status", "message_id"}``: ``llm_unavailable`` or ``llm_stream_interrupted``
from the language model, ``server_shutting_down`` when the server stops mid-answer (``drain``),
``internal_error`` from anything else (the index, the database), whose cause is logged and never sent.
The bot's message is then stored, with what was streamed so far, as failed (partial when the LLM's
stream broke off or the server stopped after some text). A turn closed early (the client went away)
stores what was generated so far as ``partial``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ragbot.config import Settings
from ragbot.db import events as events_sql
from ragbot.db import repositories as repo
from ragbot.db.models import Conversation, Message
from ragbot.db.retry import is_transient, retrying
from ragbot.db.session import session_scope
from ragbot.encoders.base import DenseEncoder, SparseEncoder
from ragbot.generation.attribution import attribute_sources
from ragbot.generation.base import ChatLLM, ChatMessage, LLMError, LLMStreamInterruptedError
from ragbot.generation.citations import CitationStreamParser
from ragbot.generation.condense import condense_question, fallback_query
from ragbot.generation.grounding import (
    AnswerGate,
    AnswerTrimmer,
    GroundingRules,
    Passage,
    Verifier,
    extract,
    render_markers,
)
from ragbot.generation.lexicon import known_word
from ragbot.generation.prompts import PromptLibrary
from ragbot.handoff.intent import asks_for_human
from ragbot.handoff.service import Moved, message_event, move, offer_lead_form
from ragbot.handoff.states import Action, Reason
from ragbot.handoff.tool import HANDOFF_TOOL, handoff_reason
from ragbot.index.base import VectorIndex
from ragbot.leads.form import ask_after_messages
from ragbot.observability import metrics
from ragbot.privacy.redaction import redact
from ragbot.retrieval.retriever import Retriever
from ragbot.retrieval.scope import hit_signals
from ragbot.services.relevance import NullVectors, RelevanceFloors, null_cache_path
from ragbot.tenancy.bots import BotProfile
from ragbot.types import ChatEvent, Citation, EventType, Hit, MessageStatus, OwnerMode, SenderType
from ragbot.webhooks.outbox import enqueue

log = logging.getLogger(__name__)

SNIPPET_CHARS = 280


#: One "no such conversation" for the whole stack: the repositories raise it too (a race with a delete),
#: and the API maps it to 404.
ConversationNotFoundError = repo.ConversationNotFoundError


class AnswerFailedError(RuntimeError):
    """The LLM could not produce an answer; the visitor's message was stored with the failure."""

    code = "llm_unavailable"

    def __init__(self, message: str, conversation_id: str, message_id: str | None) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.message_id = message_id  # None only when even storing the failure failed


class TurnFailedError(AnswerFailedError):
    """Something other than the LLM (the index, the database) failed mid-turn; the visitor's message is
    stored, and so is the bot's, as failed, unless the database itself was what failed."""

    code = "internal_error"


class ServerShuttingDownError(RuntimeError):
    """The server is stopping and its grace period for streams in flight is over (``drain``)."""


#: ``code`` of the ``error`` event for each way a turn can fail.
LLM_UNAVAILABLE = AnswerFailedError.code
LLM_STREAM_INTERRUPTED = "llm_stream_interrupted"
INTERNAL_ERROR = TurnFailedError.code
#: What a client is told about an internal failure; the cause goes to the log only.
INTERNAL_ERROR_MESSAGE = "the server failed while answering; your message is saved and you can ask again"
CLIENT_DISCONNECTED = "the client disconnected before the answer was complete"
#: ``status`` of a turn the bot did not answer because people own the conversation (or now do).
FORWARDED = "forwarded"
#: How often a streaming answer looks whether people took the conversation over (seconds).
MODE_CHECK_S = 0.5
#: ``status`` of an answer a handoff overtook while it was generated: it was streamed, never stored.
SUPERSEDED = "superseded"
#: ``code`` of the ``error`` event of an answer cut short because the server is stopping.
SERVER_SHUTTING_DOWN = "server_shutting_down"
SHUTTING_DOWN_MESSAGE = (
    "the server restarted before the answer was complete; your message is saved and you can ask again"
)
#: Source sentences whose vectors grounding keeps between turns (about 1.5 KB each).
EMBED_CACHE_TEXTS = 4096
#: ``answer_kind``: the model's own sentences, each verified against what it cites; source sentences
#: quoted because none of the model's could be verified; the bot's decline.
GENERATED = "generated"
EXTRACTIVE = "extractive"
DECLINED = "declined"


@dataclass
class TurnResult:
    conversation_id: str
    message_id: str | None
    answer: str
    status: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    standalone_query: str | None = None
    error: str | None = None
    owner_mode: str = OwnerMode.BOT.value
    grounded: bool = False
    answer_kind: str | None = None
    handoff_offered: bool = False


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


def error_event(code: str, message: str, status: MessageStatus, message_id: str | None) -> ChatEvent:
    """The one shape of the ``error`` event, whatever failed."""
    return ChatEvent(
        EventType.ERROR, {"code": code, "message": message, "status": status.value, "message_id": message_id}
    )


def internal_failure_events(
    conversation_id: str,
    message_id: str | None,
    *,
    answer: str = "",
    standalone_query: str | None = None,
    latency_ms: float | None = None,
) -> list[ChatEvent]:
    """How a turn ends after an internal failure: ``error`` then a failed ``done``."""
    done: dict[str, Any] = {
        "conversation_id": conversation_id,
        "message_id": message_id,
        "answer": answer,
        "status": MessageStatus.FAILED.value,
        "citations": [],
        "grounded": False,
        "answer_kind": None,
        "standalone_query": standalone_query,
        "error": INTERNAL_ERROR_MESSAGE,
    }
    if latency_ms is not None:
        done["latency_ms"] = round(latency_ms, 1)
    return [
        error_event(INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE, MessageStatus.FAILED, message_id),
        ChatEvent(EventType.DONE, done),
    ]


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


@dataclass
class _Progress:
    """What a turn has done so far, so a failure or an early close can store it."""

    standalone: str
    configured_model: str
    llm: ChatLLM | None = None
    streamed: list[str] = field(default_factory=list)  # every delta the client was sent
    status: MessageStatus = MessageStatus.COMPLETE
    error: str | None = None
    message_id: str | None = None  # the bot's message, once committed
    superseded: bool = False  # a handoff overtook the answer: nothing of it is stored
    first_token_ms: float | None = None  # from the visitor's message to the first answer text
    llm_wait_s: float = 0.0  # of which waiting for the LLM (condensing, then its first answer token)
    setup_s: float | None = None  # of which storing the visitor's message, up to the answer's first step
    retrieval_s: float | None = None  # of which retrieving
    llm_first_at: float | None = None  # perf_counter() when the LLM's first answer token arrived
    shown_at: float | None = None  # perf_counter() when the visitor's first answer text was sent
    redact: bool = False  # the bot stores what visitors type masked (``Bot.redact_questions``)

    def mask(self, text: str) -> str:
        return redact(text) if self.redact else text

    @property
    def answer(self) -> str:
        return "".join(self.streamed).strip()

    def delta(self, text: str) -> ChatEvent:
        self.streamed.append(text)
        return ChatEvent(EventType.DELTA, {"text": text})

    def timings(self) -> dict[str, float | None]:
        """For the ``done`` event: where the time to first token went, the LLM's share apart.

        ``setup_ms``: storing the visitor's message; ``retrieval_ms``; ``llm_wait_ms``: waiting for the
        LLM (a condensing call, then the answer's first token); ``held_ms``: from the LLM's first token to
        the first text shown (the grounding gate holds a sentence until its citations support it).
        """

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 1)

        held = None
        if self.llm_first_at is not None and self.shown_at is not None:
            held = max(0.0, self.shown_at - self.llm_first_at)
        return {
            "first_token_ms": None if self.first_token_ms is None else round(self.first_token_ms, 1),
            "llm_wait_ms": ms(self.llm_wait_s),
            "setup_ms": ms(self.setup_s),
            "retrieval_ms": ms(self.retrieval_s),
            "held_ms": ms(held),
        }

    def shown(self, started: float) -> None:
        """The visitor's first answer text goes out now (later calls change nothing)."""
        if self.first_token_ms is None:
            self.shown_at = time.perf_counter()
            self.first_token_ms = (self.shown_at - started) * 1000


class EmbeddingCache:
    """``embed`` with the vectors of texts it saw kept (least recently used out past ``size``).

    Grounding embeds the sentences of the passages it checks an answer against, and the same popular
    passages come back turn after turn: under load this was the largest cost of a turn after retrieval.
    Only texts not seen yet are encoded, in one batch. Vectors are kept as float32 arrays.
    """

    def __init__(self, embed: Callable[[Sequence[str]], Sequence[Sequence[float]]], size: int) -> None:
        self._embed = embed
        self._size = size
        self._vectors: OrderedDict[str, Sequence[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> list[Sequence[float]]:
        found: dict[str, Sequence[float]] = {}
        with self._lock:
            for text in texts:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                    found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = [array("f", v) for v in self._embed(missing)]
            found.update(zip(missing, fresh, strict=True))
            with self._lock:
                self._vectors.update(zip(missing, fresh, strict=True))
                while len(self._vectors) > self._size:
                    self._vectors.popitem(last=False)
        return [found[t] for t in texts]


def _close_stream(stream: Iterator[str]) -> None:
    """Stop an LLM stream that will not be read to its end (e.g. the client went away)."""
    close = getattr(stream, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # best effort: the turn is ending anyway
            log.debug("closing the answer stream failed", exc_info=True)


def _stream_with_tools(
    llm: ChatLLM, messages: Sequence[ChatMessage], tools: list[dict[str, Any]]
) -> Iterator[str]:
    stream: Callable[..., Iterator[str]] = llm.stream
    return stream(messages, tools=tools)


def _takes_tools(llm: ChatLLM) -> bool:
    supports = getattr(llm, "supports_tools", None)
    return bool(supports()) if callable(supports) else False


def _relevant_enough(top: Hit, floor: float | None) -> bool:
    """Whether the best hit clears the bot's relevance floor (on its dense cosine where it has one)."""
    if floor is None:
        return True
    score = top.dense_score if top.dense_score is not None else top.score
    return score >= floor


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
        llm_factory: Callable[[BotProfile], ChatLLM],
        prompts: PromptLibrary,
        settings: Settings,
        publish: Callable[[str], None] | None = None,
        sparse_encoder: SparseEncoder | None = None,
        dense_encoder: DenseEncoder | None = None,
        index: VectorIndex | None = None,
    ) -> None:
        """``sparse_encoder``, ``dense_encoder`` and ``index`` serve grounding (the calibrated floor and
        the sentence checks); left out, the retriever's own are used."""
        self._publish = publish or (lambda _conversation_id: None)
        self._sessions = session_factory
        self._retriever = retriever
        self._llm_factory = llm_factory
        self._prompts = prompts
        self._settings = settings
        # The retriever holds the same encoders and index; they are read from it when not passed.
        self._sparse: SparseEncoder | None = sparse_encoder or getattr(retriever, "_sparse", None)
        self._dense: DenseEncoder | None = dense_encoder or getattr(retriever, "_dense", None)
        self._index: VectorIndex | None = index or getattr(retriever, "_index", None)
        self._floors: RelevanceFloors | None = None
        self._drain_at = math.inf  # monotonic time after which answers in flight are cut short
        dense = self._dense
        self._embed_cached = (
            None if dense is None else EmbeddingCache(dense.encode_documents, EMBED_CACHE_TEXTS)
        )

    # ------------------------------------------------------------------ public API
    def drain(self, deadline: float) -> None:
        """The server is stopping: answers still streaming at ``deadline`` (``time.monotonic()``) end
        with a ``server_shutting_down`` error, their text so far stored as a partial answer, and no new
        LLM call starts after it. Until then, turns in flight finish as usual."""
        self._drain_at = min(self._drain_at, deadline)

    def _check_draining(self) -> None:
        if time.monotonic() >= self._drain_at:
            raise ServerShuttingDownError(SHUTTING_DOWN_MESSAGE)

    def ask(
        self,
        bot_id: str,
        message: str,
        conversation_id: str | None = None,
        *,
        visitor_id: str | None = None,
        page_url: str | None = None,
        is_test: bool = False,
    ) -> TurnResult:
        """Blocking form of a turn; raises ``AnswerFailedError`` when no answer could be produced
        (``TurnFailedError`` when the cause was not the LLM)."""
        result: TurnResult | None = None
        error_code: str | None = None
        for event in self.stream(
            bot_id, message, conversation_id, visitor_id=visitor_id, page_url=page_url, is_test=is_test
        ):
            if event.type is EventType.ERROR:
                error_code = event.data.get("code")
            elif event.type is EventType.DONE:
                result = TurnResult(
                    conversation_id=event.data["conversation_id"],
                    message_id=event.data["message_id"],
                    answer=event.data["answer"],
                    status=event.data["status"],
                    citations=event.data["citations"],
                    standalone_query=event.data.get("standalone_query"),
                    error=event.data.get("error"),
                    owner_mode=event.data.get("owner_mode", OwnerMode.BOT.value),
                    grounded=bool(event.data.get("grounded", False)),
                    answer_kind=event.data.get("answer_kind"),
                    handoff_offered=bool(event.data.get("handoff_offered", False)),
                )
        assert result is not None
        if result.status == MessageStatus.FAILED:
            failure = TurnFailedError if error_code == INTERNAL_ERROR else AnswerFailedError
            raise failure(
                result.error or "the language model failed", result.conversation_id, result.message_id
            )
        return result

    def stream(
        self,
        bot_id: str,
        message: str,
        conversation_id: str | None = None,
        *,
        visitor_id: str | None = None,
        page_url: str | None = None,
        is_test: bool = False,
    ) -> Generator[ChatEvent, None, None]:
        """The turn as events. Closing it early (the client went away) stores what was generated so far.

        ``visitor_id``: a widget visitor's turn; the conversation must be theirs (another visitor's is
        not found), and a new one is started as theirs. The bot's settings are read now, per turn.
        """
        started = time.perf_counter()
        moved: Moved | None = None
        for attempt in retrying(self._settings.db_retry_s):
            with attempt, session_scope(self._sessions) as s:
                profile = BotProfile.of(repo.ensure_bot(s, bot_id), self._settings)
                stored = redact(message) if profile.redact_questions else message  # the model sees `message`
                if conversation_id is None:
                    conv = repo.create_conversation(
                        s,
                        bot_id,
                        title=stored[:120],
                        visitor_id=visitor_id,
                        page_url=page_url,
                        is_test=is_test,
                    )
                else:
                    found = repo.get_conversation(s, bot_id, conversation_id)
                    if found is None or (visitor_id is not None and found.visitor_id != visitor_id):
                        raise ConversationNotFoundError(conversation_id)
                    # the mode is read under the conversation's lock: a handoff cannot slip in between
                    conv = repo.lock_conversation(s, bot_id, conversation_id)
                history = repo.history(s, bot_id, conv.id)
                visitor = repo.add_message(s, bot_id, conv.id, SenderType.VISITOR, stored)
                self._record_message(s, conv, visitor)
                moved = self._visitor_moves(s, conv, profile, message)
                conv_id, visitor_message_id, owner_mode = conv.id, visitor.id, conv.owner_mode
        self._publish(conv_id)

        yield ChatEvent(
            EventType.START, {"conversation_id": conv_id, "visitor_message_id": visitor_message_id}
        )

        if owner_mode != OwnerMode.BOT:
            # People own the conversation: the bot stays silent; the message reached the agents' stream.
            yield ChatEvent(
                EventType.DONE,
                {
                    "conversation_id": conv_id,
                    "message_id": visitor_message_id,
                    "answer": "",
                    "status": FORWARDED,
                    "citations": [],
                    "grounded": False,
                    "answer_kind": None,
                    "owner_mode": owner_mode,
                    "handoff_reason": moved.reason if moved else None,
                },
            )
            return

        yield from self._answer(profile, conv_id, message, history, started)

    # ------------------------------------------------------------------ internals
    def _answer(
        self, profile: BotProfile, conv_id: str, question: str, history: list[ChatMessage], started: float
    ) -> Iterator[ChatEvent]:
        """The turn after ``start``: whatever fails, it ends with ``done`` and nothing is lost."""
        progress = _Progress(
            standalone=question,
            configured_model=profile.llm_model,
            redact=profile.redact_questions,
            setup_s=time.perf_counter() - started,
        )
        bot_id = profile.id
        try:
            yield from self._answer_steps(progress, profile, conv_id, question, history, started)
        except GeneratorExit:
            # Closed early: the client went away. Keep what was generated; nothing more can be sent.
            if progress.message_id is None and not progress.superseded:
                if progress.status is MessageStatus.COMPLETE:
                    progress.status, progress.error = MessageStatus.PARTIAL, CLIENT_DISCONNECTED
                log.info("client disconnected from conversation %s mid-answer", conv_id)
                self._store_failure(progress, bot_id, conv_id, started)
            raise
        except Exception:
            log.exception("chat turn failed for conversation %s of bot %s", conv_id, bot_id)
            progress.status, progress.error = MessageStatus.FAILED, INTERNAL_ERROR_MESSAGE
            message_id = self._store_failure(progress, bot_id, conv_id, started)
            yield from internal_failure_events(
                conv_id,
                message_id,
                answer=progress.answer,
                standalone_query=progress.standalone,
                latency_ms=(time.perf_counter() - started) * 1000,
            )

    def _store_failure(self, progress: _Progress, bot_id: str, conv_id: str, started: float) -> str | None:
        """Store the bot's message of a turn that did not finish, with ``progress``'s status and error
        (or mark the already stored one so); the message's id, or None when the database failed too."""
        try:
            for attempt in retrying(self._settings.db_retry_s):
                with attempt, session_scope(self._sessions) as s:
                    if progress.message_id is not None:
                        repo.update_message(
                            s, bot_id, progress.message_id, status=progress.status, error=progress.error
                        )
                        return progress.message_id
                    conv = repo.lock_conversation(s, bot_id, conv_id)
                    if conv.owner_mode != OwnerMode.BOT:
                        progress.superseded = True  # people took over: the bot's text is not their reply
                        return None
                    bot_msg = repo.add_message(
                        s,
                        bot_id,
                        conv_id,
                        SenderType.BOT,
                        progress.answer,
                        status=progress.status,
                        error=progress.error,
                        standalone_query=progress.mask(progress.standalone),
                        model=_answering_model(progress.llm, progress.configured_model),
                        latency_ms=(time.perf_counter() - started) * 1000,
                    )
                    self._record_message(s, conv, bot_msg)  # agents and webhooks see it like any other
                    message_id = bot_msg.id
        except Exception:
            log.exception("could not store the unfinished answer of conversation %s", conv_id)
            return None
        progress.message_id = message_id
        self._publish(conv_id)
        return message_id

    def _answer_steps(
        self,
        progress: _Progress,
        profile: BotProfile,
        conv_id: str,
        question: str,
        history: list[ChatMessage],
        started: float,
    ) -> Iterator[ChatEvent]:
        settings = self._settings
        bot_id = profile.id
        standalone = question
        llm: ChatLLM | None = None
        error: str | None = None
        condensing = time.perf_counter()
        if history and settings.condense == "concat":
            standalone = progress.standalone = fallback_query(history, question)
        elif history:
            try:
                llm = progress.llm = self._llm_factory(profile)
                standalone = progress.standalone = condense_question(llm, self._prompts, history, question)
            except LLMError as exc:
                # Retrieval can still run on the raw question; the answer call below reports the outage.
                log.warning("condensation failed, retrieving with the raw question: %s", exc)
            progress.llm_wait_s += time.perf_counter() - condensing

        retrieving = time.perf_counter()
        with metrics.time_retrieval():
            hits = self._retriever.retrieve(bot_id, standalone, settings.top_k)
        progress.retrieval_s = time.perf_counter() - retrieving
        if not self._in_scope(profile, hits):
            yield from self._refuse(progress, profile, conv_id, question, standalone, hits, started)
            return

        verify = settings.grounding == "verify"
        sources: Sequence[Hit] = hits
        parser = CitationStreamParser(len(sources))
        gate: AnswerGate | None = None
        status = MessageStatus.COMPLETE
        error_code: str | None = None
        tools: list[dict[str, Any]] | None = None
        try:
            if llm is None:
                llm = progress.llm = self._llm_factory(profile)
            prompt = self._prompts.build_answer(
                standalone if history else question,
                hits,
                history,
                persona=profile.persona,
                context_window=settings.llm_context_window,
                max_answer_tokens=settings.llm_max_tokens,
                count_tokens=llm.count_tokens,
                max_words=profile.answer_max_words,
            )
            sources = prompt.sources  # sources that did not fit the window are not numbered
            parser = CitationStreamParser(len(sources))
            if verify:
                asked = standalone if history else question
                gate = AnswerGate(self._verifier(sources, asked), AnswerTrimmer(profile.answer_max_words))
            tools = [HANDOFF_TOOL] if profile.handoff_enabled and _takes_tools(llm) else None
            self._check_draining()
            calling = time.perf_counter()
            deltas = _stream_with_tools(llm, prompt.messages, tools) if tools else llm.stream(prompt.messages)
            checked = time.monotonic()
            waiting = True
            try:
                for delta in deltas:
                    if waiting:
                        progress.llm_first_at = time.perf_counter()
                        progress.llm_wait_s += progress.llm_first_at - calling
                        waiting = False
                    self._check_draining()
                    visible = parser.feed(delta)
                    if gate is not None and visible:
                        visible = gate.feed(visible)  # only complete, verified sentences pass
                    if visible:
                        progress.shown(started)
                        yield progress.delta(visible)
                    if gate is not None and gate.done:
                        break  # long enough, or repeating itself: stop the model
                    if time.monotonic() - checked >= MODE_CHECK_S:
                        checked = time.monotonic()
                        if self._owner_mode(bot_id, conv_id) != OwnerMode.BOT:
                            break  # people took over: stop talking (nothing of this is stored)
            finally:
                _close_stream(deltas)  # a no-op once read to its end
        except ServerShuttingDownError as exc:
            status = MessageStatus.PARTIAL if progress.streamed else MessageStatus.FAILED
            error, error_code = str(exc), SERVER_SHUTTING_DOWN
            log.warning("answer for conversation %s ended early: the server is shutting down", conv_id)
        except LLMStreamInterruptedError as exc:
            status, error = MessageStatus.PARTIAL, f"the answer stream was interrupted: {exc}"
            log.warning("partial answer stored for conversation %s: %s", conv_id, exc)
        except LLMError as exc:
            status, error = MessageStatus.FAILED, f"the language model is unavailable: {exc}"
            log.error("answer failed for conversation %s: %s", conv_id, exc)
        progress.status, progress.error = status, error
        # the model asked for a person through the tool (a structured call, never read from the text)
        tool_reason = handoff_reason(getattr(llm, "last_tool_calls", None)) if tools else None
        tail = parser.finish()
        if gate is not None:
            tail = gate.feed(tail) + gate.finish()
        if tail:
            progress.shown(started)
            yield progress.delta(tail)
        answer = progress.answer
        if parser.dropped:
            log.warning("dropped citation markers %s (only %d sources)", parser.dropped, len(sources))

        kind = GENERATED
        if gate is not None:
            cited = list(gate.cited)
            for sentence, verdict in gate.dropped:  # the model's sentence may repeat the visitor's words
                log.info("an answer sentence was not shown (unsupported: %s)", verdict.reason)
                log.debug("not shown (unsupported: %s): %r", verdict.reason, sentence[:200])
            if status is MessageStatus.COMPLETE and not answer and tool_reason is None:
                quoted = self._extractive(question if not history else standalone, sources)
                if not quoted:
                    yield from self._refuse(
                        progress, profile, conv_id, question, standalone, hits, started, after_llm=True
                    )
                    return
                kind, text, cited = EXTRACTIVE, quoted[0], quoted[1]
                progress.shown(started)
                yield progress.delta(text)
                answer = progress.answer
        else:
            cited = list(parser.cited)
            if status is MessageStatus.COMPLETE and answer and not cited:
                # Small models often answer from a source without writing its marker: attribute the answer
                # to the sources that support it (content-word overlap above a floor), and show the markers.
                cited = attribute_sources(answer, [h.chunk.text for h in sources])
                if cited:
                    markers = " " + "".join(f"[{n}]" for n in cited)
                    answer += markers
                    yield progress.delta(markers)

        citations = build_citations(sources, cited) if status is not MessageStatus.FAILED else []
        cited_out = [citation_to_dict(c) for c in citations]  # before storing: a failure here loses nothing
        grounded = status is MessageStatus.COMPLETE and bool(citations)
        latency_ms = (time.perf_counter() - started) * 1000
        moved: Moved | None = None
        for attempt in retrying(self._settings.db_retry_s):
            with attempt, session_scope(self._sessions) as s:
                progress.message_id, moved = None, None  # a retried attempt starts over
                # Under the conversation's lock: a handoff that landed while this answer was generated wins,
                # and the answer is not stored as the bot's reply.
                conv = repo.lock_conversation(s, bot_id, conv_id)
                if conv.owner_mode == OwnerMode.BOT and tool_reason is not None and not answer:
                    moved = move(
                        s, conv, Action.REQUEST, reason=Reason.LLM_TOOL, actor="bot", note=tool_reason
                    )
                elif conv.owner_mode == OwnerMode.BOT:
                    bot_msg = repo.add_message(
                        s,
                        bot_id,
                        conv_id,
                        SenderType.BOT,
                        answer,
                        status=status,
                        error=error,
                        standalone_query=progress.mask(standalone),
                        model=_answering_model(llm, profile.llm_model),
                        latency_ms=latency_ms,
                        first_token_ms=progress.first_token_ms,
                        usage=getattr(llm, "last_usage", None),
                    )
                    bot_msg.grounded, bot_msg.answer_kind = grounded, kind
                    repo.add_citations(s, bot_id, bot_msg.id, citations)
                    repo.add_retrieval_log(
                        s,
                        bot_id,
                        bot_msg.id,
                        progress.mask(standalone),
                        hits,
                        {c.chunk.id for c in citations},
                    )
                    self._record_message(s, conv, bot_msg)
                    if tool_reason is not None:
                        moved = move(
                            s, conv, Action.REQUEST, reason=Reason.LLM_TOOL, actor="bot", note=tool_reason
                        )
                    elif error_code != SERVER_SHUTTING_DOWN:  # a restart says nothing of the bot or the LLM
                        moved = self._after_answer(
                            s, conv, profile, grounded=grounded, failed=status is MessageStatus.FAILED
                        )
                    progress.message_id = bot_msg.id
                owner_mode = conv.owner_mode
        self._publish(conv_id)
        if progress.message_id is None and moved is None:
            progress.superseded = True
            yield from _superseded(conv_id, owner_mode)
            return
        message_id = progress.message_id
        if message_id is None:  # the model only called the handoff tool: nothing to store as its answer
            progress.superseded = True  # and nothing to store on a late disconnect either
            status = MessageStatus.FAILED
            cited_out = []
            grounded = False

        for c in cited_out:
            yield ChatEvent(EventType.CITATION, c)
        if error is not None and moved is None:
            code = LLM_STREAM_INTERRUPTED if status is MessageStatus.PARTIAL else LLM_UNAVAILABLE
            yield error_event(error_code or code, error, status, message_id)
        yield ChatEvent(
            EventType.DONE,
            {
                "conversation_id": conv_id,
                "message_id": message_id,
                "answer": answer,
                "status": FORWARDED if moved is not None and status is MessageStatus.FAILED else status.value,
                "citations": cited_out,
                "grounded": grounded,
                "answer_kind": kind if status is not MessageStatus.FAILED else None,
                "standalone_query": standalone,
                "error": error,
                "latency_ms": round(latency_ms, 1),
                "timings": progress.timings(),
                "owner_mode": owner_mode,
                "handoff_reason": moved.reason if moved else None,
            },
        )

    # ------------------------------------------------------------------ grounding
    def _in_scope(self, profile: BotProfile, hits: Sequence[Hit]) -> bool:
        """Whether retrieval found something this bot's content says: an explicit floor (the bot's, or
        the deployment's fixed one) on the dense cosine, else the bot's floor calibrated on off-topic
        questions (``ragbot.retrieval.scope``), else, while that runs, the fallback floor."""
        if not hits:
            return False
        top = hits[0]
        if profile.min_relevance is not None:
            return _relevant_enough(top, profile.min_relevance)
        if self._settings.grounding != "verify":
            return True
        floors = self.floors
        model = floors.model(profile.id) if floors is not None else None
        if model is None or not model.nulls:
            return _relevant_enough(top, self._settings.relevance_fallback)
        return model.in_scope(hit_signals(hits))

    @property
    def floors(self) -> RelevanceFloors | None:
        """The per-bot calibrated floors (None when no index or encoders were given)."""
        if self._floors is None and self._index is not None and self._sparse is not None:
            assert self._dense is not None
            settings = self._settings
            nulls = NullVectors(
                self._sparse,
                self._dense,
                null_cache_path(settings.data_dir, settings.sparse_model, settings.dense_model),
            )
            self._floors = RelevanceFloors(
                self._sessions,
                self._index,
                nulls,
                k=settings.relevance_null_k,
                wait_s=settings.relevance_calibration_wait_s,
            )
        return self._floors

    def _rules(self) -> GroundingRules:
        return GroundingRules(
            min_coverage=self._settings.grounding_min_coverage, min_dense=self._settings.grounding_min_dense
        )

    def _embed(self) -> Callable[[Sequence[str]], Sequence[Sequence[float]]] | None:
        return self._embed_cached

    def _verifier(self, sources: Sequence[Hit], question: str) -> Verifier:
        from ragbot.encoders.lexical import detect_language  # langid's model loads on first use

        passages = [Passage(n=n, text=h.chunk.text, title=h.chunk.title) for n, h in enumerate(sources, 1)]
        return Verifier(
            passages,
            rules=self._rules(),
            embed=self._embed(),
            question=question,
            known_word=known_word(("en", detect_language(question))),
        )

    def _extractive(self, question: str, sources: Sequence[Hit]) -> tuple[str, list[int]] | None:
        """The source sentences that best answer the question, quoted with their markers; None if none
        passes the bar (then the bot declines)."""
        passages = [Passage(n=n, text=h.chunk.text, title=h.chunk.title) for n, h in enumerate(sources, 1)]
        picks = extract(question, passages, rules=self._rules(), embed=self._embed())
        if not picks:
            return None
        text = " ".join(render_markers(p.sentence, [p.n]) for p in picks)
        return text, sorted({p.n for p in picks})

    # ------------------------------------------------------------------ handoff hooks
    def _owner_mode(self, bot_id: str, conv_id: str) -> str:
        """Who owns the conversation now; while the database is unreachable, still the bot (the check
        runs again a moment later, and the answer's store waits for the database)."""
        try:
            with session_scope(self._sessions) as s:
                conv = repo.get_conversation(s, bot_id, conv_id)
                return conv.owner_mode if conv is not None else OwnerMode.BOT.value
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "could not read who owns conversation %s (database unavailable); answering on", conv_id
            )
            return OwnerMode.BOT.value

    def _record_message(self, session: Session, conv: Conversation, message: Message) -> None:
        """Every message reaches the conversation's live stream (agents watch it) and the webhooks."""
        data = message_event(message)
        events_sql.add_event(session, conv.bot_id, conv.id, "message", data)
        enqueue(session, conv.bot_id, "message.created", {"conversation_id": conv.id, "message": data})

    def _visitor_moves(
        self, session: Session, conv: Conversation, profile: BotProfile, message: str
    ) -> Moved | None:
        """What the visitor's message changes before any model runs: writing in a resolved conversation
        reopens it for people; asking for a person in words hands it over; the lead form may be due."""
        if conv.owner_mode == OwnerMode.RESOLVED:
            return move(session, conv, Action.REQUEST, reason=Reason.VISITOR_MESSAGE, actor="visitor")
        if conv.owner_mode != OwnerMode.BOT:
            return None
        if profile.handoff_enabled and asks_for_human(message):
            return move(session, conv, Action.REQUEST, reason=Reason.VISITOR_WORDS, actor="visitor")
        due = ask_after_messages(profile.lead_form)
        if due is not None and profile.lead_form is not None:
            sent = repo.count_messages(session, conv.bot_id, conv.id, SenderType.VISITOR)
            if sent == due:
                offer_lead_form(session, conv, profile.lead_form, f"after_messages:{due}")
        return None

    def _after_answer(
        self, session: Session, conv: Conversation, profile: BotProfile, *, grounded: bool, failed: bool
    ) -> Moved | None:
        """Hand over when the model is down (if the bot says so) or after N answers in a row the bot
        could not ground; a grounded answer resets the count."""
        if failed:
            if profile.handoff_enabled and profile.handoff_on_llm_outage:
                return move(session, conv, Action.REQUEST, reason=Reason.LLM_OUTAGE, actor="bot")
            return None
        if grounded:
            conv.ungrounded_streak = 0
            return None
        conv.ungrounded_streak = (conv.ungrounded_streak or 0) + 1
        limit = profile.handoff_after_ungrounded
        if profile.handoff_enabled and limit and conv.ungrounded_streak >= limit:
            return move(session, conv, Action.REQUEST, reason=Reason.UNGROUNDED, actor="bot")
        return None

    def _refuse(
        self,
        progress: _Progress,
        profile: BotProfile,
        conv_id: str,
        question: str,
        standalone: str,
        hits: Sequence[Hit],
        started: float,
        *,
        after_llm: bool = False,
    ) -> Iterator[ChatEvent]:
        """Say "I don't know" in the bot's words, offer a person (or the contact form when the bot has no
        people to hand over to), and record the question for content-gap analytics. No citations: a
        decline cites nothing. Used before any LLM call (nothing in scope) and after one (nothing in its
        answer could be verified)."""
        bot_id = profile.id
        text = profile.decline_message.strip() or self._prompts.refusal_text(profile.persona)
        top_score = hits[0].dense_score if hits else None
        lead_form_offered = False
        moved: Moved | None = None
        for attempt in retrying(self._settings.db_retry_s):
            with attempt, session_scope(self._sessions) as s:
                progress.message_id, moved, lead_form_offered = None, None, False  # a retry starts over
                conv = repo.lock_conversation(s, bot_id, conv_id)
                if conv.owner_mode == OwnerMode.BOT:
                    bot_msg = repo.add_message(
                        s,
                        bot_id,
                        conv_id,
                        SenderType.BOT,
                        text,
                        status=MessageStatus.REFUSED,
                        standalone_query=progress.mask(standalone),
                        model=_answering_model(progress.llm, profile.llm_model) if after_llm else None,
                        latency_ms=(time.perf_counter() - started) * 1000,
                        first_token_ms=(time.perf_counter() - started) * 1000,
                    )
                    bot_msg.grounded, bot_msg.answer_kind = False, DECLINED
                    repo.add_retrieval_log(s, bot_id, bot_msg.id, progress.mask(standalone), hits, set())
                    repo.record_unanswered(s, bot_id, conv_id, bot_msg.id, progress.mask(question), top_score)
                    self._record_message(s, conv, bot_msg)
                    moved = self._after_answer(s, conv, profile, grounded=False, failed=False)
                    if moved is None and not profile.handoff_enabled and profile.lead_form is not None:
                        offer_lead_form(s, conv, profile.lead_form, "declined")
                        lead_form_offered = True
                    progress.message_id = bot_msg.id
                owner_mode = conv.owner_mode
        self._publish(conv_id)
        if progress.message_id is None:
            progress.superseded = True
            yield from _superseded(conv_id, owner_mode)
            return
        progress.shown(started)
        yield progress.delta(text)
        yield ChatEvent(
            EventType.DONE,
            {
                "conversation_id": conv_id,
                "message_id": progress.message_id,
                "answer": text,
                "status": MessageStatus.REFUSED.value,
                "citations": [],
                "grounded": False,
                "answer_kind": DECLINED,
                "standalone_query": standalone,
                "handoff_offered": profile.handoff_enabled,
                "lead_form_offered": lead_form_offered,
                "timings": progress.timings(),
                "owner_mode": owner_mode,
                "handoff_reason": moved.reason if moved else None,
            },
        )


def _superseded(conv_id: str, owner_mode: str) -> Iterator[ChatEvent]:
    """The end of a turn whose answer a handoff overtook: nothing was stored as the bot's reply."""
    yield ChatEvent(
        EventType.DONE,
        {
            "conversation_id": conv_id,
            "message_id": None,
            "answer": "",
            "status": SUPERSEDED,
            "citations": [],
            "grounded": False,
            "answer_kind": None,
            "owner_mode": owner_mode,
        },
    )
