"""The HTTP API end to end on real parts: real encoders, Qdrant Edge and qdrant-client (local mode as the
server stand-in), SQLite and PostgreSQL, and a real OpenAI-compatible server (llm-katan) behind LiteLLM.

Every combination of database and index backend runs the same cases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.sse import sse_events
from integration.katan import KatanServer

from ragbot.api.app import create_app
from ragbot.config import Settings
from ragbot.runtime import Runtime

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"

COMBOS = [
    pytest.param(("sqlite", "edge"), id="sqlite-edge"),
    pytest.param(("sqlite", "qdrant-client"), id="sqlite-qdrant_client"),
    pytest.param(("postgresql", "edge"), id="postgresql-edge", marks=pytest.mark.postgres),
    pytest.param(("postgresql", "qdrant-client"), id="postgresql-qdrant_client", marks=pytest.mark.postgres),
]


def _settings(data_dir: Path, database_url: str, llm_base: str, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        llm_model="openai/katan-echo",
        llm_api_base=llm_base,
        llm_api_key="sk-test",
        llm_max_retries=0,
        api_path_roots=[SAMPLE.parent, data_dir],
        **extra,
    )


class Stack:
    """One deployment: settings + a shared index + encoders, able to 'restart' its API."""

    def __init__(self, settings: Settings, index: Any, sparse: Any, dense: Any) -> None:
        self.settings, self.index, self.sparse, self.dense = settings, index, sparse, dense

    def runtime(self, **overrides: Any) -> Runtime:
        settings = overrides.pop("settings", self.settings)
        return Runtime(
            settings, index=self.index, sparse_encoder=self.sparse, dense_encoder=self.dense, **overrides
        )

    def client(self, runtime: Runtime | None = None) -> TestClient:
        runtime = runtime or self.runtime()
        return TestClient(create_app(runtime=runtime, warmup=False), headers=admin_headers(runtime))


def _make_index(kind: str, data_dir: Path) -> Any:
    if kind == "edge":
        from ragbot.index.edge import EdgeIndex

        return EdgeIndex(data_dir / "edge", "ragbot")
    from qdrant_client import QdrantClient

    from ragbot.index.remote import QdrantServerIndex

    return QdrantServerIndex(client=QdrantClient(location=":memory:"), collection="ragbot")


@pytest.fixture(scope="module", params=COMBOS)
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scratch_database: Callable[[str], AbstractContextManager[str]],
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[Stack]:
    db_kind, index_kind = request.param
    data_dir = tmp_path_factory.mktemp(f"api-{db_kind}-{index_kind}")
    katan = KatanServer(log_dir=data_dir).start()
    with scratch_database(db_kind) as url:
        index = _make_index(index_kind, data_dir)
        stack = Stack(
            _settings(data_dir, url, katan.base_url), index, real_sparse_encoder, real_dense_encoder
        )
        with stack.client() as client:
            response = client.post("/v1/sources?wait=120", json={"target": str(SAMPLE)})
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "succeeded", response.json()
        yield stack
        index.close()
    katan.stop()


def _cites_first_source(question: str) -> str:
    """The echo server answers with the visitor's last message, so a marker in it is a marker the
    "model" emitted: this drives the real parse -> map -> store path for citations."""
    return f"{question} [1]"


def test_chat_answers_with_citations_that_survive_a_restart(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/chat",
            json={"message": _cites_first_source("How does hybrid retrieval fuse sparse and dense lists?")},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["answer"]
        assert body["citations"], body
        first = body["citations"][0]
        assert first["path"].endswith(".md") and first["snippet"] and first["n"] >= 1
        conversation_id = body["conversation_id"]

    with stack.client() as client:  # a new app and runtime on the same database and index
        response = client.get(f"/v1/conversations/{conversation_id}")
        assert response.status_code == 200, response.text
        conversation = response.json()
        senders = [m["sender_type"] for m in conversation["messages"]]
        assert senders == ["visitor", "bot"]
        bot_message = conversation["messages"][1]
        assert bot_message["id"] == body["message_id"]
        assert [c["chunk_id"] for c in bot_message["citations"]] == [c["chunk_id"] for c in body["citations"]]


def test_chat_streams_typed_events(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/chat",
            json={"message": _cites_first_source("What does SPLADE add to a passage?"), "stream": True},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert "delta" in kinds and "citation" in kinds
    assert kinds.index("citation") > max(i for i, k in enumerate(kinds) if k == "delta")
    done = events[-1][1]
    assert done["status"] == "complete"
    assert "".join(d["text"] for k, d in events if k == "delta").strip() == done["answer"]
    # where the time to first token went: each phase measured, none longer than the whole
    timings = done["timings"]
    phases = ("setup_ms", "retrieval_ms", "llm_wait_ms", "held_ms")
    assert all(isinstance(timings[p], float) and timings[p] >= 0 for p in phases), timings
    assert sum(timings[p] for p in phases) <= timings["first_token_ms"] + 1, timings


def test_follow_up_continues_the_conversation(stack: Stack) -> None:
    with stack.client() as client:
        first = client.post("/v1/chat", json={"message": "What is ragbot?"}).json()
        second = client.post(
            "/v1/chat", json={"message": "How do I install it?", "conversation_id": first["conversation_id"]}
        )
        assert second.status_code == 200, second.text
        assert second.json()["conversation_id"] == first["conversation_id"]
        messages = client.get(f"/v1/conversations/{first['conversation_id']}").json()["messages"]
    assert [m["sender_type"] for m in messages] == ["visitor", "bot", "visitor", "bot"]
    # RAGBOT_CONDENSE=concat (the default): retrieval read the previous question with the follow-up,
    # and no LLM call came before the answer's.
    assert stack.settings.condense == "concat"
    assert second.json()["standalone_query"] == "What is ragbot? How do I install it?"


def test_bad_input_gets_clear_errors(stack: Stack) -> None:
    with stack.client() as client:
        missing = client.post("/v1/chat", json={"message": "hi", "conversation_id": "no-such-conversation"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "conversation_not_found"
        assert client.get("/v1/conversations/no-such-conversation").status_code == 404
        for message in ("", "   "):
            empty = client.post("/v1/chat", json={"message": message})
            assert empty.status_code == 422, empty.text
            assert "error" in empty.json()
        long = client.post("/v1/chat", json={"message": "x" * (stack.settings.max_message_chars + 1)})
        assert long.status_code == 422
        assert long.json()["error"]["code"] == "message_too_long"
        assert client.post("/v1/chat", json={"nope": 1}).status_code == 422
        assert client.get("/v1/sources/jobs/unknown").status_code == 404


def test_llm_outage_is_a_503_and_keeps_the_visitors_message(stack: Stack, tmp_path: Path) -> None:
    broken = KatanServer("--error-rate", "1.0", log_dir=tmp_path).start()
    try:
        failing = stack.settings.model_copy(update={"llm_api_base": broken.base_url})
        with stack.client(stack.runtime(settings=failing)) as client:
            response = client.post("/v1/chat", json={"message": "What is ragbot?"})
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"]["code"] == "llm_unavailable"
            conversation_id = body["conversation_id"]
            stored = client.get(f"/v1/conversations/{conversation_id}").json()["messages"]
            assert stored[0]["sender_type"] == "visitor" and stored[0]["content"] == "What is ragbot?"
            assert stored[1]["status"] == "failed"

            streamed = client.post("/v1/chat", json={"message": "What is ragbot?", "stream": True})
            kinds = [k for k, _ in sse_events(streamed.text)]
            assert kinds[0] == "start" and "error" in kinds and kinds[-1] == "done"
    finally:
        broken.stop()
    with stack.client() as client:  # asking again with the provider back works
        again = client.post(
            "/v1/chat", json={"message": "What is ragbot?", "conversation_id": conversation_id}
        )
        assert again.status_code == 200, again.text
        assert again.json()["answer"]


def test_sources_upload_path_and_limits(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as client:
        upload = client.post(
            "/v1/sources?wait=60",
            files={
                "file": (
                    "pricing.md",
                    b"# Pricing\n\nThe Zephyr plan costs 42 euros per seat.",
                    "text/markdown",
                )
            },
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["report"]["added"] == 1

        bad = client.post(
            "/v1/sources?wait=60",
            files={"file": ("broken.pdf", b"%PDF-1.7 this is not really a pdf", "application/pdf")},
        )
        assert bad.status_code == 200
        assert bad.json()["report"]["failed"] == 1

        too_big = client.post(
            "/v1/sources",
            files={"file": ("big.txt", b"a" * (stack.settings.max_upload_bytes + 1), "text/plain")},
        )
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "upload_too_large"

        outside = client.post("/v1/sources", json={"target": "/etc"})
        assert outside.status_code == 403
        assert client.post("/v1/sources", json={"target": "ftp://example.invalid/x"}).status_code == 422

        answer = client.post(
            "/v1/chat", json={"message": _cites_first_source("How much does the Zephyr plan cost per seat?")}
        ).json()
        assert any(c["path"] == "upload:pricing.md" for c in answer["citations"]), answer["citations"]


def test_healthz_and_openapi(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/healthz").json()["status"] == "ok"
        paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/chat", "/v1/conversations/{conversation_id}", "/v1/sources", "/healthz"} <= set(paths)
