"""Real OpenAI-compatible HTTP servers on loopback for the LLM layer's integration tests.

* ``KatanServer``: the ``llm-katan`` package's server (echo backend) in a subprocess, with its fault
  injection flags (``--error-rate``, ``--rate-limit-after``, ``--timeout-after``, ``--latency-ms``,
  ``--ttft-ms``, ``--max-inflight``, ``--chunk-delay-ms``).
* ``CuttingSSEServer``: llm-katan cannot break a stream halfway, so this small server streams a few
  chat-completion chunks and then drops the connection, either mid-chunk (``mode="reset"``, the
  transfer encoding left incomplete) or with a clean end of body but no finish reason and no
  ``[DONE]`` (``mode="eof"``), the two ways a proxy or a crashed worker cuts an answer.

Both bind 127.0.0.1 on a free port and stop on exit; nothing here dials anywhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a proxy env var must not reroute


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def katan_executable() -> str:
    beside_python = Path(sys.executable).with_name("llm-katan")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("llm-katan")
    if found is None:
        raise RuntimeError("llm-katan is not installed (pip install llm-katan)")
    return found


class KatanServer:
    """One llm-katan echo server; ``base_url`` is what ``RAGBOT_LLM_API_BASE`` should be."""

    def __init__(self, *flags: str, served_model: str = "katan-echo", log_dir: Path) -> None:
        self.port = free_port()
        self.served_model = served_model
        self.flags = flags
        self._log_path = log_dir / f"katan-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def launch(self) -> KatanServer:
        """Start the process without waiting (several servers then boot side by side)."""
        command = [
            katan_executable(),
            "--model", "echo",
            "--backend", "echo",
            "--served-model-name", self.served_model,
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--stats-file", "",
            "--disable-dashboard",
            "--log-level", "warning",
            *self.flags,
        ]  # fmt: skip
        log_file = self._log_path.open("wb")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self._proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        log_file.close()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> KatanServer:
        assert self._proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llm-katan exited early: {self.log_tail()}")
            try:
                with _NO_PROXY.open(f"http://{LOOPBACK}:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"llm-katan did not answer /health within {timeout_s} s: {self.log_tail()}")

    def start(self, timeout_s: float = 60.0) -> KatanServer:
        return self.launch().wait_ready(timeout_s)

    def stop(self) -> None:
        # A test server holds no state worth a graceful shutdown (which would wait for slow requests).
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> KatanServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant"} if content is None and finish is None else {}
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-cut",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "cutter",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class CuttingSSEServer:
    """Streams ``pieces`` as chat-completion chunks, then cuts the connection (see module docstring)."""

    def __init__(self, pieces: Sequence[str], *, mode: str = "reset", piece_delay_s: float = 0.02) -> None:
        if mode not in ("reset", "eof", "complete"):
            raise ValueError(f"unknown mode {mode!r}")
        self.pieces = list(pieces)
        self.mode = mode
        self.piece_delay_s = piece_delay_s
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def do_POST(self) -> None:
                server.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if server.mode == "reset":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                events = [_sse(_chunk(None))] + [_sse(_chunk(p)) for p in server.pieces]
                if server.mode == "complete":
                    events += [_sse(_chunk(None, finish="stop")), b"data: [DONE]\n\n"]
                for event in events:
                    if server.mode == "reset":
                        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    else:
                        self.wfile.write(event)
                    self.wfile.flush()
                    time.sleep(server.piece_delay_s)
                if server.mode == "reset":
                    # Half a chunk, then the socket goes away: the body can never complete.
                    self.wfile.write(b'40\r\ndata: {"trunc')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> CuttingSSEServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def katan_fleet(specs: dict[str, tuple[str, ...]], *, log_dir: Path) -> Iterator[dict[str, KatanServer]]:
    """Several servers booted side by side: ``{"primary": ("--rate-limit-after", "2"), ...}``.

    Each is served under its key as model name, so an echoed answer says which server produced it.
    """
    servers = {name: KatanServer(*flags, served_model=name, log_dir=log_dir) for name, flags in specs.items()}
    try:
        for server in servers.values():
            server.launch()
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def echo_deployment_settings(data: Path, echo: KatanServer, **overrides: Any) -> Any:
    """An embedded deployment (SQLite in ``data``) answering through the katan echo server, one try per
    call: the API-level suites' common ground, each adding its own overrides."""
    from ragbot.config import Settings

    return Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'ragbot.db'}",
        llm_model="openai/katan-echo",
        llm_api_base=echo.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        **overrides,
    )


def llm_settings(base_url: str, *, model: str = "openai/katan-echo", **overrides: Any) -> Any:
    """Settings aimed at a loopback server, with test-sized deadlines and backoff, answers unverified."""
    from ragbot.config import Settings

    values: dict[str, Any] = {
        "llm_model": model,
        "llm_api_base": base_url,
        "llm_api_key": "test-key",
        "llm_fallbacks": [],
        "llm_max_retries": 2,
        "llm_retry_backoff_s": 0.02,
        "llm_connect_timeout_s": 2.0,
        "llm_first_token_timeout_s": 5.0,
        "llm_total_timeout_s": 20.0,
        # The stand-in servers' text is each test's script, shown as written; grounding's own tests
        # (test_grounding.py) check answers with the default "verify".
        "grounding": "off",
    }
    values.update(overrides)
    return Settings(**values)
