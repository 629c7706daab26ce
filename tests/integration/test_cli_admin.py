"""``ragbot bots ...``, ``ragbot keys ...`` and ``--bot`` on the content commands, through typer's runner on
the embedded parts (SQLite and a Qdrant Edge shard in a temporary data folder).

Only one test loads the encoders (it ingests one small file); the others never touch a model, and the
refusals of an unknown bot are checked with the model settings pointing nowhere, so a command that loaded
a model before refusing would fail differently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ragbot import __version__
from ragbot.cli import app
from ragbot.config import get_settings

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("RAGBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RAGBOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAGBOT_QDRANT_URL", raising=False)
    monkeypatch.delenv("RAGBOT_BOT_ID", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model settings that cannot load: any command that reaches an encoder fails."""
    monkeypatch.setenv("RAGBOT_SPARSE_MODEL", "/nonexistent/sparse-model")
    monkeypatch.setenv("RAGBOT_DENSE_MODEL", "/nonexistent/dense-model")
    get_settings.cache_clear()


def _json(runner: CliRunner, *args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _create(runner: CliRunner, name: str = "Acme Support", *args: str) -> dict[str, Any]:
    bot: dict[str, Any] = _json(runner, "bots", "create", name, *args)
    return bot


def _one_line_error(result: Any) -> str:
    """A usage error is one line on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


# --------------------------------------------------------------------------- bots


def test_bots_create_prints_the_id_and_public_key(runner: CliRunner) -> None:
    bot = _create(
        runner, "Acme Support", "--origin", "https://www.acme.test", "--origin", "https://*.acme.test"
    )
    assert bot["id"].startswith("acme-support-")
    assert bot["public_key"].startswith("pk_")
    assert bot["name"] == "Acme Support"
    assert bot["allowed_origins"] == ["https://www.acme.test", "https://*.acme.test"]
    assert bot["updated_by"].startswith("cli")

    plain = runner.invoke(app, ["bots", "create", "Beta"])
    assert plain.exit_code == 0, plain.output
    assert "created bot beta-" in plain.stdout and "public key: pk_" in plain.stdout
    assert "no allowed origins yet" in plain.stderr  # a bot without origins cannot be embedded yet


def test_bots_list_and_show(runner: CliRunner) -> None:
    acme = _create(runner, "Acme Support", "--origin", "https://www.acme.test")
    beta = _create(runner, "Beta")
    listed = _json(runner, "bots", "list")
    assert [b["id"] for b in listed] == [acme["id"], beta["id"]]
    assert _json(runner, "bots", "show", acme["id"]) == acme

    text = runner.invoke(app, ["bots", "list"])
    assert text.exit_code == 0
    assert f"{acme['id']}  Acme Support  (https://www.acme.test)" in text.stdout
    assert f"{beta['id']}  Beta  (no origins)" in text.stdout
    shown = runner.invoke(app, ["bots", "show", acme["id"]])
    assert shown.exit_code == 0 and acme["public_key"] in shown.stdout


def test_bots_update_changes_what_is_given(runner: CliRunner) -> None:
    bot = _create(runner, "Acme Support", "--origin", "https://www.acme.test", "--persona", "formal")
    updated = _json(
        runner,
        "bots",
        "update",
        bot["id"],
        "--welcome",
        "Hi! Ask me about Acme.",
        "--starter",
        "a",
        "--starter",
        "b",
        "--accent",
        "#FF8800",
    )
    assert updated["welcome_message"] == "Hi! Ask me about Acme."
    assert updated["starter_questions"] == ["a", "b"]
    assert updated["accent_color"] == "#ff8800"
    assert updated["persona"] == "formal" and updated["allowed_origins"] == ["https://www.acme.test"]
    assert _json(runner, "bots", "show", bot["id"]) == updated

    cleared = _json(runner, "bots", "update", bot["id"], "--clear-origins")
    assert cleared["allowed_origins"] == [] and cleared["starter_questions"] == ["a", "b"]
    rotated = _json(runner, "bots", "update", bot["id"], "--rotate-key")
    assert rotated["public_key"].startswith("pk_") and rotated["public_key"] != bot["public_key"]


@pytest.mark.parametrize(
    "args",
    [
        ["bots", "create", "Acme", "--origin", "www.acme.test"],
        ["bots", "create", "Acme", "--origin", "https://*.test"],
        ["bots", "create", "Acme", "--accent", "orange"],
        ["bots", "create", "Acme", "--model", "openai/not-allowed-here"],
    ],
)
def test_an_invalid_setting_is_a_one_line_usage_error(runner: CliRunner, args: list[str]) -> None:
    _one_line_error(runner.invoke(app, args))
    assert _json(runner, "bots", "list") == []


def test_an_invalid_update_changes_nothing(runner: CliRunner) -> None:
    bot = _create(runner, "Acme", "--origin", "https://www.acme.test")
    message = _one_line_error(
        runner.invoke(app, ["bots", "update", bot["id"], "--origin", "ftp://acme.test"])
    )
    assert "ftp://acme.test" in message
    _one_line_error(runner.invoke(app, ["bots", "update", bot["id"], "--language", "English"]))
    assert _json(runner, "bots", "show", bot["id"]) == bot


@pytest.mark.parametrize(
    "args",
    [
        ["bots", "show", "no-such-bot"],
        ["bots", "update", "no-such-bot", "--title", "x"],
        ["bots", "delete", "no-such-bot", "--yes"],
        ["keys", "create", "--bot", "no-such-bot"],
        ["keys", "revoke", "no-such-key"],
    ],
)
def test_an_unknown_bot_or_key_is_a_usage_error(runner: CliRunner, args: list[str]) -> None:
    assert "no-such" in _one_line_error(runner.invoke(app, args))


def test_bots_delete_asks_unless_told_yes(runner: CliRunner) -> None:
    bot = _create(runner)
    kept = runner.invoke(app, ["bots", "delete", bot["id"]], input="n\n")
    assert kept.exit_code == 1
    assert _json(runner, "bots", "show", bot["id"])["id"] == bot["id"]

    deleted = runner.invoke(app, ["bots", "delete", bot["id"], "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted bot {bot['id']}" in deleted.stdout
    assert runner.invoke(app, ["bots", "show", bot["id"]]).exit_code == 2
    assert _json(runner, "bots", "list") == []


# --------------------------------------------------------------------------- keys


def test_keys_create_list_and_revoke(runner: CliRunner) -> None:
    created = _json(runner, "keys", "create", "--name", "ci")
    key = created["key"]
    assert key.startswith("rb_") and created["prefix"] == key[:10]
    assert created["bot_id"] is None and created["active"] is True and created["name"] == "ci"

    bot = _create(runner)
    scoped = _json(runner, "keys", "create", "--bot", bot["id"], "--expires-days", "1")
    assert scoped["bot_id"] == bot["id"] and scoped["expires_at"] and scoped["active"] is True

    listing = runner.invoke(app, ["keys", "list", "--json"])
    assert listing.exit_code == 0
    assert key not in listing.stdout and scoped["key"] not in listing.stdout
    rows = json.loads(listing.stdout)
    assert [r["id"] for r in rows] == [created["id"], scoped["id"]]
    assert all("key" not in r and "key_hash" not in r for r in rows)
    assert [r["id"] for r in _json(runner, "keys", "list", "--bot", bot["id"])] == [scoped["id"]]

    revoked = runner.invoke(app, ["keys", "revoke", created["id"]])
    assert revoked.exit_code == 0 and f"revoked {created['id']}" in revoked.stdout
    states = {r["id"]: r["active"] for r in _json(runner, "keys", "list")}
    assert states == {created["id"]: False, scoped["id"]: True}
    text = runner.invoke(app, ["keys", "list"])
    assert "revoked" in text.stdout and key not in text.stdout


def test_keys_create_prints_the_key_alone_on_stdout(runner: CliRunner) -> None:
    """``KEY=$(ragbot keys create)`` must capture the key and nothing else."""
    result = runner.invoke(app, ["keys", "create"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("rb_") and len(result.stdout.strip().split()) == 1
    assert "shown once" in result.stderr


@pytest.mark.parametrize("days", ["0", "-1"])
def test_keys_need_a_positive_lifetime(runner: CliRunner, days: str) -> None:
    _one_line_error(runner.invoke(app, ["keys", "create", "--expires-days", days]))
    assert _json(runner, "keys", "list") == []


# --------------------------------------------------------------------------- --bot on content commands


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", str(SAMPLE / "api.md"), "--bot", "no-such-bot"],
        ["ask", "What is ragbot?", "--bot", "no-such-bot"],
        ["explain", "What is ragbot?", "--bot", "no-such-bot"],
    ],
)
def test_content_commands_refuse_an_unknown_bot_before_loading_models(
    runner: CliRunner, no_models: None, args: list[str]
) -> None:
    message = _one_line_error(runner.invoke(app, args))
    assert "no bot with id 'no-such-bot'" in message and "ragbot bots create" in message


def test_ingest_into_a_created_bot_then_delete_it(runner: CliRunner, tmp_path: Path) -> None:
    doc = tmp_path / "refunds.md"
    doc.write_text("# Refunds\n\nRefunds are paid within 14 days of a return.\n", encoding="utf-8")
    bot = _create(runner, "Acme Support")

    report = _json(runner, "ingest", str(doc), "--bot", bot["id"])
    assert (report["added"], report["failed"]) == (1, 0) and report["chunks"] >= 1
    again = _json(runner, "ingest", str(doc), "--bot", bot["id"])
    assert again["unchanged"] == 1  # the same bot's content, not a new one
    other = _create(runner, "Other")
    assert _json(runner, "ingest", str(doc), "--bot", other["id"])["added"] == 1  # bots do not share content

    deleted = _json(runner, "bots", "delete", bot["id"], "--yes")
    assert deleted["deleted"] is True
    assert deleted["removed"]["documents"] == 1 and deleted["removed"]["bots"] == 1
    refused = runner.invoke(app, ["ingest", str(doc), "--bot", bot["id"]])
    assert refused.exit_code == 2 and "no bot with id" in refused.stderr


def test_the_default_bot_needs_no_setup(runner: CliRunner, no_models: None) -> None:
    """``--bot`` naming the deployment's own bot is accepted without ``bots create``: it is created, with a
    public key, on first use (here the unloadable model then stops the ingest, after the bot check)."""
    assert runner.invoke(app, ["bots", "show", "default"]).exit_code == 2
    result = runner.invoke(app, ["ingest", str(SAMPLE / "api.md"), "--bot", "default", "--json"])
    assert result.exit_code != 0 and "no bot with id" not in result.output
    default = _json(runner, "bots", "show", "default")
    assert default["public_key"].startswith("pk_")


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ragbot {__version__}"
