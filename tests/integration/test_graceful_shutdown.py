"""SIGTERM on a real ``ragbot serve`` with chat streams in flight: no visitor message or answer is lost.

``ragbot serve`` runs in a subprocess on a loopback port over the sample content (ingested by ``ragbot
ingest``); the LLM is llm-katan streaming slowly. A stream open when SIGTERM arrives either finishes
(within ``RAGBOT_SHUTDOWN_GRACE_S``) or, past it, ends with a ``server_shutting_down`` error event and a
``done`` whose partial answer is what the database holds; meanwhile the server takes no new connection.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.katan import LOOPBACK, KatanServer, free_port
from sqlalchemy import create_engine, select

from ragbot.db.models import Message

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ragbot" / "sample_content"
QUESTION = "How does ragbot combine sparse and dense retrieval?"


def _ragbot() -> list[str]:
    beside = Path(sys.executable).with_name("ragbot")
    return [str(beside)] if beside.exists() else [sys.executable, "-c", "from ragbot.cli import app; app()"]


def _env(data_dir: Path, database_url: str, katan: KatanServer, grace_s: float) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "RAGBOT_DATA_DIR": str(data_dir),
        "RAGBOT_DATABASE_URL": database_url,
        "RAGBOT_LLM_MODEL": "openai/katan-echo",
        "RAGBOT_LLM_API_BASE": katan.base_url,
        "RAGBOT_LLM_API_KEY": "sk-test",
        "RAGBOT_LLM_FALLBACKS": "[]",
        "RAGBOT_GROUNDING": "off",  # the echo's text streams as it comes: the answer is long and slow
        "RAGBOT_SHUTDOWN_GRACE_S": str(grace_s),
        "RAGBOT_LOG_LEVEL": "INFO",
    }


class Served:
    """``ragbot serve`` in a subprocess; the admin key it prints on first start is read from its log."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*_ragbot(), "serve", "--host", LOOPBACK, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.admin_key = self._wait_ready()

    def _wait_ready(self, timeout_s: float = 240.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ragbot serve exited early:\n{self.log()}"
            key = re.search(r"admin API key \(shown once, store it now\): (\S+)", self.log())
            if key:
                try:
                    if httpx.get(f"{self.base_url}/readyz", timeout=2, trust_env=False).status_code == 200:
                        return key.group(1)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"ragbot serve not ready within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def stack(
    tmp_path: Path, katan_factory: Callable[..., KatanServer]
) -> Iterator[Callable[[str, float], tuple[Served, str]]]:
    """``stack(database_url, grace_s)``: the sample content ingested, then ``ragbot serve`` over it
    with a slow llm-katan (its echo, about 40 chunks, streams for about 4 s)."""
    katan = katan_factory("--ttft-ms", "100", "--chunk-delay-ms", "100")
    started: list[Served] = []

    def start(database_url: str, grace_s: float) -> tuple[Served, str]:
        env = _env(tmp_path / "data", database_url, katan, grace_s)
        ingest = subprocess.run([*_ragbot(), "ingest", str(SAMPLE)], env=env, capture_output=True, text=True)
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        served = Served(env, tmp_path / "serve.log")
        started.append(served)
        return served, database_url

    yield start
    for served in started:
        served.stop()


def _read_events(response: httpx.Response, on_first_delta: Callable[[], None]) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            if name == "delta" and sum(1 for e, _ in events if e == "delta") == 1:
                on_first_delta()
    return events


def _chat_through_sigterm(served: Served) -> tuple[list[tuple[str, Any]], float]:
    """The turn's events, SIGTERM sent at its first delta; and how long the stream went on after it."""
    headers = {"Authorization": f"Bearer {served.admin_key}"}
    body = {"message": QUESTION, "stream": True}
    signalled: list[float] = []

    def terminate() -> None:
        served.proc.send_signal(signal.SIGTERM)
        signalled.append(time.monotonic())

    with (
        httpx.Client(timeout=120, trust_env=False) as client,
        client.stream("POST", f"{served.base_url}/v1/chat", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        events = _read_events(response, terminate)
    assert signalled, "the stream sent no delta"
    return events, time.monotonic() - signalled[0]


def _refuses_new_connections(served: Served) -> bool:
    try:
        httpx.get(f"{served.base_url}/livez", timeout=2, trust_env=False)
    except httpx.ConnectError:
        return True
    return False


def _stored(database_url: str, message_id: str) -> tuple[str, str, str | None] | None:
    """The message's (status, content, error) as the database holds it."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                select(Message.status, Message.content, Message.error).where(Message.id == message_id)
            ).first()
    finally:
        engine.dispose()
    return None if row is None else (row.status, row.content, row.error)


def test_a_stream_in_flight_finishes_and_is_stored_after_sigterm(
    stack: Callable[[str, float], tuple[Served, str]], tmp_path: Path
) -> None:
    served, database_url = stack(f"sqlite:///{tmp_path / 'ragbot.db'}", 120.0)
    events, after_signal_s = _chat_through_sigterm(served)

    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done", names[-5:]
    assert "error" not in names
    done = events[-1][1]
    assert done["status"] == "complete"
    assert after_signal_s > 2  # it kept streaming for seconds after the signal

    assert _refuses_new_connections(served)
    assert served.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    bot = _stored(database_url, done["message_id"])
    visitor = _stored(database_url, events[0][1]["visitor_message_id"])
    assert visitor is not None and visitor[1] == QUESTION
    assert bot == ("complete", done["answer"], None)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_past_the_grace_period_a_stream_ends_with_a_typed_error_and_its_partial_answer_is_stored(
    backend: str,
    stack: Callable[[str, float], tuple[Served, str]],
    scratch_database: Callable[[str], AbstractContextManager[str]],
) -> None:
    with scratch_database(backend) as url:
        served, database_url = stack(url, 1.0)
        events, after_signal_s = _chat_through_sigterm(served)

        names = [name for name, _ in events]
        assert names[0] == "start" and names[-2:] == ["error", "done"], names[-5:]
        error, done = events[-2][1], events[-1][1]
        assert error["code"] == "server_shutting_down"
        assert error["status"] == "partial" and error["message_id"] == done["message_id"]
        assert done["status"] == "partial"
        streamed = "".join(data["text"] for name, data in events if name == "delta").strip()
        assert streamed and done["answer"] == streamed
        assert after_signal_s < 3  # cut about 1 s after the signal; the answer alone streams for ~4 s

        assert served.proc.wait(timeout=60) in (0, -signal.SIGTERM)
        bot = _stored(database_url, done["message_id"])
        assert bot is not None
        status, content, stored_error = bot
        assert status == "partial" and content == streamed
        assert stored_error is not None and "restarted" in stored_error
        visitor = _stored(database_url, events[0][1]["visitor_message_id"])
        assert visitor is not None and visitor[1] == QUESTION
