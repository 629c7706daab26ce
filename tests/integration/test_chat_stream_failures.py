"""Chat turns whose non-LLM parts fail (the vector index, the database) or whose client goes away.

Faults are injected through the runtime's own seams, on real parts: a ``VectorIndex`` that delegates to the
real Qdrant Edge shard but raises on its search calls, and a session factory on the real SQLite engine
whose sessions fail to flush chosen rows. The LLM is a real OpenAI-compatible server on loopback.

Whatever fails once the turn has started, the stream ends with one typed ``error`` event and ``done``
(nothing internal leaked), the visitor's message stays stored, and the bot's message is stored as
failed; a client that disconnects mid-answer leaves the partial answer stored as ``partial``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.live import LiveServer
from fixtures.sse import sse_events
from integration.katan import LOOPBACK, CuttingSSEServer, llm_settings
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ragbot.api.app import create_app
from ragbot.db import events as events_sql
from ragbot.db import repositories as repo
from ragbot.db.models import CitationRow, Message
from ragbot.db.session import make_session_factory, session_scope
from ragbot.runtime import Runtime
from ragbot.types import EventType

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
BOT = "stream-failures"
QUESTION = "How does hybrid retrieval fuse sparse and dense lists?"
PIECES = ["Ragbot fuses ", "the sparse and dense ", "lists by their scores [1]."]
ANSWER = "".join(PIECES)
#: Internal detail carried by every injected fault: it must reach the log, never a client.
SECRET = "/srv/secret-shard-7"


# --------------------------------------------------------------------------- fault seams


class IndexBackendError(RuntimeError):
    """What a storage engine raises when a shard or a server breaks under a query."""


class FaultyIndex:
    """A ``VectorIndex`` that forwards to a real one, except that its query calls raise."""

    QUERIES = frozenset({"hybrid_search", "hybrid_candidates", "search_sparse", "search_dense", "chunks"})

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self.QUERIES:
            return attr

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.failures += 1
            raise IndexBackendError(f"segment checksum mismatch in {SECRET}/segments/0")

        return fail


class FlushFault:
    """Sessions on a real engine whose flush fails while it would insert a matching row.

    ``times`` bounds how many flushes fail (``None``: every one), like a database that drops a
    connection once, or one whose disk is gone.
    """

    def __init__(self, engine: Engine, matches: Callable[[object], bool], *, times: int | None = 1) -> None:
        self.session_factory: sessionmaker[Session] = make_session_factory(engine)
        self._matches = matches
        self._remaining = times
        self.failures = 0
        event.listen(self.session_factory, "before_flush", self._before_flush)

    def _before_flush(self, session: Session, _context: Any, _instances: Any) -> None:
        if self._remaining == 0 or not any(self._matches(row) for row in session.new):
            return
        if self._remaining is not None:
            self._remaining -= 1
        self.failures += 1
        raise OperationalError(
            "INSERT INTO messages ...", {}, OSError(f"disk I/O error at {SECRET}/ragbot.db")
        )


def is_bot_message(row: object) -> bool:
    return isinstance(row, Message) and row.sender_type == "bot"


def is_citation(row: object) -> bool:
    return isinstance(row, CitationRow)


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def llm() -> Iterator[CuttingSSEServer]:
    """A real OpenAI-compatible streaming server that always answers ``ANSWER``, citing source [1]."""
    with CuttingSSEServer(PIECES, mode="complete", piece_delay_s=0.01) as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def base(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scratch_database: Callable[[str], AbstractContextManager[str]],
    llm: CuttingSSEServer,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[Runtime]:
    """Sample content ingested into a real Qdrant Edge shard, on each database backend."""
    from connectors.files import FileConnector

    data = tmp_path_factory.mktemp("chat-stream-failures")
    with scratch_database(request.param) as url:
        settings = llm_settings(llm.base_url, data_dir=data, database_url=url, bot_id=BOT, llm_max_retries=0)
        runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
        runtime.ingest_service.ingest(BOT, FileConnector(str(SAMPLE), max_bytes=settings.max_upload_bytes))
        yield runtime
        runtime.close()


def _runtime(base: Runtime, base_url: str | None = None, **components: Any) -> Runtime:
    settings = base.settings
    if base_url is not None:
        settings = settings.model_copy(update={"llm_api_base": base_url})
    parts: dict[str, Any] = {
        "engine": base.engine,
        "session_factory": base.session_factory,
        "sparse_encoder": base.sparse_encoder,
        "dense_encoder": base.dense_encoder,
        "index": base.index,
    }
    parts.update(components)
    return Runtime(settings, **parts)


def _client(runtime: Runtime) -> TestClient:
    # Server exceptions become responses, as they would for a real client.
    return TestClient(
        create_app(runtime=runtime, warmup=False),
        raise_server_exceptions=False,
        headers=admin_headers(runtime),
    )


def _messages(runtime: Runtime, conversation_id: str) -> list[Message]:
    with session_scope(runtime.session_factory) as s:
        return repo.list_messages(s, BOT, conversation_id)


def _assert_internal_error(events: list[tuple[str, dict[str, Any]]], raw: str) -> dict[str, Any]:
    """The stream ended with exactly one typed error, then done, and leaked nothing internal."""
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start", kinds
    assert kinds[-2:] == ["error", "done"], kinds
    assert kinds.count("error") == 1 and kinds.count("done") == 1, kinds
    assert "citation" not in kinds, kinds
    error, done = events[-2][1], events[-1][1]
    assert error["code"] == "internal_error"
    assert error["message"] and isinstance(error["message"], str)
    assert error["status"] == "failed"
    assert done["status"] == "failed"
    assert done["message_id"] == error["message_id"]
    assert done["conversation_id"] == events[0][1]["conversation_id"]
    assert done["error"] == error["message"]
    assert SECRET not in raw and "Traceback" not in raw and "OperationalError" not in raw
    return done


def _assert_asking_again_works(base: Runtime, conversation_id: str) -> None:
    with _client(_runtime(base)) as client:
        again = client.post("/v1/chat", json={"message": QUESTION, "conversation_id": conversation_id})
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "complete"
    assert again.json()["answer"] == ANSWER


# --------------------------------------------------------------------------- streaming


def test_index_failure_during_retrieval_ends_the_stream_with_error_and_done(
    base: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    index = FaultyIndex(base.index)
    with _client(_runtime(base, index=index)) as client:
        response = client.post("/v1/chat", json={"message": QUESTION, "stream": True})
        assert response.status_code == 200
        events = sse_events(response.text)
        done = _assert_internal_error(events, response.text)
        assert [kind for kind, _ in events] == ["start", "error", "done"]
        conversation = client.get(f"/v1/conversations/{done['conversation_id']}")
    assert index.failures >= 1
    assert SECRET in caplog.text, "the cause is logged server-side"
    assert conversation.status_code == 200, conversation.text
    stored = conversation.json()["messages"]
    assert [(m["sender_type"], m["status"]) for m in stored] == [("visitor", "complete"), ("bot", "failed")]
    assert stored[0]["content"] == QUESTION
    assert stored[1]["id"] == done["message_id"]
    assert SECRET not in (stored[1]["error"] or "")
    _assert_asking_again_works(base, done["conversation_id"])


@pytest.mark.parametrize(
    "row", [pytest.param(is_bot_message, id="bot-message"), pytest.param(is_citation, id="citations")]
)
def test_database_failure_storing_the_answer_ends_the_stream_with_error_and_done(
    base: Runtime, row: Callable[[object], bool]
) -> None:
    fault = FlushFault(base.engine, row, times=1)
    with _client(_runtime(base, session_factory=fault.session_factory)) as client:
        response = client.post("/v1/chat", json={"message": QUESTION, "stream": True})
        assert response.status_code == 200
        events = sse_events(response.text)
    assert fault.failures == 1
    done = _assert_internal_error(events, response.text)
    deltas = "".join(d["text"] for kind, d in events if kind == "delta")
    assert deltas == ANSWER, "the answer was streamed before storing it failed"
    stored = _messages(base, done["conversation_id"])
    assert [(m.sender_type, m.status) for m in stored] == [("visitor", "complete"), ("bot", "failed")]
    assert stored[0].content == QUESTION
    assert stored[1].id == done["message_id"]
    assert stored[1].content == done["answer"] == ANSWER, "what the visitor saw is kept"
    assert stored[1].citations == []
    _assert_asking_again_works(base, done["conversation_id"])


def test_database_down_for_the_whole_answer_still_ends_the_stream(base: Runtime) -> None:
    fault = FlushFault(base.engine, is_bot_message, times=None)
    with _client(_runtime(base, session_factory=fault.session_factory)) as client:
        response = client.post("/v1/chat", json={"message": QUESTION, "stream": True})
        events = sse_events(response.text)
    assert fault.failures >= 2, "storing the failure was attempted too"
    done = _assert_internal_error(events, response.text)
    assert done["message_id"] is None
    stored = _messages(base, done["conversation_id"])
    assert [(m.sender_type, m.content) for m in stored] == [("visitor", QUESTION)]
    _assert_asking_again_works(base, done["conversation_id"])


def test_llm_fault_error_events_share_the_typed_shape(base: Runtime) -> None:
    """The LLM-fault path and the internal-fault path emit the same error payload, with a code."""
    with CuttingSSEServer(PIECES[:2], mode="reset") as cutting:
        events = list(_runtime(base, cutting.base_url).chat_service.stream(BOT, QUESTION))
    interrupted = next(e.data for e in events if e.type is EventType.ERROR)
    assert interrupted["code"] == "llm_stream_interrupted" and interrupted["status"] == "partial"

    events = list(_runtime(base, f"http://{LOOPBACK}:9/v1").chat_service.stream(BOT, QUESTION))
    unavailable = next(e.data for e in events if e.type is EventType.ERROR)
    assert unavailable["code"] == "llm_unavailable" and unavailable["status"] == "failed"

    events = list(_runtime(base, index=FaultyIndex(base.index)).chat_service.stream(BOT, QUESTION))
    internal = next(e.data for e in events if e.type is EventType.ERROR)
    assert (
        set(internal) == set(unavailable) == set(interrupted) == {"code", "message", "status", "message_id"}
    )


# --------------------------------------------------------------------------- client disconnect


def test_closing_the_stream_after_the_first_delta_stores_the_partial_answer(base: Runtime) -> None:
    runtime = _runtime(base)
    stream = runtime.chat_service.stream(BOT, QUESTION)
    start = next(stream)
    assert start.type is EventType.START
    first = next(e for e in stream if e.type is EventType.DELTA)
    stream.close()  # what the server does when the client goes away
    stored = _messages(runtime, start.data["conversation_id"])
    assert [m.sender_type for m in stored] == ["visitor", "bot"]
    assert stored[0].content == QUESTION
    bot = stored[1]
    assert bot.status == "partial"
    assert bot.content == first.data["text"].strip()
    assert "disconnect" in (bot.error or "")
    # the agents' live stream (and the webhooks) see the partial answer like any other message
    with session_scope(runtime.session_factory) as s:
        seen = events_sql.events_after(s, BOT, start.data["conversation_id"], 0, visitor_only=False)
        assert [e.data["id"] for e in seen if e.type == "message"] == [m.id for m in stored]
    _assert_asking_again_works(base, start.data["conversation_id"])


def test_closing_the_stream_right_after_start_keeps_the_visitors_message(base: Runtime) -> None:
    runtime = _runtime(base)
    stream = runtime.chat_service.stream(BOT, QUESTION)
    start = next(stream)
    stream.close()
    stored = _messages(runtime, start.data["conversation_id"])
    assert [(m.sender_type, m.content) for m in stored] == [("visitor", QUESTION)]


def test_client_hanging_up_mid_stream_over_http_stores_the_partial_answer(base: Runtime) -> None:
    slow_pieces = ["Ragbot fuses ", "the sparse ", "and dense ", "lists ", "by their ", "scores [1]."]
    with CuttingSSEServer(slow_pieces, mode="complete", piece_delay_s=0.4) as slow:
        # The provider's side: its writes fail once ragbot stops reading the answer nobody will see.
        provider_errors: list[type[BaseException] | None] = []
        slow._httpd.handle_error = lambda *_: provider_errors.append(sys.exc_info()[0])  # type: ignore[method-assign]
        runtime = _runtime(base, slow.base_url)
        with (
            LiveServer(runtime) as url,
            httpx.Client(base_url=url, trust_env=False, timeout=30, headers=admin_headers(runtime)) as client,
        ):
            conversation_id = None
            with client.stream("POST", "/v1/chat", json={"message": QUESTION, "stream": True}) as response:
                assert response.status_code == 200
                kind = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: ") and kind == "start":
                        conversation_id = json.loads(line.removeprefix("data: "))["conversation_id"]
                    elif line.startswith("data: ") and kind == "delta":
                        break  # hang up after the first delta
            assert conversation_id is not None
            deadline = time.monotonic() + 15
            stored = _messages(runtime, conversation_id)
            while len(stored) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
                stored = _messages(runtime, conversation_id)
            while not provider_errors and time.monotonic() < deadline:
                time.sleep(0.1)
    assert [m.sender_type for m in stored] == ["visitor", "bot"], "the partial answer was not stored"
    bot = stored[1]
    assert bot.status == "partial"
    assert bot.content.startswith("Ragbot fuses")
    assert bot.content != "".join(slow_pieces).strip()
    assert "disconnect" in (bot.error or "")
    assert provider_errors and issubclass(provider_errors[0] or type(None), ConnectionError), (
        "the LLM stream was closed upstream"
    )


# --------------------------------------------------------------------------- blocking JSON route


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("index", id="index-failure"),
        pytest.param("database", id="database-failure"),
    ],
)
def test_failure_without_streaming_is_a_json_5xx_and_keeps_the_message(base: Runtime, fault: str) -> None:
    with _client(_runtime(base)) as client:
        first = client.post("/v1/chat", json={"message": "What is ragbot?"})
        assert first.status_code == 200, first.text
        conversation_id = first.json()["conversation_id"]

    components: dict[str, Any]
    if fault == "index":
        components = {"index": FaultyIndex(base.index)}
    else:
        components = {"session_factory": FlushFault(base.engine, is_bot_message, times=1).session_factory}
    question = f"How are sparse and dense results combined? ({fault})"
    with _client(_runtime(base, **components)) as client:
        response = client.post("/v1/chat", json={"message": question, "conversation_id": conversation_id})
    assert 500 <= response.status_code < 600, response.text
    body = response.json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["message"]
    assert SECRET not in response.text and "Traceback" not in response.text
    assert body["conversation_id"] == conversation_id
    assert body["message_id"]

    stored = _messages(base, conversation_id)
    assert [(m.sender_type, m.status) for m in stored] == [
        ("visitor", "complete"),
        ("bot", "complete"),
        ("visitor", "complete"),
        ("bot", "failed"),
    ]
    assert stored[2].content == question
    assert stored[3].id == body["message_id"]
    _assert_asking_again_works(base, conversation_id)
