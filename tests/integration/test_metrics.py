"""``/metrics`` and the request id on the real stack: SQLite, Qdrant Edge, the packaged encoders and
llm-katan behind LiteLLM. Counters are process-wide, so each test compares a scrape before and after."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.sse import sse_events
from integration.katan import KatanServer, echo_deployment_settings
from prometheus_client.parser import text_string_to_metric_families

from ragbot.api.app import create_app
from ragbot.config import Settings
from ragbot.index.edge import EdgeIndex
from ragbot.observability import metrics
from ragbot.observability.logging import RequestIdFilter
from ragbot.runtime import Runtime

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
METRICS_TOKEN = "scrape-" + uuid.uuid4().hex
#: A public address given as a literal: nothing is sent (the test app runs no delivery worker).
WEBHOOK_URL = "https://93.184.215.14/ragbot-hook"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Stack:
    def __init__(self, settings: Settings, index: EdgeIndex, sparse: Any, dense: Any) -> None:
        self.settings, self.index, self.sparse, self.dense = settings, index, sparse, dense

    def runtime(self, settings: Settings | None = None) -> Runtime:
        return Runtime(
            settings or self.settings, index=self.index, sparse_encoder=self.sparse, dense_encoder=self.dense
        )

    def client(self, runtime: Runtime | None = None) -> TestClient:
        runtime = runtime or self.runtime()
        return TestClient(create_app(runtime=runtime, warmup=False), headers=admin_headers(runtime))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    katan_echo: KatanServer,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("metrics")
    settings = echo_deployment_settings(
        data,
        katan_echo,
        api_path_roots=[SAMPLE],
        metrics_token=METRICS_TOKEN,
    )
    index = EdgeIndex(data / "edge", "ragbot")
    s = Stack(settings, index, real_sparse_encoder, real_dense_encoder)
    with s.client() as client:
        done = client.post("/v1/sources?wait=120", json={"target": str(SAMPLE / "hybrid-retrieval.md")})
        assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    yield s
    index.close()


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_take_the_metrics_token_or_an_unscoped_admin_key(stack: Stack) -> None:
    runtime = stack.runtime()
    with stack.client(runtime) as client:
        assert client.get("/metrics").status_code == 200  # the client's default header: an admin key
        scoped = admin_headers(runtime, bot_id=stack.settings.bot_id, name="scoped")
        for headers, status in [
            ({"Authorization": ""}, 401),
            ({"Authorization": "Bearer wrong-token"}, 401),
            ({"Authorization": f"Basic {METRICS_TOKEN}"}, 401),
            (scoped, 403),
        ]:
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == status, (headers, refused.text)
            assert refused.json()["error"]["code"]
        openmetrics = client.get(
            "/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}", "Accept": "application/openmetrics-text"},
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
        assert "ragbot_http_requests_total" in openmetrics.text
    spec = create_app(runtime=runtime, warmup=False).openapi()
    assert spec["paths"]["/metrics"]["get"]["security"]


def test_requests_are_counted_by_route_template_with_a_request_id(stack: Stack) -> None:
    with stack.client() as client:
        before = scrape(client)
        for _ in range(2):
            missing = client.get(f"/v1/conversations/{uuid.uuid4()}", headers={"X-Request-ID": "trace-42"})
            assert missing.status_code == 404 and missing.headers["x-request-id"] == "trace-42"
        assert client.get("/no/such/page").status_code == 404
        after = scrape(client)
    route = "/v1/conversations/{conversation_id}"
    assert (
        value(after, "ragbot_http_requests_total", method="GET", route=route, status="404")
        - value(before, "ragbot_http_requests_total", method="GET", route=route, status="404")
        == 2
    )
    assert value(after, "ragbot_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert value(after, "ragbot_http_request_duration_seconds_count", method="GET", route=route) >= 2
    assert not [key for key in after if any(uuid_like in str(key) for uuid_like in ("/v1/conversations/0",))]


def _turn_delta(before: Samples, after: Samples) -> dict[tuple[str, str], float]:
    keys = {k for k in after if k[0] == "ragbot_chat_turns_total"}
    deltas = {}
    for key in keys:
        labels = dict(key[1])
        change = after[key] - before.get(key, 0.0)
        if change:
            deltas[(labels["outcome"], labels["stream"])] = change
    return deltas


def test_chat_turns_are_counted_by_outcome_with_the_time_to_first_token(stack: Stack) -> None:
    with stack.client() as client:
        before = scrape(client)
        streamed = client.post(
            "/v1/chat",
            json={"message": "How does hybrid retrieval fuse sparse and dense lists?", "stream": True},
        )
        done = sse_events(streamed.text)[-1][1]
        answered = client.post("/v1/chat", json={"message": "What does hybrid retrieval combine?"})
        assert answered.status_code == 200, answered.text
        refused_early = client.post("/v1/chat", json={"message": "   "})  # a 422 is not a turn
        assert refused_early.status_code == 422
        after = scrape(client)
    assert done["status"] == "complete", done
    expected: dict[tuple[str, str], float] = {(done["status"], "true"): 1.0}
    key = (answered.json()["status"], "false")
    expected[key] = expected.get(key, 0.0) + 1
    assert _turn_delta(before, after) == expected
    ttft = "ragbot_chat_time_to_first_token_seconds"
    assert value(after, f"{ttft}_count") - value(before, f"{ttft}_count") == 1
    assert value(after, f"{ttft}_sum") > value(before, f"{ttft}_sum")
    retrieval = "ragbot_retrieval_duration_seconds_count"  # both turns retrieved once each
    assert value(after, retrieval) - value(before, retrieval) == 2


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter(missing=None))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_failed_turn_is_counted_and_its_logs_from_the_stream_thread_carry_the_request_id(
    stack: Stack, tmp_path: Path
) -> None:
    broken = KatanServer("--error-rate", "1.0", log_dir=tmp_path).start()
    collect = Collect()
    logging.getLogger("ragbot").addHandler(collect)
    try:
        failing = stack.settings.model_copy(update={"llm_api_base": broken.base_url})
        with stack.client(stack.runtime(failing)) as client:
            before = scrape(client)
            streamed = client.post(
                "/v1/chat",
                json={"message": "How does hybrid retrieval fuse sparse and dense lists?", "stream": True},
                headers={"X-Request-ID": "stream-failure-1"},
            )
            plain = client.post(
                "/v1/chat",
                json={"message": "How does hybrid retrieval fuse sparse and dense lists?"},
                headers={"X-Request-ID": "plain-failure-1"},
            )
            after = scrape(client)
    finally:
        logging.getLogger("ragbot").removeHandler(collect)
        broken.stop()
    assert sse_events(streamed.text)[-1][1]["status"] == "failed" and plain.status_code == 503
    assert _turn_delta(before, after) == {("failed", "true"): 1.0, ("failed", "false"): 1.0}
    failures = [r for r in collect.records if r.getMessage().startswith("answer failed")]
    assert {getattr(r, "request_id", None) for r in failures} == {"stream-failure-1", "plain-failure-1"}
    assert any(r.threadName != "MainThread" for r in failures)  # logged from a worker thread


def test_the_outbox_backlog_and_jobs_are_read_from_the_database(stack: Stack) -> None:
    with stack.client() as client:
        created = client.post("/v1/webhooks", json={"url": WEBHOOK_URL, "events": ["message.created"]})
        assert created.status_code == 201, created.text
        before = scrape(client)
        assert client.post("/v1/chat", json={"message": "What is hybrid retrieval?"}).status_code == 200
        after = scrape(client)
        client.delete(f"/v1/webhooks/{created.json()['id']}")
    assert value(after, "ragbot_metrics_store_up") == 1
    depth = value(after, "ragbot_webhook_queue_depth") - value(before, "ragbot_webhook_queue_depth")
    assert depth == 2  # the visitor's message and the bot's answer, waiting: no delivery worker runs here
    assert value(after, "ragbot_webhook_deliveries", status="pending") == value(
        after, "ragbot_webhook_queue_depth"
    )
    assert value(after, "ragbot_webhook_oldest_pending_seconds") >= 0
    assert value(after, "ragbot_ingest_jobs", status="succeeded") >= 1


def test_several_processes_share_one_view_through_the_multiprocess_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``ragbot serve --workers N`` relies on: counters from separate processes add up in one scrape."""
    record = textwrap.dedent(
        """
        from ragbot.observability import metrics
        metrics.chat_turn("complete", stream=True)
        metrics.first_token(0.25)
        metrics.http_request("POST", "/v1/chat", 200, 0.3)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=120)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # as in a worker: render() merges the files
    text = metrics.render()[0].decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert value(samples, "ragbot_chat_turns_total", outcome="complete", stream="true") == 2
    assert value(samples, "ragbot_chat_time_to_first_token_seconds_count") == 2
    assert value(samples, "ragbot_http_requests_total", method="POST", route="/v1/chat", status="200") == 2


def test_turn_outcome_labels_come_from_a_small_vocabulary() -> None:
    from ragbot.observability.middleware import _done_status

    def done(data: str) -> bytes:
        return f"event: done\ndata: {data}\n\n".encode()

    assert _done_status(done('{"status": "complete", "answer": "x"}')) == "complete"
    assert _done_status(done('{"status": "Complete <b>" }')) == "other"
    assert _done_status(done("not json")) == "other"
