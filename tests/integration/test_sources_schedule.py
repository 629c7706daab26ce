"""Sources and their re-sync schedules through the API (SQLite and PostgreSQL) and the CLI, and a
scheduled re-sync run by the API process's own job runner, as in the embedded default."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from sqlalchemy import select
from typer.testing import CliRunner

from ragbot.api.app import create_app
from ragbot.cli import app as cli_app
from ragbot.config import Settings, get_settings
from ragbot.db.models import IngestJob, Source, utcnow
from ragbot.db.session import session_scope
from ragbot.index.edge import EdgeIndex
from ragbot.runtime import Runtime

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(
    tmp_path: Path, database_url: str, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Runtime]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text("# Hours\n\nThe shop opens at nine on weekdays.", encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        api_path_roots=[tmp_path],
        schedule_check_s=0.2,
        job_poll_s=0.2,
    )
    index = EdgeIndex(tmp_path / "edge")
    rt = Runtime(settings, index=index, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
    yield rt
    rt.close()
    index.close()


def test_schedule_a_source_through_the_api(runtime: Runtime, tmp_path: Path) -> None:
    docs = str(tmp_path / "docs")
    with TestClient(create_app(runtime=runtime, warmup=False), headers=admin_headers(runtime)) as client:
        job = client.post("/v1/sources?wait=120", json={"target": docs, "max_pages": 7})
        assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
        listed = client.get("/v1/sources").json()["sources"]
        assert [(s["kind"], s["scope"], s["every"]) for s in listed] == [("files", docs, None)]
        source_id = listed[0]["id"]

        scheduled = client.put(f"/v1/sources/{source_id}/schedule", json={"every": "6h"})
        assert scheduled.status_code == 200, scheduled.text
        body = scheduled.json()
        assert (body["every"], body["every_s"]) == ("6h", 21600)
        assert body["next_sync_at"] is not None

        bad = client.put(f"/v1/sources/{source_id}/schedule", json={"every": "often"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_interval")
        missing = client.put("/v1/sources/no-such-source/schedule", json={"every": "1h"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "source_not_found")
        assert client.delete("/v1/sources/no-such-source/schedule").status_code == 404

        cleared = client.delete(f"/v1/sources/{source_id}/schedule")
        assert cleared.status_code == 200 and cleared.json()["every"] is None

        upload = client.post(
            "/v1/sources?wait=60", files={"file": ("a.txt", b"Uploaded text.", "text/plain")}
        )
        assert upload.json()["status"] == "succeeded", upload.text
        uploads = next(s for s in client.get("/v1/sources").json()["sources"] if s["kind"] == "upload")
        refused = client.put(f"/v1/sources/{uploads['id']}/schedule", json={"every": "1h"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "not_schedulable")


def test_the_api_process_runs_a_due_resync(runtime: Runtime, tmp_path: Path) -> None:
    """Embedded default: ``ragbot serve``'s runner (started with the app) queues and runs the re-sync."""
    docs = tmp_path / "docs"
    with TestClient(create_app(runtime=runtime, warmup=False), headers=admin_headers(runtime)) as client:
        assert client.post("/v1/sources?wait=120", json={"target": str(docs)}).json()["status"] == "succeeded"
        source_id = client.get("/v1/sources").json()["sources"][0]["id"]
        assert client.put(f"/v1/sources/{source_id}/schedule", json={"every": "1h"}).status_code == 200
        (docs / "new.md").write_text("# New\n\nDeliveries arrive on Tuesdays.", encoding="utf-8")
        with session_scope(runtime.session_factory) as s:
            s.get_one(Source, source_id).next_sync_at = utcnow() - timedelta(seconds=1)
        runtime.background.start()  # what the lifespan does with warmup
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with runtime.session_factory() as s:
                    jobs = list(s.scalars(select(IngestJob).where(IngestJob.source_id == source_id)))
                if jobs and jobs[0].status == "succeeded":
                    break
                time.sleep(0.2)
        finally:
            runtime.background.stop()
    assert len(jobs) == 1 and jobs[0].status == "succeeded", [(j.status, j.error) for j in jobs]
    assert jobs[0].report["added"] == 1 and jobs[0].report["unchanged"] == 1


def test_schedule_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RAGBOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAGBOT_QDRANT_URL", raising=False)
    get_settings.cache_clear()
    try:
        rt = Runtime(get_settings())
        with session_scope(rt.session_factory) as s:
            from ragbot.db import repositories as repo

            source_id = repo.get_or_create_source(s, rt.settings.bot_id, "web", "https://example.org/").id
        rt.close()
        runner = CliRunner()
        done = runner.invoke(cli_app, ["sources", "schedule", source_id, "--every", "1d12h"])
        assert done.exit_code == 0, done.output
        assert "https://example.org/: re-synced every 1d12h" in done.output
        listed = runner.invoke(cli_app, ["sources", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        assert '"every": "1d12h"' in listed.output
        bad = runner.invoke(cli_app, ["sources", "schedule", source_id, "--every", "5s"])
        assert bad.exit_code == 2 and "between 1 minute and 365 days" in bad.output
        unknown = runner.invoke(cli_app, ["sources", "schedule", "nope", "--every", "1h"])
        assert unknown.exit_code == 2 and "no source with id 'nope'" in unknown.output
        off = runner.invoke(cli_app, ["sources", "schedule", source_id, "--off"])
        assert off.exit_code == 0 and "no schedule" in off.output
    finally:
        get_settings.cache_clear()
