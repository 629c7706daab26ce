"""``ragbot bots ...`` and ``ragbot keys ...``: managing bots and admin API keys from a shell.

The shell is trusted like an unscoped admin key (it can read the database anyway); changes are audited
as ``cli:<user>``.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from ragbot.config import get_settings

bots_app = typer.Typer(no_args_is_help=True, help="Create, list, change and delete bots.")
keys_app = typer.Typer(no_args_is_help=True, help="Admin API keys: create (shown once), list, revoke.")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _runtime() -> Any:
    from ragbot.runtime import Runtime

    return Runtime(get_settings())


OriginOpt = Annotated[
    list[str] | None,
    typer.Option("--origin", help="A website the widget may run on, e.g. https://www.example.com (repeat)."),
]
StarterOpt = Annotated[
    list[str] | None, typer.Option("--starter", help="A suggested first question (repeat).")
]


def _changes(**given: Any) -> Any:
    from pydantic import ValidationError

    from ragbot.tenancy.bots import BotChanges

    values = {k: v for k, v in given.items() if v is not None}
    try:
        return BotChanges(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        _fail(f"{where}: {first.get('msg')}", 2)


def _show(bot: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(bot)
        return
    for field, value in bot.items():
        typer.echo(f"{field:24} {value if value not in (None, '', []) else '-'}")


@bots_app.command("create")
def bots_create(
    name: Annotated[str, typer.Argument(help="The bot's name.")],
    origin: OriginOpt = None,
    title: Annotated[str | None, typer.Option(help="Widget header (default: the name).")] = None,
    welcome: Annotated[str | None, typer.Option(help="Welcome message in the widget.")] = None,
    starter: StarterOpt = None,
    persona: Annotated[str | None, typer.Option(help="Tone/persona for answers.")] = None,
    accent: Annotated[str | None, typer.Option(help="Widget accent colour, #rrggbb.")] = None,
    model: Annotated[
        str | None, typer.Option(help="LiteLLM model, among those the deployment allows.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the bot as JSON.")] = False,
) -> None:
    """Create a bot; prints its id and public widget key."""
    from ragbot.tenancy.bots import InvalidBotSettingError

    changes = _changes(
        allowed_origins=origin,
        title=title,
        welcome_message=welcome,
        starter_questions=starter,
        persona=persona,
        accent_color=accent,
        llm_model=model,
    )
    runtime = _runtime()
    try:
        bot = runtime.bots.create(name, changes, actor=_actor())
    except InvalidBotSettingError as exc:
        _fail(str(exc), 2)
    finally:
        runtime.close()
    if as_json:
        _print_json(bot)
        return
    typer.echo(f"created bot {bot['id']}")
    typer.echo(f"public key: {bot['public_key']}")
    if not bot["allowed_origins"]:
        typer.echo(
            "no allowed origins yet: add one with `ragbot bots update ID --origin https://...`", err=True
        )


@bots_app.command("list")
def bots_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every bot."""
    runtime = _runtime()
    try:
        bots = runtime.bots.list_bots()
    finally:
        runtime.close()
    if as_json:
        _print_json(bots)
        return
    for bot in bots:
        origins = ", ".join(bot["allowed_origins"]) or "no origins"
        typer.echo(f"{bot['id']}  {bot['name']}  ({origins})")


@bots_app.command("show")
def bots_show(bot_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One bot's settings (``-``: the deployment's default)."""
    runtime = _runtime()
    try:
        bot = runtime.bots.get(bot_id)
    finally:
        runtime.close()
    if bot is None:
        _fail(f"no bot with id {bot_id!r}", 2)
    else:
        _show(bot, as_json)


@bots_app.command("update")
def bots_update(
    bot_id: str,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    origin: OriginOpt = None,
    clear_origins: Annotated[bool, typer.Option("--clear-origins", help="Allow no website.")] = False,
    title: Annotated[str | None, typer.Option()] = None,
    welcome: Annotated[str | None, typer.Option()] = None,
    starter: StarterOpt = None,
    persona: Annotated[str | None, typer.Option()] = None,
    accent: Annotated[str | None, typer.Option()] = None,
    decline: Annotated[str | None, typer.Option(help="What the bot says when it cannot answer.")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str | None, typer.Option(help="'match' or an ISO 639-1 code.")] = None,
    min_relevance: Annotated[
        float | None, typer.Option(help="Fixed relevance floor (dense cosine); default: calibrated.")
    ] = None,
    max_words: Annotated[
        int | None, typer.Option("--max-words", help="Answer length limit in words (citations kept).")
    ] = None,
    rate_visitor: Annotated[int | None, typer.Option(help="Messages per visitor per minute.")] = None,
    rate_ip: Annotated[int | None, typer.Option(help="Messages per IP per minute.")] = None,
    daily_budget: Annotated[int | None, typer.Option(help="Messages per day for the bot.")] = None,
    rotate_key: Annotated[bool, typer.Option("--rotate-key", help="Issue a new public widget key.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Change a bot's settings (options left out keep their value); audited."""
    from ragbot.tenancy.bots import BotNotFoundError, InvalidBotSettingError

    changes = _changes(
        name=name,
        allowed_origins=[] if clear_origins else origin,
        title=title,
        welcome_message=welcome,
        starter_questions=starter,
        persona=persona,
        accent_color=accent,
        decline_message=decline,
        llm_model=model,
        language_policy=language,
        min_relevance=min_relevance,
        answer_max_words=max_words,
        rate_visitor_per_minute=rate_visitor,
        rate_ip_per_minute=rate_ip,
        daily_message_budget=daily_budget,
    )
    runtime = _runtime()
    try:
        bot = runtime.bots.update(bot_id, changes, actor=_actor())
        if rotate_key:
            bot = runtime.bots.rotate_public_key(bot_id, actor=_actor())
    except BotNotFoundError:
        _fail(f"no bot with id {bot_id!r}", 2)
    except InvalidBotSettingError as exc:
        _fail(str(exc), 2)
    finally:
        runtime.close()
    _show(bot, as_json)


@bots_app.command("delete")
def bots_delete(
    bot_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Delete a bot with its vectors, conversations, documents, keys and learned weights."""
    from ragbot.tenancy.bots import BotNotFoundError

    if not yes and not typer.confirm(f"Delete bot {bot_id} and everything it holds?"):
        raise typer.Exit(1)
    runtime = _runtime()
    try:
        removed = runtime.delete_bot(bot_id, actor=_actor())
    except BotNotFoundError:
        _fail(f"no bot with id {bot_id!r}", 2)
    finally:
        runtime.close()
    if as_json:
        _print_json({"id": bot_id, "deleted": True, "removed": removed})
    else:
        summary = ", ".join(f"{n} {table}" for table, n in removed.items() if n)
        typer.echo(f"deleted bot {bot_id} ({summary or 'no rows'})")


@keys_app.command("create")
def keys_create(
    bot: Annotated[str | None, typer.Option("--bot", help="Scope the key to this bot.")] = None,
    name: Annotated[str, typer.Option(help="A label, e.g. who uses it.")] = "",
    expires_days: Annotated[float | None, typer.Option("--expires-days", help="Expire after N days.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an admin API key; it is printed once and only its hash is stored."""
    if expires_days is not None and expires_days <= 0:
        _fail("--expires-days must be positive", 2)
    runtime = _runtime()
    try:
        key, row = runtime.api_keys.create(
            name=name, bot_id=bot, expires_in=timedelta(days=expires_days) if expires_days else None
        )
    except LookupError as exc:
        _fail(str(exc), 2)
    finally:
        runtime.close()
    if as_json:
        _print_json({"key": key, **row})
    else:
        typer.echo(key)
        typer.echo(f"(id {row['id']}; scope: {row['bot_id'] or 'every bot'}; shown once)", err=True)


@keys_app.command("list")
def keys_list(
    bot: Annotated[str | None, typer.Option("--bot", help="Only keys scoped to this bot.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Keys without their secret."""
    runtime = _runtime()
    try:
        keys = runtime.api_keys.list_keys(bot)
    finally:
        runtime.close()
    if as_json:
        _print_json(keys)
        return
    for k in keys:
        state = "active" if k["active"] else ("revoked" if k["revoked_at"] else "expired")
        typer.echo(f"{k['id']}  {k['prefix']}…  {k['bot_id'] or 'every bot'}  {state}  {k['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key at once."""
    from ragbot.tenancy.api_keys import KeyNotFoundError

    runtime = _runtime()
    try:
        runtime.api_keys.revoke(key_id)
    except KeyNotFoundError:
        _fail(f"no API key with id {key_id!r}", 2)
    finally:
        runtime.close()
    typer.echo(f"revoked {key_id}")


visitors_app = typer.Typer(no_args_is_help=True, help="Personal data: forget one visitor (GDPR erasure).")


@visitors_app.command("forget")
def visitors_forget(
    who: Annotated[str, typer.Argument(help="A visitor id or an email address.")],
    bot: Annotated[str, typer.Option("--bot", help="The bot whose data to erase.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Erase one person from a bot: conversations, messages, feedback, leads, and every webhook delivery
    that mentions them. Prints what was removed."""
    from ragbot.privacy.retention import forget_visitor

    runtime = _runtime()
    try:
        if runtime.bots.get(bot) is None:
            _fail(f"no bot with id {bot!r}", 2)
        removed = forget_visitor(runtime.session_factory, bot, who)
    except ValueError as exc:
        _fail(str(exc), 2)
    finally:
        runtime.close()
    if as_json:
        _print_json({"bot_id": bot, "removed": removed})
    else:
        typer.echo(", ".join(f"{n} {kind}" for kind, n in removed.items()) + f" removed for {who}")


def purge_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Apply every bot's retention now (``ragbot serve`` and ``ragbot worker`` also do it hourly)."""
    from ragbot.privacy.retention import purge_expired

    runtime = _runtime()
    try:
        report = purge_expired(runtime.session_factory)
    finally:
        runtime.close()
    if as_json:
        _print_json(report)
    elif not report:
        typer.echo("nothing past any bot's retention")
    else:
        for bot_id, removed in report.items():
            typer.echo(f"{bot_id}: " + ", ".join(f"{n} {kind}" for kind, n in removed.items()))
