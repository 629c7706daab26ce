"""Human handoff end to end on real parts: SQLite and PostgreSQL, a Qdrant Edge shard in tmp, the packaged
encoders, llm-katan (echo) behind LiteLLM, the HTTP API in process and served by uvicorn for real
server-sent-event clients, and the PostgreSQL and Redis buses across two API processes.

What the issue promises is checked from the outside: a visitor who asks for a person silences the bot (no
LLM call), agents work the queue through the API and only see their own bot's conversations, internal
notes never reach the visitor, automatic triggers hand over, a handoff that lands while an answer streams
wins (the bot's text is never stored as the reply), and agent replies reach the visitor's open stream in
about a second, through the bus, from another process too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.live import LiveServer
from fixtures.sse import sse_events
from integration.katan import LOOPBACK, CuttingSSEServer, KatanServer, free_port, llm_settings

from ragbot.api.app import create_app
from ragbot.db import events as events_sql
from ragbot.db import repositories as repo
from ragbot.db.models import utcnow
from ragbot.db.session import session_scope
from ragbot.handoff import service as handoff_service
from ragbot.handoff import stream as handoff_stream
from ragbot.handoff.states import Action
from ragbot.leads.form import LeadField, LeadForm
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

ORIGIN = "https://kettles.example"
REDIS_URL = "redis://127.0.0.1:6379/0"
DOC = (
    "# Brewmaster kettle care\n\n"
    "Descale the Brewmaster kettle every four weeks with citric acid. Never immerse the base in water; "
    "wipe it with a damp cloth. The kettle switches off by itself when the water boils.\n"
)
#: The echo model answers with the visitor's words, so a marker here is one the "model" wrote: the answer
#: is grounded and cites source 1.
QUESTION = "How often should I descale the Brewmaster kettle? [1]"
ASK_FOR_PERSON = "Can I talk to a human please?"
#: What the slow model streams in the race tests, one piece every PIECE_DELAY_S: after the first delta the
#: answer needs over two seconds more, ample time for the handoff to land first even on a busy machine.
PIECES = ["Descale ", "the ", "Brewmaster ", "kettle ", "every four ", "weeks with ", "citric acid ", "[1]."]
PIECE_DELAY_S = 0.3
#: Agent replies must reach an open stream faster than this; the streams' own re-read is set far above it.
DELIVERY_S = 2.0


# --------------------------------------------------------------------------- the deployment


@dataclass
class World:
    """One deployment (database + shard + encoders) with its runtime, shared by a module's tests."""

    runtime: Runtime
    katan: KatanServer
    docs: Path
    backend: str
    extra: list[Runtime] = field(default_factory=list)

    def new_bot(self, name: str, *, content: bool = True, **changes: Any) -> str:
        """A bot whose widget may run on ORIGIN, without rate limits, with the kettle page ingested."""
        bot = self.runtime.bots.create(
            name,
            BotChanges(allowed_origins=[ORIGIN], rate_visitor_per_minute=0, rate_ip_per_minute=0, **changes),
            actor="tests",
        )
        if content:
            from connectors.files import FileConnector

            connector = FileConnector(str(self.docs), max_bytes=self.runtime.settings.max_upload_bytes)
            report = self.runtime.ingest_service.ingest(bot["id"], connector)
            assert report.added == 1, report
        return str(bot["id"])

    def visitor(self, bot_id: str) -> dict[str, str]:
        """Headers of a new widget visitor of the bot, as their browser sends them."""
        bot = self.runtime.bots.get(bot_id)
        assert bot is not None
        token, _ = self.runtime.visitor_sessions.issue(bot_id, str(bot["public_key"]))
        return {"Authorization": f"Bearer {token}", "Origin": ORIGIN}

    def sibling(self, **settings: Any) -> Runtime:
        """Another runtime over the same database, shard and encoders (other LLM settings, say)."""
        runtime = Runtime(
            self.runtime.settings.model_copy(update=settings),
            engine=self.runtime.engine,
            session_factory=self.runtime.session_factory,
            index=self.runtime.index,
            sparse_encoder=self.runtime.sparse_encoder,
            dense_encoder=self.runtime.dense_encoder,
        )
        self.extra.append(runtime)
        return runtime

    def client(self, runtime: Runtime | None = None) -> TestClient:
        return TestClient(create_app(runtime=runtime or self.runtime, warmup=False))

    def messages(self, bot_id: str, conversation_id: str) -> list[tuple[str, str, str, bool]]:
        """(sender, content, status, internal) of every stored message, in order."""
        with session_scope(self.runtime.session_factory) as s:
            return [
                (m.sender_type, m.content, m.status, m.internal)
                for m in repo.list_messages(s, bot_id, conversation_id)
            ]

    def events(self, bot_id: str, conversation_id: str) -> list[tuple[int, str, dict[str, Any], bool]]:
        with session_scope(self.runtime.session_factory) as s:
            rows = events_sql.events_after(s, bot_id, conversation_id, 0, visitor_only=False)
            return [(r.id, r.type, dict(r.data), r.for_visitor) for r in rows]

    def reasons(self, bot_id: str, conversation_id: str) -> list[str]:
        detail = self.runtime.handoff.detail(bot_id, conversation_id)
        assert detail is not None
        return [h["reason"] for h in detail["handoffs"]]

    def llm_calls(self) -> int:
        """Chat completions llm-katan has served so far (its Prometheus counter)."""
        with httpx.Client(trust_env=False, timeout=5) as client:
            text = client.get(f"http://{LOOPBACK}:{self.katan.port}/metrics").text
        found = re.search(r"^llm_katan_requests_total\{[^}]*\} (\d+)", text, re.MULTILINE)
        assert found, text
        return int(found.group(1))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scratch_database: Callable[[str], AbstractContextManager[str]],
    katan_echo: KatanServer,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[World]:
    data = tmp_path_factory.mktemp(f"handoff-{request.param}")
    docs = data / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text(DOC, encoding="utf-8")
    with scratch_database(request.param) as url:
        settings = llm_settings(katan_echo.base_url, data_dir=data, database_url=url, llm_max_retries=0)
        runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
        built = World(runtime=runtime, katan=katan_echo, docs=docs, backend=request.param)
        try:
            yield built
        finally:
            for other in built.extra:
                other.close()
            runtime.close()


@pytest.fixture(scope="module")
def kettle(world: World) -> str:
    """The shop's bot, with content, used by the visitor and agent flows."""
    return world.new_bot("Kettle shop")


@pytest.fixture(scope="module")
def rival(world: World) -> str:
    """Another tenant's bot: its agents must not see the kettle shop's conversations."""
    return world.new_bot("Rival shop", content=False)


@pytest.fixture
def slow_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams re-read on their own only every 30 s, so anything that arrives sooner came by the bus."""
    monkeypatch.setattr(handoff_stream, "POLL_S", 30.0)


def _chat(
    client: TestClient, headers: dict[str, str], message: str, conversation_id: str | None = None
) -> Any:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = client.post("/v1/chat", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _illegal(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "illegal_transition"


# --------------------------------------------------------------------------- server-sent events over HTTP


@dataclass
class StreamEvent:
    id: int
    type: str
    data: dict[str, Any]
    at: float  # time.monotonic() when it arrived


class EventReader:
    """A real SSE client on its own thread: reads a conversation's event stream until ``until`` matches
    an event (then hangs up), recording each event with its arrival time."""

    def __init__(
        self,
        base_url: str,
        conversation_id: str,
        headers: dict[str, str],
        *,
        until: Callable[[StreamEvent], bool],
    ) -> None:
        self.events: list[StreamEvent] = []
        self.error: BaseException | None = None
        self._args = (base_url, f"/v1/conversations/{conversation_id}/events", headers)
        self._until = until
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=20)

    def _run(self) -> None:
        base_url, path, headers = self._args
        timeout = httpx.Timeout(5.0, read=40.0)
        try:
            with (
                httpx.Client(base_url=base_url, trust_env=False, timeout=timeout) as client,
                client.stream("GET", path, headers=headers) as response,
            ):
                assert response.status_code == 200, response.read().decode()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        key, _, value = line.partition(": ")
                        fields[key] = value
                        continue
                    if "event" in fields:
                        event = StreamEvent(
                            int(fields["id"]), fields["event"], json.loads(fields["data"]), time.monotonic()
                        )
                        with self._changed:
                            self.events.append(event)
                            self._changed.notify_all()
                        if self._until(event):
                            return
                    fields = {}
        except BaseException as exc:  # reported by wait_for, on the test's thread
            with self._changed:
                self.error = exc
                self._changed.notify_all()

    def wait_for(self, matches: Callable[[StreamEvent], bool], timeout: float = 15.0) -> StreamEvent:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((e for e in self.events if matches(e)), None)
                if found is not None:
                    return found
                assert self.error is None, f"the stream failed: {self.error!r}"
                left = deadline - time.monotonic()
                assert left > 0 and self._thread.is_alive(), (
                    f"no matching event within {timeout} s; got {[(e.type, e.data) for e in self.events]}"
                )
                self._changed.wait(min(left, 0.5))


def _parked(runtime: Runtime, conversation_id: str, timeout: float = 10.0) -> None:
    """Wait until the server's stream for the conversation sleeps on the bus, so the wake-up under test is
    not lost in the instant between its last read and its wait (that instant costs a poll period)."""
    waiters = runtime.bus.waiters  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while conversation_id not in waiters._waiting:
        assert time.monotonic() < deadline, "the stream never waited on the bus"
        time.sleep(0.02)


def _content(text: str) -> Callable[[StreamEvent], bool]:
    return lambda e: e.type == "message" and e.data.get("content") == text


# --------------------------------------------------------------------------- the visitor asks for a person


def test_visitor_request_silences_the_bot_without_an_llm_call(world: World, kettle: str) -> None:
    visitor = world.visitor(kettle)
    with world.client() as client:
        first = _chat(client, visitor, QUESTION)
        assert first["status"] == "complete" and first["owner_mode"] == "bot"
        conversation_id = first["conversation_id"]

        asked = _ok(
            client.post(
                f"/v1/conversations/{conversation_id}/handoff",
                json={"reason": "my kettle leaks"},
                headers=visitor,
            )
        )
        assert asked["owner_mode"] == "pending_human" and asked["changed"] is True
        assert asked["system_message"]["sender_type"] == "system"
        assert asked["system_message"]["content"] == handoff_service.NOTE_REQUESTED
        again = _ok(client.post(f"/v1/conversations/{conversation_id}/handoff", headers=visitor))
        assert again["owner_mode"] == "pending_human" and again["changed"] is False

        shown = _ok(client.get(f"/v1/conversations/{conversation_id}", headers=visitor))
        assert shown["owner_mode"] == "pending_human"
        assert [(m["sender_type"], m["content"]) for m in shown["messages"]][2:] == [
            ("system", handoff_service.NOTE_REQUESTED)
        ]

        calls = world.llm_calls()
        forwarded = _chat(client, visitor, "Are you still there?", conversation_id)
        assert forwarded["status"] == "forwarded" and forwarded["owner_mode"] == "pending_human"
        assert forwarded["answer"] == "" and forwarded["citations"] == []
        streamed = client.post(
            "/v1/chat",
            json={"message": "Hello?", "conversation_id": conversation_id, "stream": True},
            headers=visitor,
        )
        events = sse_events(streamed.text)
        assert [kind for kind, _ in events] == ["start", "done"]
        assert events[-1][1]["status"] == "forwarded"
        assert events[-1][1]["message_id"] == events[0][1]["visitor_message_id"]
        assert world.llm_calls() == calls, "no model ran while people own the conversation"

    stored = world.messages(kettle, conversation_id)
    assert [(sender, content) for sender, content, _, _ in stored] == [
        ("visitor", QUESTION),
        ("bot", first["answer"]),
        ("system", handoff_service.NOTE_REQUESTED),
        ("visitor", "Are you still there?"),
        ("visitor", "Hello?"),
    ]
    assert forwarded["message_id"] is not None
    assert world.reasons(kettle, conversation_id) == ["visitor_request"]


def test_asking_for_a_person_in_words_hands_over_without_an_llm_call(world: World, kettle: str) -> None:
    visitor = world.visitor(kettle)
    calls = world.llm_calls()
    with world.client() as client:
        turn = _chat(client, visitor, ASK_FOR_PERSON)
    assert world.llm_calls() == calls
    assert turn["status"] == "forwarded" and turn["owner_mode"] == "pending_human"
    stored = world.messages(kettle, turn["conversation_id"])
    assert [(sender, content) for sender, content, _, _ in stored] == [
        ("visitor", ASK_FOR_PERSON),
        ("system", handoff_service.NOTE_REQUESTED),
    ]
    assert world.reasons(kettle, turn["conversation_id"]) == ["visitor_words"]


def test_illegal_moves_are_409(world: World, kettle: str) -> None:
    agent = admin_headers(world.runtime, bot_id=kettle, name="alice")
    quiet = world.new_bot("No people here", content=False, handoff_enabled=False)
    with world.client() as client:
        conversation_id = _chat(client, world.visitor(kettle), QUESTION)["conversation_id"]
        base = f"/v1/agent/conversations/{conversation_id}"
        for action in ("resolve", "claim", "reopen", "release"):  # nobody asked for a person yet
            _illegal(client.post(f"{base}/{action}", headers=agent))
        _ok(client.post(f"/v1/conversations/{conversation_id}/handoff", headers=agent))
        _illegal(client.post(f"{base}/reopen", headers=agent))
        assert _ok(client.post(f"{base}/claim", headers=agent))["owner_mode"] == "human"
        _illegal(client.post(f"{base}/reopen", headers=agent))
        assert _ok(client.post(f"{base}/resolve", headers=agent))["owner_mode"] == "resolved"
        _illegal(client.post(f"{base}/claim", headers=agent))
        _illegal(client.post(f"{base}/resolve", headers=agent))
        assert _ok(client.post(f"{base}/release", headers=agent))["owner_mode"] == "bot"
        _illegal(client.post(f"{base}/release", headers=agent))

        visitor = world.visitor(quiet)
        quiet_conversation = _chat(client, visitor, ASK_FOR_PERSON)  # the words alone hand nothing over
        assert quiet_conversation["owner_mode"] == "bot" and quiet_conversation["status"] == "refused"
        refused = client.post(
            f"/v1/conversations/{quiet_conversation['conversation_id']}/handoff", headers=visitor
        )
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "handoff_disabled"
    assert world.reasons(kettle, conversation_id) == [
        "admin_request",
        "agent_claim",
        "agent_resolve",
        "agent_release",
    ]


# --------------------------------------------------------------------------- the agent side


def test_agent_works_a_conversation_through_the_api(world: World, kettle: str, rival: str) -> None:
    alice = admin_headers(world.runtime, bot_id=kettle, name="alice")
    outsider = admin_headers(world.runtime, bot_id=rival, name="mallory")
    visitor = world.visitor(kettle)
    with world.client() as client:
        answered = _chat(client, visitor, QUESTION)
        assert answered["citations"], answered
        conversation_id = answered["conversation_id"]
        before_waiting = utcnow()
        _ok(client.post(f"/v1/conversations/{conversation_id}/handoff", headers=visitor))
        after_waiting = utcnow()
        base = f"/v1/agent/conversations/{conversation_id}"

        def queued(**params: Any) -> list[str]:
            rows = _ok(client.get("/v1/agent/conversations", params=params, headers=alice))
            return [row["id"] for row in rows]

        assert conversation_id in queued()
        assert conversation_id in queued(mode="pending_human")
        assert conversation_id not in queued(mode="human")
        assert conversation_id in queued(waiting_since=after_waiting.isoformat())
        assert conversation_id not in queued(
            waiting_since=(before_waiting - timedelta(seconds=1)).isoformat()
        )
        row = next(
            r for r in _ok(client.get("/v1/agent/conversations", headers=alice)) if r["id"] == conversation_id
        )
        assert row["owner_mode"] == "pending_human" and row["assignee"] is None
        assert row["last_message"]["content"] == handoff_service.NOTE_REQUESTED

        # Another bot's agent cannot see or touch it, on any route.
        assert conversation_id not in [
            r["id"] for r in _ok(client.get("/v1/agent/conversations", headers=outsider))
        ]
        for method, path, body in [
            ("GET", base, None),
            ("POST", f"{base}/claim", None),
            ("POST", f"{base}/messages", {"content": "Hi from the rival"}),
            ("POST", f"{base}/resolve", None),
            ("POST", f"{base}/reopen", None),
            ("POST", f"{base}/release", None),
            ("GET", f"/v1/conversations/{conversation_id}/events", None),
        ]:
            refused = client.request(method, path, json=body, headers=outsider)
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["error"]["code"] == "conversation_not_found"

        claimed = _ok(client.post(f"{base}/claim", headers=alice))
        assert claimed["owner_mode"] == "human"
        assert claimed["system_message"]["content"] == "alice joined the conversation."
        assignee = next(
            r for r in _ok(client.get("/v1/agent/conversations", headers=alice)) if r["id"] == conversation_id
        )["assignee"]
        assert assignee and "alice" in assignee
        assert conversation_id in queued(mode="human", assignee=assignee)
        assert conversation_id not in queued(assignee="someone else")

        reply = _ok(
            client.post(
                f"{base}/messages", json={"content": "Hi, Alice here. Every four weeks."}, headers=alice
            ),
            201,
        )
        assert reply["sender_type"] == "agent" and "alice" in reply["author"] and reply["internal"] is False
        note = _ok(
            client.post(
                f"{base}/messages",
                json={"content": "Customer sounds annoyed.", "internal": True},
                headers=alice,
            ),
            201,
        )
        assert note["internal"] is True

        seen = _ok(client.get(f"/v1/conversations/{conversation_id}", headers=visitor))
        contents = [m["content"] for m in seen["messages"]]
        assert "Hi, Alice here. Every four weeks." in contents
        assert "Customer sounds annoyed." not in contents
        agent_message = next(m for m in seen["messages"] if m["sender_type"] == "agent")
        assert "alice" in agent_message["author"]

        detail = _ok(client.get(base, headers=alice))
        by_content = {m["content"]: m for m in detail["messages"]}
        assert by_content["Customer sounds annoyed."]["internal"] is True
        bot_answer = by_content[answered["answer"]]
        assert [c["chunk_id"] for c in bot_answer["citations"]] == [
            c["chunk_id"] for c in answered["citations"]
        ]
        assert bot_answer["retrieval"] and any(hit["cited"] for hit in bot_answer["retrieval"])
        assert {hit["query"] for hit in bot_answer["retrieval"]} == {answered["standalone_query"]}

        resolved = _ok(client.post(f"{base}/resolve", headers=alice))
        assert resolved["owner_mode"] == "resolved"
        calls = world.llm_calls()
        reopened = _chat(client, visitor, "One more thing: is citric acid safe?", conversation_id)
        assert reopened["status"] == "forwarded" and reopened["owner_mode"] == "pending_human"
        assert world.llm_calls() == calls

        released = _ok(client.post(f"{base}/release", headers=alice))
        assert released["owner_mode"] == "bot"
        assert released["system_message"]["content"] == handoff_service.NOTE_RELEASED
        again = _chat(client, visitor, QUESTION, conversation_id)
        assert again["status"] == "complete" and again["owner_mode"] == "bot" and again["citations"]
        assert world.llm_calls() > calls

    internal = [
        e for e in world.events(kettle, conversation_id) if e[2].get("content") == "Customer sounds annoyed."
    ]
    assert [for_visitor for *_, for_visitor in internal] == [False]
    assert world.reasons(kettle, conversation_id) == [
        "visitor_request",
        "agent_claim",
        "agent_resolve",
        "visitor_message",
        "agent_release",
    ]
    stored = world.messages(kettle, conversation_id)
    assert [sender for sender, *_ in stored][-2:] == ["visitor", "bot"]


# --------------------------------------------------------------------------- automatic triggers


def test_two_ungrounded_answers_in_a_row_hand_over(world: World) -> None:
    bot = world.new_bot("Strict", min_relevance=1.0, handoff_after_ungrounded=2)
    visitor = world.visitor(bot)
    with world.client() as client:
        first = _chat(client, visitor, QUESTION)
        assert first["status"] == "refused" and first["owner_mode"] == "bot"
        conversation_id = first["conversation_id"]
        second = _chat(client, visitor, "And how do I clean the base?", conversation_id)
        assert second["status"] == "refused" and second["owner_mode"] == "pending_human"
        third = _chat(client, visitor, "Hello?", conversation_id)
        assert third["status"] == "forwarded"
    assert world.reasons(bot, conversation_id) == ["ungrounded"]
    assert [sender for sender, *_ in world.messages(bot, conversation_id)] == [
        "visitor",
        "bot",
        "visitor",
        "bot",
        "system",
        "visitor",
    ]


def test_a_grounded_answer_resets_the_ungrounded_count(world: World) -> None:
    bot = world.new_bot("Forgiving", min_relevance=1.0, handoff_after_ungrounded=2)
    visitor = world.visitor(bot)
    with world.client() as client:
        conversation_id = _chat(client, visitor, QUESTION)["conversation_id"]  # declined: 1
        world.runtime.bots.update(bot, BotChanges(min_relevance=-1.0), actor="tests")
        assert _chat(client, visitor, QUESTION, conversation_id)["status"] == "complete"  # grounded: 0
        world.runtime.bots.update(bot, BotChanges(min_relevance=1.0), actor="tests")
        third = _chat(client, visitor, QUESTION, conversation_id)  # declined: 1
    assert third["status"] == "refused" and third["owner_mode"] == "bot"
    assert world.reasons(bot, conversation_id) == []


def test_llm_outage_queues_for_a_person_instead_of_failing(world: World) -> None:
    bot = world.new_bot("Outage-proof", handoff_on_llm_outage=True)
    down = world.sibling(llm_api_base=f"http://{LOOPBACK}:{free_port()}/v1")  # nothing listens there
    with world.client(down) as client:
        visitor = world.visitor(bot)
        turn = _chat(client, visitor, QUESTION)
        assert turn["status"] == "forwarded" and turn["owner_mode"] == "pending_human"
        streamed = client.post(
            "/v1/chat", json={"message": QUESTION, "stream": True}, headers=world.visitor(bot)
        )
        events = sse_events(streamed.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "error" not in kinds, kinds
    assert events[-1][1]["status"] == "forwarded" and events[-1][1]["owner_mode"] == "pending_human"
    for conversation_id in (turn["conversation_id"], events[0][1]["conversation_id"]):
        stored = world.messages(bot, conversation_id)
        assert [(sender, status) for sender, _, status, _ in stored] == [
            ("visitor", "complete"),
            ("bot", "failed"),
            ("system", "complete"),
        ]
        assert stored[0][1] == QUESTION
        assert world.reasons(bot, conversation_id) == ["llm_outage"]


# --------------------------------------------------------------------------- handoff racing a streamed answer


@pytest.fixture(scope="module")
def slow_llm() -> Iterator[CuttingSSEServer]:
    """A real OpenAI-compatible server that streams the answer slowly, one piece every PIECE_DELAY_S."""
    with CuttingSSEServer(PIECES, mode="complete", piece_delay_s=PIECE_DELAY_S) as server:
        yield server


@dataclass
class StreamedTurn:
    conversation_id: str
    deltas_before_handoff: int
    deltas: list[str]
    done: dict[str, Any]
    handoff: dict[str, Any] | None


def _stream_and_hand_over(url: str, headers: dict[str, str], *, after: str) -> StreamedTurn:
    """Stream a chat turn over HTTP; when the first ``after`` event ("delta" or "done") arrives, another
    thread asks for a person through the API while this one goes on reading."""
    deltas: list[str] = []
    handoff: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    conversation_id, done, at = "", {}, -1

    def request_person() -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as other:
            response = other.post(f"/v1/conversations/{conversation_id}/handoff", headers=headers)
            handoff.update(status=response.status_code, body=response.json())

    with (
        httpx.Client(base_url=url, trust_env=False, timeout=60) as client,
        client.stream(
            "POST", "/v1/chat", json={"message": QUESTION, "stream": True}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
                continue
            if not line.startswith("data: "):
                continue
            data = json.loads(line.removeprefix("data: "))
            if kind == "start":
                conversation_id = data["conversation_id"]
            elif kind == "delta":
                deltas.append(data["text"])
            elif kind == "done":
                done = data
            if kind == after and not threads:
                at = len(deltas)
                threads.append(threading.Thread(target=request_person))
                threads[0].start()
                threads[0].join()  # the handoff has committed before this stream reads on
    return StreamedTurn(conversation_id, at, deltas, done, handoff or None)


def test_a_handoff_during_a_streaming_answer_is_never_stored_as_the_reply(
    world: World, slow_llm: CuttingSSEServer
) -> None:
    bot = world.new_bot("Racing")
    runtime = world.sibling(llm_api_base=slow_llm.base_url)
    calls = slow_llm.requests
    with LiveServer(runtime) as url:
        turn = _stream_and_hand_over(url, world.visitor(bot), after="delta")
    assert slow_llm.requests == calls + 1
    assert turn.handoff is not None and turn.handoff["status"] == 200, turn.handoff
    assert turn.handoff["body"]["owner_mode"] == "pending_human" and turn.handoff["body"]["changed"]
    assert turn.deltas_before_handoff == 1
    assert len(turn.deltas) > turn.deltas_before_handoff, "the model went on streaming after the handoff"
    assert turn.done["status"] == "superseded", turn.done
    assert turn.done["owner_mode"] == "pending_human" and turn.done["message_id"] is None

    stored = world.messages(bot, turn.conversation_id)
    assert [(sender, content) for sender, content, _, _ in stored] == [
        ("visitor", QUESTION),
        ("system", handoff_service.NOTE_REQUESTED),
    ]
    streamed = "".join(turn.deltas).strip()
    assert streamed and all(
        streamed not in content and turn.deltas[0].strip() not in content for _, content, *_ in stored[1:]
    )
    assert not [e for e in world.events(bot, turn.conversation_id) if e[2].get("sender_type") == "bot"]
    log.info(
        "[%s] race: %d delta(s) before the handoff, %d streamed in all, done %s, stored %s",
        world.backend,
        turn.deltas_before_handoff,
        len(turn.deltas),
        turn.done["status"],
        [sender for sender, *_ in stored],
    )


def test_a_handoff_after_the_answer_was_stored_keeps_the_answer(
    world: World, slow_llm: CuttingSSEServer
) -> None:
    bot = world.new_bot("Just in time")
    runtime = world.sibling(llm_api_base=slow_llm.base_url)
    with LiveServer(runtime) as url:
        turn = _stream_and_hand_over(url, world.visitor(bot), after="done")
    assert turn.done["status"] == "complete" and turn.done["owner_mode"] == "bot"
    assert turn.handoff is not None and turn.handoff["body"]["owner_mode"] == "pending_human"
    stored = world.messages(bot, turn.conversation_id)
    assert [(sender, content) for sender, content, _, _ in stored] == [
        ("visitor", QUESTION),
        ("bot", turn.done["answer"]),
        ("system", handoff_service.NOTE_REQUESTED),
    ]
    assert turn.done["answer"] == "".join(turn.deltas).strip()


# --------------------------------------------------------------------------- the live event stream


def test_agent_replies_reach_the_visitors_open_stream_at_once(
    world: World, kettle: str, slow_poll: None
) -> None:
    alice = admin_headers(world.runtime, bot_id=kettle, name="alice")
    visitor = world.visitor(kettle)
    with LiveServer(world.runtime) as url, httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        conversation_id = _ok(http.post("/v1/chat", json={"message": ASK_FOR_PERSON}, headers=visitor))[
            "conversation_id"
        ]
        base = f"/v1/agent/conversations/{conversation_id}"
        _ok(http.post(f"{base}/claim", headers=alice))
        joined = "alice joined the conversation."

        with EventReader(url, conversation_id, visitor, until=_content("Bye for now.")) as stream:
            stream.wait_for(_content(joined))  # the backlog arrived
            _parked(world.runtime, conversation_id)
            sent = time.monotonic()
            reply = _ok(
                http.post(f"{base}/messages", json={"content": "Hi, Alice here."}, headers=alice), 201
            )
            got = stream.wait_for(_content("Hi, Alice here."), timeout=10)
            latency = got.at - sent
            _ok(
                http.post(
                    f"{base}/messages", json={"content": "Refund approved.", "internal": True}, headers=alice
                ),
                201,
            )
            _ok(http.post(f"{base}/messages", json={"content": "Bye for now."}, headers=alice), 201)
            stream.wait_for(_content("Bye for now."))
        log.info("[%s] reply reached the visitor's open stream in %.3f s", world.backend, latency)
        assert latency < DELIVERY_S, f"the reply took {latency:.2f} s"
        assert got.data["sender_type"] == "agent" and "alice" in got.data["author"]
        assert got.data["id"] == reply["id"]
        visitor_saw = [e.data.get("content") for e in stream.events]
        assert "Refund approved." not in visitor_saw
        assert visitor_saw[:2] == [ASK_FOR_PERSON, handoff_service.NOTE_REQUESTED]
        ids = [e.id for e in stream.events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

        # Reconnecting with Last-Event-ID replays only what came after it.
        resume = {**visitor, "Last-Event-ID": str(got.id)}
        with EventReader(url, conversation_id, resume, until=_content("Bye for now.")) as again:
            again.wait_for(_content("Bye for now."))
        assert [e.id for e in again.events] == [e.id for e in stream.events if e.id > got.id]
        assert all(e.id > got.id for e in again.events)

        # The bot's agents read the same stream, internal notes included.
        with EventReader(url, conversation_id, alice, until=_content("Bye for now.")) as agents:
            agents.wait_for(_content("Bye for now."))
        note = next(e for e in agents.events if e.data.get("content") == "Refund approved.")
        assert note.data["internal"] is True
        assert {e.id for e in stream.events} < {e.id for e in agents.events}

        # Nobody else's stream: another visitor of the same bot, no credentials.
        stranger = http.get(f"/v1/conversations/{conversation_id}/events", headers=world.visitor(kettle))
        assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "conversation_not_found"
        assert http.get(f"/v1/conversations/{conversation_id}/events").status_code == 401


# --------------------------------------------------------------------------- two API processes


def _redis_reachable() -> bool:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.mark.parametrize("bus", ["postgres", "redis"])
def test_a_reply_through_another_process_reaches_the_stream_through_the_bus(
    world: World, kettle: str, bus: str, slow_poll: None
) -> None:
    if bus == "postgres" and world.backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL")
    if bus == "redis" and not _redis_reachable():
        message = f"Redis unreachable at {REDIS_URL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    settings = world.runtime.settings.model_copy(
        update={"events_bus": bus, "redis_url": REDIS_URL if bus == "redis" else None}
    )
    shared = {
        "index": world.runtime.index,
        "sparse_encoder": world.runtime.sparse_encoder,
        "dense_encoder": world.runtime.dense_encoder,
    }
    # Two API processes: each its own engine, connection pool and bus listener, one database.
    first, second = Runtime(settings, **shared), Runtime(settings, **shared)
    try:
        for runtime in (first, second):
            assert type(runtime.bus).__name__.lower().startswith(bus)
            assert runtime.bus.wait_ready(10)  # type: ignore[attr-defined]
        alice = admin_headers(world.runtime, bot_id=kettle, name="alice")
        visitor = world.visitor(kettle)
        with LiveServer(first) as url_1, LiveServer(second) as url_2:
            with httpx.Client(base_url=url_1, trust_env=False, timeout=30) as http_1:
                turn = _ok(http_1.post("/v1/chat", json={"message": ASK_FOR_PERSON}, headers=visitor))
            conversation_id = turn["conversation_id"]
            text = f"Alice here, replying through the other process ({bus})."
            with (
                EventReader(url_1, conversation_id, visitor, until=_content(text)) as stream,
                httpx.Client(base_url=url_2, trust_env=False, timeout=30) as http_2,
            ):
                stream.wait_for(_content(handoff_service.NOTE_REQUESTED))
                _parked(first, conversation_id)
                sent = time.monotonic()
                _ok(
                    http_2.post(
                        f"/v1/agent/conversations/{conversation_id}/messages",
                        json={"content": text},
                        headers=alice,
                    ),
                    201,
                )
                got = stream.wait_for(_content(text), timeout=10)
        latency = got.at - sent
        log.info(
            "[%s] %s bus: reply through app 2 reached app 1's stream in %.3f s", world.backend, bus, latency
        )
        assert latency < DELIVERY_S, f"{bus}: the reply took {latency:.2f} s"
        assert got.data["sender_type"] == "agent"
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------- nobody claims in time


def test_unclaimed_conversations_get_the_lead_form_once(world: World) -> None:
    form = LeadForm(fields=[LeadField(name="email"), LeadField(name="name")], ask=["no_agent"])
    bot = world.new_bot("Lead catcher", content=False, lead_form=form, agent_claim_timeout_s=10)
    with world.client() as client:
        waiting = _chat(client, world.visitor(bot), ASK_FOR_PERSON)["conversation_id"]
        claimed = _chat(client, world.visitor(bot), ASK_FOR_PERSON)["conversation_id"]
    world.runtime.handoff.act(bot, claimed, Action.CLAIM, actor="key:rb_test (bob)")

    def lead_forms(conversation_id: str) -> list[dict[str, Any]]:
        return [data for _, kind, data, _ in world.events(bot, conversation_id) if kind == "lead_form"]

    assert lead_forms(waiting) == [], "the bot asks only when nobody came"
    assert world.runtime.handoff.sweep_unclaimed(now=utcnow() + timedelta(seconds=5)) == 0
    later = utcnow() + timedelta(seconds=60)
    assert world.runtime.handoff.sweep_unclaimed(now=later) == 1
    assert world.runtime.handoff.sweep_unclaimed(now=later + timedelta(seconds=60)) == 0

    offered = lead_forms(waiting)
    assert len(offered) == 1
    assert offered[0]["reason"] == "no_agent"
    assert [f["name"] for f in offered[0]["form"]["fields"]] == ["email", "name"]
    notes = [content for sender, content, *_ in world.messages(bot, waiting) if sender == "system"]
    assert notes == [handoff_service.NOTE_REQUESTED, handoff_service.NOTE_NO_AGENT]
    assert lead_forms(claimed) == []
    assert handoff_service.NOTE_NO_AGENT not in [c for _, c, *_ in world.messages(bot, claimed)]
