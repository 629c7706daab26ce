"""``ragbot report``: a bot's analytics as one self-contained HTML file (charts inline, no network at view
time), read straight from the database like the other admin commands (trusted like an unscoped key)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragbot.config import get_settings


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def report_command(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.", dir_okay=False)],
    bot: Annotated[
        str | None, typer.Option("--bot", help="The bot's id (default: the deployment's).")
    ] = None,
    since: Annotated[
        str, typer.Option("--since", help="Start: a span back from now (7d, 24h, 2w) or an ISO date/time.")
    ] = "7d",
    until: Annotated[
        str | None,
        typer.Option("--until", help="End (exclusive; a date means that whole day). Default: now."),
    ] = None,
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url",
            help="Where ragbot serves the agent inbox, for the links to conversations ('' for no links).",
        ),
    ] = "http://127.0.0.1:8000",
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="Rows per table.")] = 20,
) -> None:
    """Write the analytics report: summary, activity, top questions, content gaps and sources, with
    charts, for one bot over a window (test and preview conversations left out)."""
    from ragbot.analytics.report import build_report
    from ragbot.analytics.windows import WindowError, parse_window
    from ragbot.db.models import utcnow
    from ragbot.runtime import Runtime

    try:
        window = parse_window(since, until, utcnow())
    except WindowError as exc:
        _fail(str(exc), 2)
        return
    runtime = Runtime(get_settings())
    try:
        bot_id = bot or runtime.settings.bot_id
        if bot_id == runtime.settings.bot_id:
            runtime.bots.ensure(bot_id, actor="cli")  # the deployment's own bot exists once anything runs
        elif runtime.bots.get(bot_id) is None:
            _fail(f"no bot with id {bot_id!r}; list them with `ragbot bots list`", 2)
        html = build_report(runtime, bot_id, window, base_url=base_url or None, limit=limit)
    finally:
        runtime.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    typer.echo(f"wrote {out} ({len(html.encode()) // 1024} KiB)", err=True)
