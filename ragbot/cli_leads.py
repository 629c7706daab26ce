"""``ragbot leads export``: a bot's contacts as CSV or JSON, from a shell (trusted like an unscoped admin
key: it reads the database directly)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from ragbot.config import get_settings

leads_app = typer.Typer(no_args_is_help=True, help="Contacts visitors left through a bot's lead form.")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def _target(out: Path | None) -> Iterator[TextIO]:
    if out is None:
        yield sys.stdout
        return
    # newline="": the csv module writes its own line endings; the OS must not translate them
    with out.open("w", encoding="utf-8", newline="") as handle:
        yield handle


def _json_lines(leads: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for n, lead in enumerate(leads):
        yield ("," if n else "") + "\n  " + json.dumps(lead, ensure_ascii=False, default=str)
    yield "\n]\n"


@leads_app.command("export")
def leads_export(
    bot: Annotated[
        str | None, typer.Option("--bot", help="The bot's id (default: the deployment's).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    output: Annotated[
        ExportFormat, typer.Option("--format", help="csv (a spreadsheet) or json.")
    ] = ExportFormat.CSV,
) -> None:
    """Every contact of a bot, oldest first. CSV columns: created_at, updated_at, email, name, phone,
    company, custom_<key>..., consent_version, consented_at, page_url, utm_*, conversation_id."""
    from ragbot.runtime import Runtime

    runtime = Runtime(get_settings())
    try:
        bot_id = bot or runtime.settings.bot_id
        if runtime.bots.get(bot_id) is None:
            _fail(f"no bot with id {bot_id!r}", 2)
        if output is ExportFormat.CSV:
            chunks = runtime.leads.export_csv(bot_id)
        else:
            chunks = _json_lines(runtime.leads.iter_all(bot_id))
        with _target(out) as handle:
            for chunk in chunks:
                handle.write(chunk)
        if out is not None:
            typer.echo(f"wrote {out}", err=True)
    finally:
        runtime.close()
