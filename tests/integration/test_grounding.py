"""Grounded or declined, through the real API: real encoders, Qdrant Edge, SQLite, and llm-katan's echo
server behind LiteLLM as the model. The echo server answers with the visitor's last message, so the
visitor's message *is* the model's answer here: a test writes exactly the sentences the model "invents".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.sse import sse_events
from integration.katan import KatanServer, echo_deployment_settings
from sqlalchemy import select
from typer.testing import CliRunner

from ragbot.api.app import create_app
from ragbot.config import get_settings
from ragbot.db.models import Message, UnansweredQuestion
from ragbot.runtime import Runtime

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
DECLINE = "I can't answer that from our documentation yet."
INVENTED = "The enterprise plan costs $499 per month"


class World:
    def __init__(self, runtime: Runtime, bot_id: str) -> None:
        self.runtime, self.bot_id = runtime, bot_id

    def client(self) -> TestClient:
        return TestClient(create_app(runtime=self.runtime, warmup=False), headers=admin_headers(self.runtime))

    def bot_message(self, message_id: str) -> Message:
        with self.runtime.session_factory() as s:
            found = s.get(Message, message_id)
            assert found is not None
            s.expunge(found)
            return found


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    katan_echo: KatanServer,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[World]:
    from connectors.files import FileConnector
    from ragbot.tenancy.bots import BotChanges

    data = tmp_path_factory.mktemp("grounding")
    settings = echo_deployment_settings(
        data,
        katan_echo,
        relevance_calibration_wait_s=600.0,  # the test waits for the bot's calibrated floor
    )
    runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
    bot = runtime.bots.create(
        "Docs", BotChanges(decline_message=DECLINE, handoff_enabled=True), actor="tests"
    )
    report = runtime.ingest_service.ingest(bot["id"], FileConnector(str(SAMPLE), max_bytes=1 << 20))
    assert report.added == 9, report
    yield World(runtime, bot["id"])
    runtime.close()


def test_an_invented_sentence_is_never_streamed_nor_stored(world: World) -> None:
    message = f"ragbot needs Python 3.11 or newer [1]. {INVENTED} [1]."
    with world.client() as client:
        response = client.post("/v1/chat", json={"message": message, "stream": True, "bot_id": world.bot_id})
    events = sse_events(response.text)
    streamed = "".join(d["text"] for kind, d in events if kind == "delta")
    done = events[-1][1]
    assert "$499" not in streamed and "$499" not in done["answer"]
    assert "[echo]" not in streamed  # the echo server's header line is no claim the sources make
    assert "Python 3.11 or newer" in streamed and streamed.strip() == done["answer"]
    assert done["grounded"] is True and done["answer_kind"] == "generated"
    # the marker the "model" wrote pointed at whatever source was [1]; the shown one supports the text
    assert [c["path"].rsplit("/", 1)[-1] for c in done["citations"]] == ["installation.md"]
    stored = world.bot_message(done["message_id"])
    assert "$499" not in stored.content and stored.content == done["answer"]
    assert stored.grounded is True and stored.answer_kind == "generated"


def test_a_supported_answer_is_grounded_with_its_citations(world: World) -> None:
    message = "Sparse vectors are stored in an inverted index, like keyword search engines [2]."
    with world.client() as client:
        body = client.post("/v1/chat", json={"message": message, "bot_id": world.bot_id}).json()
    assert body["status"] == "complete" and body["grounded"] is True, body
    assert body["answer_kind"] == "generated"
    assert "inverted index" in body["answer"]
    assert [c["path"].rsplit("/", 1)[-1] for c in body["citations"]] == ["splade.md"]
    marker = f"[{body['citations'][0]['n']}]"
    assert marker in body["answer"]


def test_an_unverifiable_answer_to_an_in_scope_question_quotes_the_sources(world: World) -> None:
    # The "model" only repeats the question: nothing in it can be verified, but retrieval is sure.
    question = "How does reciprocal rank fusion score each passage?"
    with world.client() as client:
        body = client.post("/v1/chat", json={"message": question, "bot_id": world.bot_id}).json()
    assert body["status"] == "complete" and body["answer_kind"] == "extractive", body
    assert body["grounded"] is True and body["citations"]
    assert "reciprocal rank fusion" in body["answer"] and "#" not in body["answer"]
    assert question not in body["answer"]
    assert {c["path"].rsplit("/", 1)[-1] for c in body["citations"]} == {"hybrid-retrieval.md"}
    for c in body["citations"]:
        assert f"[{c['n']}]" in body["answer"]


def test_an_out_of_scope_question_is_declined_without_citations_and_offers_a_person(world: World) -> None:
    question = "What is the best recipe for lasagna?"
    with world.client() as client:
        response = client.post("/v1/chat", json={"message": question, "stream": True, "bot_id": world.bot_id})
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    done = events[-1][1]
    assert "citation" not in kinds
    assert (done["status"], done["answer"], done["citations"]) == ("refused", DECLINE, [])
    assert done["grounded"] is False and done["answer_kind"] == "declined"
    assert done["handoff_offered"] is True
    stored = world.bot_message(done["message_id"])
    assert (stored.grounded, stored.answer_kind, stored.status) == (False, "declined", "refused")
    with world.runtime.session_factory() as s:
        gaps = s.scalars(
            select(UnansweredQuestion.question).where(UnansweredQuestion.message_id == done["message_id"])
        ).all()
    assert gaps == [question]


def test_a_near_topic_question_the_model_cannot_ground_is_declined(world: World) -> None:
    question = f"{INVENTED} for the hosted ragbot service."
    with world.client() as client:
        body = client.post("/v1/chat", json={"message": question, "bot_id": world.bot_id}).json()
    assert (body["status"], body["answer"], body["citations"]) == ("refused", DECLINE, []), body
    assert body["grounded"] is False and body["handoff_offered"] is True


def test_the_bots_answer_length_cuts_at_a_sentence_and_keeps_its_markers(world: World) -> None:
    two = (
        "Sparse vectors are stored in an inverted index, like keyword search engines [1]. "
        "SPLADE search stays fast on a CPU because of the inverted index [1]."
    )
    with world.client() as client:
        assert client.patch(f"/v1/bots/{world.bot_id}", json={"answer_max_words": 5}).status_code == 422
        patched = client.patch(f"/v1/bots/{world.bot_id}", json={"answer_max_words": 16})
        assert patched.status_code == 200 and patched.json()["answer_max_words"] == 16
        try:
            body = client.post("/v1/chat", json={"message": two, "bot_id": world.bot_id}).json()
        finally:
            client.patch(f"/v1/bots/{world.bot_id}", json={"answer_max_words": None})
    assert body["grounded"] is True, body
    assert "inverted index" in body["answer"] and "CPU" not in body["answer"]
    assert body["answer"].endswith(f"[{body['citations'][0]['n']}].")


def test_ask_json_carries_grounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, katan_echo: KatanServer
) -> None:
    from ragbot.cli import app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days.\n", encoding="utf-8")
    for name, value in {
        "RAGBOT_DATA_DIR": str(tmp_path / "data"),
        "RAGBOT_LLM_MODEL": "openai/katan-echo",
        "RAGBOT_LLM_API_BASE": katan_echo.base_url,
        "RAGBOT_LLM_API_KEY": "sk-test",
        "RAGBOT_MIN_RELEVANCE": "-1",  # a fixed floor: one document is too little to calibrate on
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAGBOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAGBOT_QDRANT_URL", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["ingest", str(docs), "--json"]).exit_code == 0
        result = runner.invoke(app, ["ask", "Refunds are paid within 14 days. Also 30 days.", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["grounded"] is True and out["answer_kind"] == "generated"
    # the echo server prefixes "User: "; the invented "30 days" is not shown
    assert out["answer"].endswith("Refunds are paid within 14 days [1].") and "30" not in out["answer"]
    assert [c["n"] for c in out["citations"]] == [1]
