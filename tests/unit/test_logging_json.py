"""JSON log lines with the request id, credentials masked, and the id carried into worker threads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ragbot.observability.context import accept_request_id, bound_request_id, current_request_id
from ragbot.observability.logging import configure_logging, redact_secrets
from ragbot.observability.middleware import ObservabilityMiddleware

pytestmark = pytest.mark.unit

ADMIN_KEY = "rb_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"
PUBLIC_KEY = "pk_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2aXNpdG9yIn0.c2lnbmF0dXJlLXBhcnQ"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger writing JSON to a buffer, as ``ragbot serve`` sets it up; restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("uvicorn.access").disabled = False


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("9f1c2b7e-0d4a-4a8e-b1f3-2c6d7e8f9a0b", True),
        ("Root=1-67891233-abcdef012345678912345678", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ("line\nbreak", False),
        ("", False),
        (None, False),
    ],
)
def test_a_request_id_is_kept_only_when_it_is_a_plain_token(given: str | None, kept: bool) -> None:
    accepted = accept_request_id(given)
    assert (accepted == given) is kept
    if not kept:
        assert len(accepted) == 32 and int(accepted, 16) >= 0


def test_credentials_are_masked_and_key_prefixes_stay() -> None:
    line = (
        f"auth Bearer {ADMIN_KEY} key={ADMIN_KEY} widget {PUBLIC_KEY} session {JWT} "
        "secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw db postgresql+psycopg://ragbot:s3cret@db:5432/ragbot "
        "llm sk-proj-abcdefghijklmnopqrstuv shown as key:rb_A1b2C3 (prefix)"
    )
    masked = redact_secrets(line)
    for secret in (
        ADMIN_KEY,
        PUBLIC_KEY,
        JWT,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "s3cret",
        "abcdefghijklmnop",
    ):
        assert secret not in masked, secret
    assert "key:rb_A1b2C3 (prefix)" in masked  # the 8-character display prefix names a key, safely
    assert "postgresql+psycopg://ragbot:[redacted]@db:5432/ragbot" in masked
    assert redact_secrets("nothing to hide here") == "nothing to hide here"


def test_json_lines_carry_the_request_id_and_mask_arguments_and_tracebacks(json_lines: io.StringIO) -> None:
    log = logging.getLogger("ragbot.test")
    log.info("outside any request")
    with bound_request_id("req-123"):
        log.warning("key %s refused", ADMIN_KEY, extra={"route": "/v1/chat", "color_message": "\x1b[1mkey"})
        try:
            raise RuntimeError(f"upstream said Bearer {ADMIN_KEY}")
        except RuntimeError:
            log.exception("call failed")
    assert current_request_id() is None
    outside, warned, failed = records(json_lines)
    assert outside["request_id"] is None and outside["level"] == "INFO" and outside["logger"] == "ragbot.test"
    assert warned["request_id"] == "req-123" and warned["route"] == "/v1/chat"
    assert warned["message"] == "key rb_[redacted] refused" and "color_message" not in warned
    assert failed["request_id"] == "req-123"
    assert "RuntimeError: upstream said Bearer [redacted]" in str(failed["exc_info"])
    assert ADMIN_KEY not in json_lines.getvalue()


def test_text_format_names_the_request_id(json_lines: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream=stream)
    with bound_request_id("req-9"):
        logging.getLogger("ragbot.test").info("hello")
    logging.getLogger("ragbot.test").info("bye")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("INFO ragbot.test [req-9] hello")
    assert second.endswith("INFO ragbot.test [-] bye")


def _threaded_app() -> Starlette:
    """Logs the way ragbot's routes do: a sync step in the thread pool, and a stream whose steps run
    there too (the chat stream: ``run_in_threadpool`` per event; ``iterate_in_threadpool`` for a sync
    iterator body)."""
    log = logging.getLogger("ragbot.test.app")

    def step(n: int) -> str:
        log.info("step %d", n)
        return f"{n}\n"

    async def plain(_: Request) -> JSONResponse:
        await run_in_threadpool(step, 0)
        return JSONResponse({"ok": True})

    async def stream(_: Request) -> StreamingResponse:
        async def body() -> object:
            for n in range(1, 3):
                yield await run_in_threadpool(step, n)
                await asyncio.sleep(0)
            async for line in iterate_in_threadpool(step(n) for n in range(3, 5)):
                yield line

        return StreamingResponse(body(), media_type="text/plain")  # type: ignore[arg-type]

    app = Starlette(routes=[Route("/plain", plain), Route("/stream", stream)])
    app.add_middleware(ObservabilityMiddleware)
    return app


def test_records_logged_in_worker_threads_carry_the_request_id(json_lines: io.StringIO) -> None:
    with TestClient(_threaded_app()) as client:
        plain = client.get("/plain", headers={"X-Request-ID": "plain-1"})
        streamed = client.get("/stream", headers={"X-Request-ID": "stream-1"})
        made = client.get("/plain", headers={"X-Request-ID": "not a token"})
    assert plain.headers["x-request-id"] == "plain-1" and streamed.headers["x-request-id"] == "stream-1"
    assert streamed.text == "1\n2\n3\n4\n"
    generated = made.headers["x-request-id"]
    assert len(generated) == 32 and generated != "not a token"
    steps = {
        str(r["message"]): r["request_id"] for r in records(json_lines) if r["logger"] == "ragbot.test.app"
    }
    assert steps == {
        "step 0": generated,  # the last /plain call wins the "step 0" key
        "step 1": "stream-1",
        "step 2": "stream-1",
        "step 3": "stream-1",
        "step 4": "stream-1",
    }
    access = [r for r in records(json_lines) if r["logger"] == "ragbot.access"]
    assert [(r["route"], r["status"], r["request_id"]) for r in access] == [
        ("/plain", 200, "plain-1"),
        ("/stream", 200, "stream-1"),
        ("/plain", 200, generated),
    ]
