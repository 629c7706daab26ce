"""docker-compose.yml read as data (no Docker daemon runs where ragbot is built): the services a
production stack needs, their health checks and start order, settings that exist, and commands that the
``ragbot`` CLI really has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from ragbot.cli import app
from ragbot.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def _ragbot_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "ragbot:local"}


def test_the_stack_has_api_worker_databases_and_qdrant_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "qdrant", "migrate", "api", "worker", "backup"} <= set(services)
    for name in ("postgres", "redis", "qdrant", "api"):
        check = services[name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
    assert "readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    for name in ("postgres", "redis", "qdrant"):
        assert "ports" not in services[name], f"{name} must not be published outside the stack"


def test_migrations_run_once_before_the_api_and_the_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["ragbot", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["qdrant"]["condition"] == depends["redis"]["condition"] == "service_healthy"
        assert services[name]["restart"] == "unless-stopped"


def test_api_and_worker_run_the_real_commands(compose: dict[str, Any]) -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    services = compose["services"]
    api = services["api"]["command"]
    assert api[:2] == ["ragbot", "serve"] and "--workers" in api and "0.0.0.0" in api
    serve_options = {opt for p in commands["serve"].params for opt in p.opts}
    assert {o for o in api[2:] if o.startswith("--")} <= serve_options
    assert services["worker"]["command"] == ["ragbot", "worker"]
    assert "ragbot backup /backups/" in services["backup"]["entrypoint"][-1]
    assert services["backup"]["profiles"] == ["tools"]  # not started by `docker compose up`
    for name in ("serve", "worker", "migrate", "backup", "restore"):
        assert name in commands


def test_every_ragbot_process_shares_postgres_redis_and_qdrant(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    services = _ragbot_services(compose)
    assert set(services) == {"migrate", "api", "worker", "backup"}
    for name, service in services.items():
        env = service["environment"]
        assert env["RAGBOT_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["RAGBOT_DATABASE_URL"], name
        assert env["RAGBOT_QDRANT_URL"] == "http://qdrant:6333", name
        assert env["RAGBOT_REDIS_URL"].startswith("redis://redis:6379"), name
        assert ":?" in env["RAGBOT_SECRET_KEY"], f"{name}: the secret must be required, not defaulted"
        unknown = {
            k for k in env if k.startswith("RAGBOT_") and k.removeprefix("RAGBOT_").lower() not in fields
        }
        assert not unknown, f"{name} sets variables ragbot does not read: {unknown}"


def test_the_image_leaves_the_local_environment_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".ragbot", ".git"} <= set(ignored)
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "USER ragbot" in dockerfile
