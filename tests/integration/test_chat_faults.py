"""Chat turns against a faulty real HTTP LLM (llm-katan, and a server that cuts its stream): every
visitor message is stored, and each turn is either answered or ends with a clear, stored failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.katan import CuttingSSEServer, KatanServer, llm_settings

from ragbot.db import repositories as repo
from ragbot.db.session import session_scope
from ragbot.runtime import Runtime
from ragbot.services.chat import AnswerFailedError
from ragbot.types import EventType

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
BOT = "faults"


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Any]:
    from connectors.files import FileConnector

    data = tmp_path_factory.mktemp("chat-faults")
    settings = llm_settings("http://127.0.0.1:9/v1", data_dir=data)
    runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
    runtime.ingest_service.ingest(BOT, FileConnector(str(SAMPLE), max_bytes=settings.max_upload_bytes))
    yield runtime
    runtime.close()


def _runtime(base: Runtime, base_url: str, **overrides: Any) -> Runtime:
    settings = llm_settings(base_url, data_dir=base.settings.data_dir, **overrides)
    return Runtime(
        settings,
        engine=base.engine,
        session_factory=base.session_factory,
        sparse_encoder=base.sparse_encoder,
        dense_encoder=base.dense_encoder,
        index=base.index,
    )


def _messages(runtime: Runtime, conversation_id: str) -> list[Any]:
    with session_scope(runtime.session_factory) as s:
        return repo.list_messages(s, BOT, conversation_id)


def test_error_rate_never_loses_a_message(base: Runtime, katan_factory: Callable[..., KatanServer]) -> None:
    server = katan_factory("--error-rate", "0.3")
    runtime = _runtime(base, server.base_url, llm_max_retries=1)
    outcomes = {"answered": 0, "failed": 0}
    for i in range(12):
        question = f"What is ragbot? (try {i})"
        try:
            result = runtime.chat_service.ask(BOT, question)
            conversation_id, status = result.conversation_id, result.status
            assert result.answer
            outcomes["answered"] += 1
        except AnswerFailedError as exc:
            conversation_id, status, reason = exc.conversation_id, "failed", str(exc)
            outcomes["failed"] += 1
            assert "unavailable" in reason
        stored = _messages(runtime, conversation_id)
        assert stored[0].sender_type == "visitor"
        assert stored[0].content == question
        assert stored[1].status == status
    assert outcomes["answered"] > 0


def test_stream_cut_halfway_is_stored_as_partial(base: Runtime) -> None:
    with CuttingSSEServer(["Ragbot fuses ", "sparse and dense ", "results"], mode="reset") as server:
        runtime = _runtime(base, server.base_url, llm_max_retries=0)
        events = list(runtime.chat_service.stream(BOT, "How are sparse and dense results combined?"))
    kinds = [e.type for e in events]
    assert EventType.ERROR in kinds
    done = events[-1].data
    assert done["status"] == "partial"
    assert done["answer"].startswith("Ragbot fuses")
    stored = _messages(runtime, done["conversation_id"])[-1]
    assert stored.status == "partial"
    assert stored.content == done["answer"]
    assert "interrupted" in (stored.error or "")


def test_marker_to_a_missing_source_is_dropped(base: Runtime) -> None:
    with CuttingSSEServer(
        ["SPLADE expands passages [1]", " with related terms [7]."], mode="complete"
    ) as server:
        runtime = _runtime(base, server.base_url, llm_max_retries=0, top_k=3)
        result = runtime.chat_service.ask(BOT, "What does SPLADE add to a passage?")
    assert "[7]" not in result.answer
    assert [c["n"] for c in result.citations] == [1]


def test_irrelevant_question_is_refused_without_an_llm_call(base: Runtime) -> None:
    # Port 9 has no server: an LLM call would fail, so a refusal proves none was made.
    runtime = _runtime(base, "http://127.0.0.1:9/v1", min_relevance=0.99)
    result = runtime.chat_service.ask(BOT, "What is the airspeed velocity of an unladen swallow?")
    assert result.status == "refused"
    assert "connect you with a person" in result.answer.lower()
    with session_scope(runtime.session_factory) as s:
        gaps = repo.list_unanswered(s, BOT)
    assert any("swallow" in g.question for g in gaps)


def test_default_floor_refuses_off_topic_but_answers_on_topic(base: Runtime, katan_echo: KatanServer) -> None:
    # the deployment's defaults: the bot's floor calibrated on its own content, answers verified
    default = {"grounding": "verify", "relevance_calibration_wait_s": 600.0}
    off_topic = _runtime(base, "http://127.0.0.1:9/v1", **default).chat_service.ask(
        BOT, "what is the capital of australia"
    )
    assert off_topic.status == "refused"
    answering = _runtime(base, katan_echo.base_url, **default)
    on_topic = answering.chat_service.ask(BOT, "How do I install ragbot?")
    assert on_topic.status == "complete" and on_topic.grounded  # the echo is no answer: sources quoted
