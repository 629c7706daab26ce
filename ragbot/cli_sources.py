"""``ragbot sources ...``: list a bot's sources and re-sync them on a schedule.

``ragbot sources schedule ID --every 6h`` queues a re-sync of the source every six hours; the workers
(``ragbot worker``, or ``ragbot serve`` in the embedded default) run it, once per slot however many there
are. ``--off`` stops the schedule.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ragbot.config import get_settings

sources_app = typer.Typer(no_args_is_help=True, help="Sources (folders, sites, uploads) and their re-syncs.")

BotOpt = Annotated[str | None, typer.Option("--bot", help="Bot id (default: the deployment's bot).")]


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _row(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "bot_id": info.bot_id,
        "kind": info.kind,
        "scope": info.scope,
        "last_synced_at": info.last_synced_at.isoformat() if info.last_synced_at else None,
        "every": info.every,
        "next_sync_at": info.next_sync_at.isoformat() if info.next_sync_at else None,
    }


@sources_app.command("list")
def list_command(
    bot: BotOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The bot's sources with their schedules."""
    from ragbot.runtime import Runtime

    runtime = Runtime(get_settings())
    try:
        rows = [_row(s) for s in runtime.schedules.sources(bot or runtime.settings.bot_id)]
    finally:
        runtime.close()
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    for r in rows:
        every = f"every {r['every']}, next {r['next_sync_at']}" if r["every"] else "no schedule"
        typer.echo(f"{r['id']}  {r['kind']:<7} {r['scope']}  ({every}; last sync {r['last_synced_at']})")


@sources_app.command("schedule")
def schedule_command(
    source_id: Annotated[str, typer.Argument(help="The source's id (`ragbot sources list`).")],
    every: Annotated[
        str | None, typer.Option("--every", help="Re-sync interval: 30m, 6h, 1d, 1h30m (1 minute..1 year).")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop re-syncing this source on a schedule.")] = False,
    bot: BotOpt = None,
) -> None:
    """Re-sync a source every interval (the first one an interval from now), or stop with --off."""
    from ragbot.jobs.schedules import NotSchedulableError, parse_every
    from ragbot.runtime import Runtime

    if (every is None) == (not off):
        _fail("give either --every INTERVAL or --off", 2)
    every_s = 0
    if every is not None:
        try:
            every_s = parse_every(every)
        except ValueError as exc:
            _fail(str(exc), 2)
    runtime = Runtime(get_settings())
    try:
        bot_id = bot or runtime.settings.bot_id
        if off:
            info = runtime.schedules.unschedule(bot_id, source_id)
        else:
            try:
                info = runtime.schedules.schedule(bot_id, source_id, every_s)
            except NotSchedulableError as exc:
                _fail(str(exc), 2)
    finally:
        runtime.close()
    if info is None:
        _fail(f"bot {bot_id!r} has no source with id {source_id!r}; see `ragbot sources list`", 2)
    elif off:
        typer.echo(f"{info.scope}: no schedule")
    else:
        typer.echo(
            f"{info.scope}: re-synced every {info.every}, next at {info.next_sync_at:%Y-%m-%d %H:%M} UTC"
        )
