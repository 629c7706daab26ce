"""Shared test fixtures.

The network guard is autouse: any test that dials an address outside 127.0.0.0/8 (or ::1) fails, so an
SSRF refusal can never be "tested" by actually connecting somewhere. Tests reach private or metadata
addresses only through the resolver seam in ``connectors.net``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection


class ForbiddenNetworkAccess(AssertionError):
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
        raise ForbiddenNetworkAccess(f"test tried to dial unresolved host {host!r}") from None
    if not ip.is_loopback:
        raise ForbiddenNetworkAccess(f"test tried to dial non-loopback address {host}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield


@pytest.fixture(autouse=True, scope="session")
def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


POSTGRES_URL = os.environ.get("RAGBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
