"""The model's ``handoff(reason)`` tool, end to end through LiteLLM: a real OpenAI-compatible HTTP server
on loopback streams a tool call (name, then the arguments' JSON in fragments), and the conversation goes
to the agents' queue with the model's reason. The call is structured: the same words in the answer text
hand nothing over."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fixtures.loopback import serve_on_loopback
from sqlalchemy import select

from connectors.files import FileConnector
from ragbot.db import repositories as repo
from ragbot.db.models import HandoffEvent
from ragbot.db.session import session_scope
from ragbot.index.edge import EdgeIndex
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges
from ragbot.types import OwnerMode

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
LOOPBACK = "127.0.0.1"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class ScriptedToolServer:
    """Answers every chat completion with a scripted stream: text pieces, then optionally a tool call.
    Records the request bodies so the test can see which tools were offered."""

    def __init__(self, text: list[str], tool_arguments: list[str] | None) -> None:
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                events = [_chunk({"role": "assistant", "content": ""})]
                events += [_chunk({"content": piece}) for piece in text]
                finish = "stop"
                if tool_arguments is not None:
                    call = {"index": 0, "id": "call_1", "type": "function"}
                    events.append(
                        _chunk({"tool_calls": [{**call, "function": {"name": "handoff", "arguments": ""}}]})
                    )
                    events += [
                        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                        for part in tool_arguments
                    ]
                    finish = "tool_calls"
                events += [_chunk({}, finish=finish), b"data: [DONE]\n\n"]
                for event in events:
                    self.wfile.write(event)
                    self.wfile.flush()
                self.close_connection = True

        self._httpd = serve_on_loopback(Handler, name="tool-calling-llm")

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def index(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Any]:
    edge = EdgeIndex(tmp_path_factory.mktemp("tool-edge") / "edge", "ragbot")
    yield edge
    edge.close()


def _runtime(
    tmp_path: Path,
    database_url: str,
    server: ScriptedToolServer,
    index: Any,
    encoders: tuple[Any, Any],
    tools: str,
) -> Runtime:
    from ragbot.config import Settings

    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        llm_model="openai/scripted",
        llm_api_base=server.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        llm_tools=tools,  # type: ignore[arg-type]
        min_relevance=None,
        grounding="off",  # the stand-in model's text is shown as written
    )
    return Runtime(settings, index=index, sparse_encoder=encoders[0], dense_encoder=encoders[1])


def _bot(rt: Runtime) -> str:
    bot_id: str = rt.bots.create("Tools", BotChanges(), actor="tests")["id"]
    rt.ingest_service.ingest(bot_id, FileConnector(str(SAMPLE / "handoff.md"), max_bytes=1_000_000))
    return bot_id


def test_the_model_hands_over_through_the_tool(
    tmp_path: Path, database_url: str, index: Any, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    server = ScriptedToolServer([], ['{"rea', 'son": "wants a refund ', 'on order 42"}'])
    rt = _runtime(tmp_path, database_url, server, index, (real_sparse_encoder, real_dense_encoder), "on")
    try:
        bot_id = _bot(rt)
        result = rt.chat_service.ask(bot_id, "I want my money back for order 42")
        assert result.owner_mode == OwnerMode.PENDING_HUMAN
        assert result.status == "forwarded"
        offered = [tool["function"]["name"] for tool in server.bodies[-1].get("tools", [])]
        assert offered == ["handoff"]
        with session_scope(rt.session_factory) as s:
            event = s.scalars(
                select(HandoffEvent).where(HandoffEvent.conversation_id == result.conversation_id)
            ).one()
            senders = [m.sender_type for m in repo.list_messages(s, bot_id, result.conversation_id)]
        assert (event.reason, event.note) == ("llm_tool", "wants a refund on order 42")
        assert senders == ["visitor", "system"]  # no empty bot answer is stored
    finally:
        rt.close()
        server.close()


def test_the_same_words_in_the_answer_text_hand_nothing_over(
    tmp_path: Path, database_url: str, index: Any, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    server = ScriptedToolServer(['handoff(reason="a person") ', "Ragbot can hand you over [1]."], None)
    rt = _runtime(tmp_path, database_url, server, index, (real_sparse_encoder, real_dense_encoder), "on")
    try:
        bot_id = _bot(rt)
        result = rt.chat_service.ask(bot_id, "How does the handoff work?")
        assert result.owner_mode == OwnerMode.BOT and result.status == "complete"
    finally:
        rt.close()
        server.close()


def test_no_tools_are_offered_when_the_model_takes_none(
    tmp_path: Path, database_url: str, index: Any, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    server = ScriptedToolServer(["An answer [1]."], None)
    rt = _runtime(tmp_path, database_url, server, index, (real_sparse_encoder, real_dense_encoder), "auto")
    try:
        bot_id = _bot(rt)
        rt.chat_service.ask(bot_id, "How does the handoff work?")
        assert "tools" not in server.bodies[-1]  # LiteLLM does not know "openai/scripted" takes tools
    finally:
        rt.close()
        server.close()
