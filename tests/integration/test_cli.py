"""The ``ragbot`` commands a user types, through typer's runner, on the real embedded parts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragbot.cli import app
from ragbot.config import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("RAGBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RAGBOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAGBOT_QDRANT_URL", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_ingest_a_folder_reports_bad_files_and_keeps_the_rest(runner: CliRunner, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days.\n", encoding="utf-8")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a real pdf")
    result = runner.invoke(app, ["ingest", str(docs), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["added"], report["failed"]) == (1, 1)
    assert report["failures"][0]["uri"].endswith("broken.pdf")

    again = runner.invoke(app, ["ingest", str(docs), "--json"])
    assert json.loads(again.stdout)["unchanged"] == 1


def test_a_refused_url_fails_the_command_without_touching_the_index(runner: CliRunner) -> None:
    # Refused by the address check before any connection: nothing listens there, nothing is dialed.
    result = runner.invoke(app, ["ingest", "http://127.0.0.1:9/", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1
    assert report["removed"] == 0
    assert "loopback" in report["failures"][0]["reason"]
    assert "--allow-private" in report["failures"][0]["reason"]


def test_a_missing_path_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "error" in result.output


def test_eval_on_a_folder_that_is_not_beir_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "notbeir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "qrels" / "dev.tsv").write_text("q\td1\t1\n")
    result = runner.invoke(app, ["eval", str(folder)])
    assert result.exit_code == 2
    assert "missing qrels file; this folder has dev (choose with --split)" in result.output
    result = runner.invoke(app, ["eval", str(folder), "--split", "dev"])
    assert result.exit_code == 2
    assert "corpus.jsonl: missing file" in result.output
    assert "Traceback" not in result.output


def test_eval_with_an_unknown_mode_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path), "--modes", "sparse,colbert"])
    assert result.exit_code == 2
    assert "choose from bm25, sparse, dense, hybrid" in result.output
