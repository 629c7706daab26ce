"""Faults while visitors chat: ``benchmarks/load.py`` against a real ``ragbot serve``, with a fault
injected half-way (the LLM failing 30% of its calls with 500s and hangs, PostgreSQL restarted with
``pg_ctlcluster``, Redis stopped and started, the webhook worker killed with SIGKILL). Every visitor
message must be stored, every turn must end answered or with a clear error, and once the fault has
cleared every turn is answered again, without restarting ragbot.

PostgreSQL and Redis are private instances made for the test (a ``pg_createcluster`` cluster, a
``redis-server`` on a free port) so restarting them disturbs nothing else on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from integration.katan import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: 10 visitors, a message every 2 s each for 16 s (about 80 turns), the fault 6 s in.
LOAD = ["--visitors", "10", "--interval", "2", "--duration", "16", "--warm-up", "2", "--fault-at", "6"]


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ragbot_load_benchmark", ROOT / "benchmarks" / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "load.json"
    _load_module().main([*LOAD, "--grounding", "off", "--json", str(out), *args])
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def _assert_nothing_lost(figures: dict[str, Any]) -> None:
    assert figures["sent"] > 0
    assert figures["lost"] == 0, figures["failures"]
    assert figures["stored"] == figures["sent"]  # every visitor message is in the database
    assert figures["answered"] + figures["failed_clear"] == figures["sent"]
    assert figures["replies_stored"] == figures["replies_reported"]


def _assert_service_resumed(figures: dict[str, Any]) -> None:
    after = figures["fault"]["after"]
    assert after["sent"] > 0
    assert after["answered"] == after["sent"], after  # no restart of ragbot was needed


@pytest.fixture
def postgres_cluster() -> Iterator[tuple[str, str]]:
    """A private PostgreSQL cluster: (its SQLAlchemy URL, its version) for ``pg_ctlcluster``."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's pg_createcluster, as root")
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    version = listed.split()[0]
    name, port = f"ragbotfault{os.getpid()}", free_port()
    subprocess.run(
        ["pg_createcluster", version, name, "-p", str(port), "--", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", f"{version} {name}"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], check=False, capture_output=True)


@pytest.fixture
def redis_port() -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    port = free_port()
    subprocess.run(_redis_start(port), shell=True, check=True)
    try:
        yield port
    finally:
        subprocess.run(f"redis-cli -p {port} shutdown nosave", shell=True, check=False, capture_output=True)


def _redis_start(port: int) -> str:
    return f"redis-server --bind 127.0.0.1 --port {port} --daemonize yes --save '' --appendonly no"


def test_llm_failing_a_third_of_its_calls(tmp_path: Path) -> None:
    """15% of LLM calls answered 500 and 15% hanging without a byte, for the whole run (a fault proxy in
    front of llm-katan); ragbot's first-token deadline is 3 s, so a hung call is a timeout it retries."""
    figures = _run(tmp_path, "--llm-error-rate", "0.15", "--llm-hang-rate", "0.15")
    _assert_nothing_lost(figures)
    faults = figures["llm_faults"]
    assert faults["error"] > 0 and faults["hang"] > 0  # both kinds really happened
    assert figures["answered"] > figures["sent"] // 2  # retries and fallbacks carry most turns through
    assert set(figures["error_codes"]) <= {"llm_unavailable"}


def test_postgres_restarted_under_load(tmp_path: Path, postgres_cluster: tuple[str, str]) -> None:
    url, cluster = postgres_cluster
    restart = f"pg_ctlcluster --skip-systemctl-redirect {cluster} restart"
    figures = _run(tmp_path, "--database-url", url, "--fault-stop", restart)
    _assert_nothing_lost(figures)
    _assert_service_resumed(figures)


def test_redis_stopped_and_started_under_load(tmp_path: Path, redis_port: int) -> None:
    stop = f"redis-cli -p {redis_port} shutdown nosave"
    figures = _run(
        tmp_path,
        "--redis-url",
        f"redis://127.0.0.1:{redis_port}/0",
        "--fault-stop",
        stop,
        "--fault-start",
        _redis_start(redis_port),
        "--fault-down",
        "4",
    )
    _assert_nothing_lost(figures)
    _assert_service_resumed(figures)
    assert figures["failed_clear"] == 0  # rate limits fail open and streams catch up: nobody notices


@pytest.mark.postgres
def test_webhook_worker_killed_under_load(tmp_path: Path, postgres_url: str) -> None:
    """Every message's webhook goes out through a `ragbot worker --no-jobs` beside `ragbot serve`; it is
    SIGKILLed mid-run and a new one started 3 s later. Visitors never notice, and once the outbox drains
    every message.created delivery has reached the receiver (signed), none missing."""
    figures = _run(
        tmp_path,
        "--database-url",
        postgres_url,  # load.py runs on a fresh schema of it
        "--kill-worker",
        "--fault-down",
        "3",
    )
    _assert_nothing_lost(figures)
    _assert_service_resumed(figures)
    assert figures["failed_clear"] == 0
    hooks = figures["webhooks"]
    assert hooks["queued"] == hooks["messages"] > 0  # one delivery per stored message
    assert hooks["drained_s"] is not None and hooks["pending"] == hooks["failed"] == 0
    assert hooks["missing"] == 0 and hooks["received"] == hooks["queued"]
    assert hooks["unverified"] == 0
