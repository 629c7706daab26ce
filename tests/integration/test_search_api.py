"""``POST /v1/search`` end to end on real parts: SQLite, Qdrant Edge, the packaged encoders, the sample docs.

The LLM points at a closed loopback port, so every 200 here proves search never calls a model; and no
conversation is stored. Visitors search their own bot only.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from integration.katan import llm_settings
from sqlalchemy import func, select

from ragbot.api.app import create_app
from ragbot.db.models import Conversation, Message
from ragbot.runtime import Runtime
from ragbot.services.search import MAX_TOP_K
from ragbot.tenancy.bots import BotChanges

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
CLOSED_LLM = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, a model call would fail
ORIGIN_A = "https://docs.example.org"
ORIGIN_B = "https://rival.example.org"
RIVAL_DOC = (
    "# Rival SPLADE notes\n\nThe rival shop tunes its SPLADE expansion with the secret word zanzibar. "
    "Passages about kettles are expanded with the term teapot.\n"
)


@dataclass
class World:
    runtime: Runtime
    client: TestClient
    bot_a: dict[str, Any]
    bot_b: dict[str, Any]
    admin: dict[str, str]
    key_b: dict[str, str]
    rival_dir: Path

    def search(self, headers: dict[str, str], **body: Any) -> httpx.Response:
        return self.client.post("/v1/search", json=body, headers=headers)

    def visitor(self, bot: dict[str, Any], origin: str) -> dict[str, str]:
        opened = self.client.post(
            "/v1/widget/session", json={"public_key": bot["public_key"]}, headers={"Origin": origin}
        )
        assert opened.status_code == 200, opened.text
        return {"Authorization": f"Bearer {opened.json()['token']}", "Origin": origin}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[World]:
    from connectors.files import FileConnector

    data = tmp_path_factory.mktemp("search-api")
    settings = llm_settings(CLOSED_LLM, data_dir=data, llm_max_retries=0)
    runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
    bot_a = runtime.bots.create("Docs", BotChanges(allowed_origins=[ORIGIN_A]), actor="tests")
    bot_b = runtime.bots.create(
        "Rival", BotChanges(allowed_origins=[ORIGIN_B], rate_visitor_per_minute=3), actor="tests"
    )
    rival_dir = data / "rival"
    rival_dir.mkdir()
    (rival_dir / "rival.md").write_text(RIVAL_DOC, encoding="utf-8")
    limit = settings.max_upload_bytes
    runtime.ingest_service.ingest(bot_a["id"], FileConnector(str(SAMPLE), max_bytes=limit))
    runtime.ingest_service.ingest(bot_b["id"], FileConnector(str(rival_dir), max_bytes=limit))
    admin, _ = runtime.api_keys.create(name="search-admin")
    key_b, _ = runtime.api_keys.create(name="search-b", bot_id=bot_b["id"])
    with TestClient(create_app(runtime=runtime, warmup=False)) as client:
        yield World(runtime, client, bot_a, bot_b, bearer(admin), bearer(key_b), rival_dir)
    runtime.close()


def _stored_turns(runtime: Runtime) -> int:
    with runtime.session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(Conversation)) or 0) + int(
            s.scalar(select(func.count()).select_from(Message)) or 0
        )


def _word_of(term: str, words: list[str]) -> bool:
    """A highlighted word belongs to a query word or a matched term when they share their stem's start
    (``expansion``/``expand``, ``passages``/``passage``), compared case-insensitively."""
    stem = term.lower()[:5]
    return any(w.lower().startswith(stem) or stem.startswith(w.lower()[:5]) for w in words if len(w) > 1)


def test_results_are_ranked_with_highlights_on_the_query_terms(world: World) -> None:
    before = _stored_turns(world.runtime)
    query = "How does SPLADE expand a passage?"
    response = world.search(world.admin, query=query, bot_id=world.bot_a["id"], top_k=4)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bot_id"] == world.bot_a["id"] and body["query"] == query and body["top_k"] == 4
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    hybrid = [r["scores"]["hybrid"] for r in results]
    assert hybrid == sorted(hybrid, reverse=True), hybrid
    top = results[0]
    assert top["path"].endswith("splade.md") and top["url"] is None and top["title"]
    assert set(top["scores"]) == {"hybrid", "sparse", "dense", "bm25"}
    assert top["scores"]["sparse"] > 0 and top["scores"]["dense"] > 0
    if world.runtime.settings.lexical_retriever:  # BM25 is the third retriever: "splade" is in the text
        assert top["scores"]["bm25"] is not None and top["scores"]["bm25"] > 0, top["scores"]
        assert top["ranks"]["bm25"] is not None
    assert top["matched_terms"] and all(
        {"term", "contribution", "in_text"} <= set(t) for t in top["matched_terms"]
    )

    query_words = [*query.replace("?", "").split(), *(t["term"] for t in top["matched_terms"])]
    for result in results:
        snippet, spans = result["snippet"], result["highlights"]
        assert "\n" not in snippet and len(snippet) <= 300
        lit = [snippet[s:e] for s, e in spans]
        assert all(_word_of(word, query_words) for word in lit), (lit, snippet)
        assert result["snippet_html"].count("<mark>") == len(spans)
        plain = html.unescape(result["snippet_html"].replace("<mark>", "").replace("</mark>", ""))
        assert plain == snippet
        title = result["title"]
        assert all(_word_of(title[s:e], query_words) for s, e in result["title_highlights"])
    lit_top = {top["snippet"][s:e].lower() for s, e in top["highlights"]}
    assert "splade" in lit_top, top["snippet"]
    assert _stored_turns(world.runtime) == before, "a search stored a conversation or message"


def test_top_k_defaults_and_is_bounded(world: World) -> None:
    default = world.search(world.admin, query="install ragbot", bot_id=world.bot_a["id"])
    assert default.status_code == 200, default.text
    assert default.json()["top_k"] == world.runtime.settings.top_k
    assert len(default.json()["results"]) == world.runtime.settings.top_k
    everything = world.search(world.admin, query="install ragbot", bot_id=world.bot_a["id"], top_k=MAX_TOP_K)
    assert everything.status_code == 200
    assert 0 < len(everything.json()["results"]) <= MAX_TOP_K
    for top_k in (0, -1, MAX_TOP_K + 1, "many"):
        refused = world.search(world.admin, query="install", bot_id=world.bot_a["id"], top_k=top_k)
        assert refused.status_code == 422, (top_k, refused.text)
        assert refused.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": ""}, 422, "invalid_request"),
        ({"query": "   \n "}, 422, "empty_query"),
        ({"query": "x" * 4001}, 422, "query_too_long"),
        ({"query": "install", "bot_id": "no-such-bot"}, 404, "bot_not_found"),
        ({"query": "install", "model": "gpt-4"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ],
)
def test_bad_requests_get_typed_errors(world: World, body: dict[str, Any], status: int, code: str) -> None:
    response = world.search(world.admin, **body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_credentials_are_those_of_the_chat(world: World) -> None:
    a = world.bot_a["id"]
    assert world.client.post("/v1/search", json={"query": "install"}).status_code == 401
    assert world.search(bearer("rb_not-a-real-key"), query="install").status_code == 401
    public = world.search(bearer(world.bot_a["public_key"]), query="install", bot_id=a)
    assert public.status_code == 403
    scoped = world.search(world.key_b, query="install", bot_id=a)
    assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "forbidden"
    own = world.search(world.key_b, query="install")  # a scoped key names no bot: its own
    assert own.status_code == 200 and own.json()["bot_id"] == world.bot_b["id"]


def test_a_visitor_searches_its_own_bot_and_never_sees_another(world: World) -> None:
    visitor_a = world.visitor(world.bot_a, ORIGIN_A)
    mine = world.search(visitor_a, query="How does SPLADE expand a passage?")
    assert mine.status_code == 200, mine.text
    assert mine.json()["bot_id"] == world.bot_a["id"]
    assert all(str(SAMPLE) in r["path"] for r in mine.json()["results"])
    named = world.search(visitor_a, query="SPLADE", bot_id=world.bot_a["id"])
    assert named.status_code == 200

    visitor_b = world.visitor(world.bot_b, ORIGIN_B)
    crossing = world.search(visitor_b, query="How does SPLADE expand a passage?", bot_id=world.bot_a["id"])
    assert crossing.status_code == 403 and crossing.json()["error"]["code"] == "forbidden"
    assert "splade.md" not in crossing.text
    theirs = world.search(visitor_b, query="How does SPLADE expand a passage?")
    assert theirs.status_code == 200, theirs.text
    results = theirs.json()["results"]
    assert results and all(r["path"].startswith(str(world.rival_dir)) for r in results), results
    assert "zanzibar" in results[0]["snippet"]
    wrong_page = {**visitor_a, "Origin": ORIGIN_B}  # bot A's session used from a page A does not allow
    assert world.search(wrong_page, query="SPLADE").status_code == 403


def test_a_visitor_over_the_bots_minute_limit_gets_a_429(world: World) -> None:
    visitor = world.visitor(world.bot_b, ORIGIN_B)
    allowed = world.bot_b["rate_visitor_per_minute"]
    for n in range(allowed):
        assert world.search(visitor, query=f"kettle {n}").status_code == 200
    refused = world.search(visitor, query="kettle again")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited" and refused.json()["limit"] == "visitor"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert world.search(world.visitor(world.bot_b, ORIGIN_B), query="kettle").status_code == 200
    assert world.search(world.key_b, query="kettle").status_code == 200  # admin keys are not limited


@pytest.mark.parametrize(
    "query",
    [
        "refund \ud800 policy",
        "\x00\x01",
        "🙂" * 50,
        "اين سياسة الاسترداد؟",
        "退款政策",
        "<script>alert(1)</script>",
    ],
)
def test_odd_queries_are_answered_not_crashed(world: World, query: str) -> None:
    body = json.dumps({"query": query, "bot_id": world.bot_a["id"]})  # ASCII: a lone surrogate as \ud800
    headers = {**world.admin, "Content-Type": "application/json"}
    response = world.client.post("/v1/search", content=body, headers=headers)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        for result in response.json()["results"]:
            assert "<script>" not in result["snippet_html"]
