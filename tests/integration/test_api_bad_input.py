"""Bad requests get a clear 4xx in the one error shape, never a 500, a hang or silently lost data.

Runs on the same real stacks as ``test_api.py`` (SQLite and PostgreSQL, Qdrant Edge and qdrant-client,
real encoders, llm-katan): several of these inputs only broke on one database (PostgreSQL refuses NUL
in text, no driver can encode a lone surrogate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from integration import test_api
from integration.test_api import SAMPLE, Stack

from ragbot.api.app import create_app

pytestmark = pytest.mark.integration

#: The deployments of ``test_api.py`` (every database and index backend, the sample docs ingested).
stack = test_api.stack

JSON = {"content-type": "application/json"}
EXISTING_FILE = SAMPLE / "api.md"


def _error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def _multipart(
    *parts: tuple[str, str | None, bytes], boundary: str = "b0undary"
) -> tuple[bytes, dict[str, str]]:
    """A hand-built multipart body: (field name, file name or None, content) per part."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


# --- tenants and ids ----------------------------------------------------------------------------------


BAD_BOT_IDS = [
    pytest.param("   ", id="blank"),
    pytest.param("x" * 65, id="too-long"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("tab\there", id="control"),
]


@pytest.mark.parametrize("bot_id", BAD_BOT_IDS)
def test_invalid_bot_id_is_a_422_on_every_route(stack: Stack, bot_id: str) -> None:
    with stack.client() as client:
        for stream in (False, True):
            response = client.post("/v1/chat", json={"message": "hello", "bot_id": bot_id, "stream": stream})
            _error(response, 422, "invalid_bot_id")
        _error(client.get("/v1/conversations/abc", params={"bot_id": bot_id}), 422, "invalid_bot_id")
        _error(client.get("/v1/sources/jobs/abc", params={"bot_id": bot_id}), 422, "invalid_bot_id")
        response = client.post("/v1/sources", json={"target": str(EXISTING_FILE), "bot_id": bot_id})
        _error(response, 422, "invalid_bot_id")
        response = client.post(
            "/v1/sources", files={"file": ("a.md", b"# A\n\ntext", "text/markdown")}, data={"bot_id": bot_id}
        )
        _error(response, 422, "invalid_bot_id")


def test_lone_surrogate_bot_id_is_a_422(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/chat", content=b'{"message": "hello", "bot_id": "a\\ud800"}', headers=JSON
        )
        _error(response, 422, "invalid_bot_id")


def test_empty_bot_id_means_the_default_bot(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/v1/chat", json={"message": "What is ragbot?", "bot_id": ""})
        assert response.status_code == 200, response.text
        conversation = client.get(f"/v1/conversations/{response.json()['conversation_id']}")
        assert conversation.json()["bot_id"] == stack.settings.bot_id


@pytest.mark.parametrize(
    "raw_id", [pytest.param("a\\u0000b", id="nul"), pytest.param("\\udfff", id="lone-surrogate")]
)
def test_unstorable_conversation_id_is_an_unknown_conversation(stack: Stack, raw_id: str) -> None:
    with stack.client() as client:
        for stream in ("false", "true"):
            body = f'{{"message": "hello", "conversation_id": "{raw_id}", "stream": {stream}}}'
            response = client.post("/v1/chat", content=body.encode(), headers=JSON)
            _error(response, 404, "conversation_not_found")


def test_unstorable_path_ids_are_404(stack: Stack) -> None:
    with stack.client() as client:
        _error(client.get("/v1/conversations/a%00b"), 404, "conversation_not_found")
        _error(client.get("/v1/sources/jobs/a%00b"), 404, "job_not_found")


# --- ingest targets and uploads ----------------------------------------------------------------------


def test_unusable_targets_are_4xx(stack: Stack) -> None:
    loop = stack.settings.data_dir / "bad-input-loop"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    targets = {
        str(EXISTING_FILE) + "\x00.md": 422,  # NUL in a path
        "http://exa\x00mple.com/": 422,  # NUL in a URL
        str(SAMPLE / ("a" * 300)): 422,  # a file name longer than the file system allows
        str(SAMPLE) + "/a" * 3000: 422,  # a path longer than the file system allows
        "~no-such-user-ragbot/docs": 422,  # an unknown ~user
        str(loop / "x"): 422,  # a symlink loop
        str(EXISTING_FILE / "below-a-file"): 404,
    }
    with stack.client() as client:
        for target, status in targets.items():
            response = client.post("/v1/sources", json={"target": target})
            assert response.status_code == status, (target[:80], response.text)
            assert response.json()["error"]["code"] in ("invalid_target", "path_not_found"), response.text


def test_upload_names_that_cannot_be_stored_or_would_collide_are_refused(stack: Stack) -> None:
    with stack.client() as client:
        for name in ("a\x00b.md", "a\x01b.md"):
            body, headers = _multipart(("file", name, b"# A\n\nsome text"))
            _error(client.post("/v1/sources", content=body, headers=headers), 422, "invalid_filename")

        # Both would be stored as upload:x.md, the second silently replacing (or dropping) the first.
        response = client.post(
            "/v1/sources?wait=60",
            files=[
                ("file", ("a/x.md", b"# A\n\nThe first Quokka file.", "text/markdown")),
                ("file", ("b/x.md", b"# B\n\nThe second Quokka file.", "text/markdown")),
            ],
        )
        _error(response, 422, "duplicate_filename")


def test_malformed_multipart_is_a_422(stack: Stack) -> None:
    many = b"".join(
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="f%d.txt"\r\n\r\nx\r\n' % i
        for i in range(1001)
    )
    bodies = [
        (b"--zz\r\n", {"content-type": "multipart/form-data"}),  # no boundary
        (b"garbage", {"content-type": "multipart/form-data; boundary=zz"}),
        (many + b"--zz--\r\n", {"content-type": "multipart/form-data; boundary=zz"}),  # too many files
    ]
    with stack.client() as client:
        for body, headers in bodies:
            _error(client.post("/v1/sources", content=body, headers=headers), 422, "invalid_multipart")


def test_multipart_content_type_is_case_insensitive(stack: Stack) -> None:
    body, headers = _multipart(("file", "case.md", b"# Case\n\nUpper-case content types work."))
    headers = {"content-type": headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")}
    with stack.client() as client:
        response = client.post("/v1/sources?wait=60", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["target"] == "upload: case.md"


# --- bodies: JSON, content types, sizes --------------------------------------------------------------


def test_undecodable_json_is_a_422(stack: Stack) -> None:
    bodies = [
        b'{"message": "\xff\xfe"}',  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nested deeper than the parser goes
        b'{"message":',  # cut off
    ]
    with stack.client() as client:
        for body in bodies:
            _error(client.post("/v1/chat", content=body, headers=JSON), 422, "invalid_request")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"content-type": "text/plain"}, id="text"),
        pytest.param({"content-type": "application/x-www-form-urlencoded"}, id="form"),
        pytest.param({}, id="none"),
    ],
)
def test_chat_body_that_is_not_json_is_a_415(stack: Stack, headers: dict[str, str]) -> None:
    with stack.client() as client:
        response = client.post("/v1/chat", content=b'{"message": "hello"}', headers=headers)
        _error(response, 415, "unsupported_media_type")


def _chunks(head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), the way a client streams it."""
    yield head
    for _ in range(size // 65536 + 1):
        yield b"x" * 65536
    yield tail


def test_oversized_bodies_are_413_declared_or_streamed(stack: Stack) -> None:
    small = stack.settings.model_copy(update={"max_upload_bytes": 64 * 1024})
    with stack.client(stack.runtime(settings=small)) as client:
        declared = client.post("/v1/chat", json={"message": "x" * (2 * 1024 * 1024)})
        _error(declared, 413, "body_too_large")

        streamed = client.post(
            "/v1/chat", content=_chunks(b'{"message": "', 2 * 1024 * 1024, b'"}'), headers=JSON
        )
        _error(streamed, 413, "body_too_large")
        streamed = client.post(
            "/v1/sources", content=_chunks(b'{"target": "', 2 * 1024 * 1024, b'"}'), headers=JSON
        )
        _error(streamed, 413, "body_too_large")

        head = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        headers = {"content-type": "multipart/form-data; boundary=b0undary"}
        upload = client.post(
            "/v1/sources", content=_chunks(head, 512 * 1024, b"\r\n--b0undary--\r\n"), headers=headers
        )
        _error(upload, 413, "upload_too_large")

        bad_length = client.post(
            "/v1/chat", content=b'{"message": "hi"}', headers={**JSON, "content-length": "lots"}
        )
        _error(bad_length, 400, "bad_request")


# --- framework errors, unexpected failures, long waits ------------------------------------------------


def test_framework_errors_use_the_error_shape(stack: Stack) -> None:
    with stack.client() as client:
        _error(client.get("/v1/no-such-route"), 404, "not_found")
        wrong_method = client.delete("/v1/chat")
        _error(wrong_method, 405, "method_not_allowed")
        assert "POST" in wrong_method.headers["allow"]


class _BrokenChat:
    def ask(self, *args: Any) -> Any:
        raise RuntimeError("boom")


def test_an_unexpected_failure_is_a_json_500(stack: Stack) -> None:
    runtime = stack.runtime()
    runtime.__dict__["chat_service"] = _BrokenChat()  # pre-seeds the cached property
    app = create_app(runtime=runtime, warmup=False)
    with TestClient(app, raise_server_exceptions=False, headers=admin_headers(runtime)) as client:
        response = client.post("/v1/chat", json={"message": "hello"})
    error = _error(response, 500, "internal_error")
    assert "boom" not in error["message"]  # no internals leak to the client


def test_waiting_for_a_job_does_not_hold_a_worker_thread(stack: Stack) -> None:
    """``?wait=`` used to block a thread of the pool every synchronous route shares: enough waiting
    clients and chat, conversations and health checks all stalled until the waits ran out."""
    runtime = stack.runtime()
    jobs = runtime.jobs
    real_run = jobs._run
    started, release = threading.Event(), threading.Event()

    def held_run(*args: Any) -> None:
        started.set()
        release.wait(30)
        real_run(*args)

    jobs._run = held_run
    results: dict[str, Any] = {}

    async def one_worker_thread() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

    with TestClient(create_app(runtime=runtime, warmup=False), headers=admin_headers(runtime)) as client:
        assert client.portal is not None
        client.portal.call(one_worker_thread)

        def wait_for_job() -> None:
            results["wait"] = client.post("/v1/sources?wait=20", json={"target": str(EXISTING_FILE)})

        waiter = threading.Thread(target=wait_for_job)
        waiter.start()
        try:
            assert started.wait(20), "the job never started"
            time.sleep(0.5)  # the waiting request is now polling
            t0 = time.monotonic()
            health = client.get("/healthz")
            elapsed = time.monotonic() - t0
        finally:
            release.set()
            waiter.join(60)
    assert health.status_code == 200, health.text
    assert elapsed < 5, f"/healthz waited {elapsed:.1f}s behind a ?wait= request"
    assert results["wait"].status_code == 200, results["wait"].text
    assert results["wait"].json()["status"] == "succeeded"
