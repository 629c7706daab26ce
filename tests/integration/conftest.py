"""Fixtures for integration tests: real OpenAI-compatible LLM servers on loopback (see ``katan.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration.katan import KatanServer


@pytest.fixture
def katan_factory(tmp_path: Path) -> Iterator[Callable[..., KatanServer]]:
    """``katan_factory("--rate-limit-after", "2", served_model="primary")`` starts a fresh llm-katan
    echo server for this test (its fault counters start at zero) and stops it afterwards."""
    started: list[KatanServer] = []

    def start(*flags: str, served_model: str = "katan-echo") -> KatanServer:
        server = KatanServer(*flags, served_model=served_model, log_dir=tmp_path).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def katan_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KatanServer]:
    """One fault-free llm-katan echo server shared by the session."""
    with KatanServer(log_dir=tmp_path_factory.mktemp("katan")) as server:
        yield server
