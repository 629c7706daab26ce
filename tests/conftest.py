"""Shared test fixtures.

The network guard is autouse: any test that dials an address outside 127.0.0.0/8 (or ::1) fails, so an
SSRF refusal can never be "tested" by actually connecting somewhere. Tests reach private or metadata
addresses only through the resolver seam in ``connectors.net``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection


class ForbiddenNetworkAccessError(AssertionError):
    pass


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:
        return  # AF_UNIX sockets (e.g. PostgreSQL's local socket) are fine
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host in ("localhost",):
            return
        raise ForbiddenNetworkAccessError(f"test tried to dial unresolved host {host!r}") from None
    if not ip.is_loopback:
        raise ForbiddenNetworkAccessError(f"test tried to dial non-loopback address {host}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(autouse=True, scope="session")
def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


POSTGRES_URL = os.environ.get("RAGBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# --- databases ------------------------------------------------------------------------------------------
# `database_url` runs a test once per supported backend, each time on a fresh, empty, isolated database:
# a new SQLite file, or a new PostgreSQL schema (selected through search_path, dropped afterwards), so
# repeated runs and parallel test sessions sharing one server never see each other's tables.


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; unreachable means skip, or fail under CI (``CI`` set) so it is never silent."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        message = f"PostgreSQL unreachable at {POSTGRES_URL} (set RAGBOT_TEST_POSTGRES_URL): {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(scope="session")
def scratch_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], AbstractContextManager[str]]:
    """A factory: ``with scratch_database("sqlite" | "postgresql") as url`` yields an empty database."""
    import uuid

    from sqlalchemy import create_engine, make_url, text

    @contextmanager
    def scratch(backend: str) -> Iterator[str]:
        if backend == "sqlite":
            yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'ragbot.db'}"
            return
        if backend != "postgresql":
            raise ValueError(f"unknown database backend {backend!r}")
        server = request.getfixturevalue("postgres_url")
        schema = f"ragbot_test_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server)
        try:
            with admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()

    return scratch


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, scratch_database: Callable[[str], AbstractContextManager[str]]
) -> Iterator[str]:
    """A fresh, empty database URL, once for SQLite and once for PostgreSQL."""
    with scratch_database(request.param) as url:
        yield url


@pytest.fixture(scope="session")
def real_sparse_encoder() -> Any:
    """The packaged SPLADE-tiny, loaded once per test session."""
    from ragbot.config import Settings
    from ragbot.encoders import load_sparse_encoder

    return load_sparse_encoder(Settings())


@pytest.fixture(scope="session")
def real_dense_encoder() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    from ragbot.config import Settings
    from ragbot.encoders import load_dense_encoder

    return load_dense_encoder(Settings())
