"""Dependency aliases for routes: routes ask for what they need, never build it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import String

from ragbot.api.errors import ApiError
from ragbot.config import Settings
from ragbot.db.models import Bot
from ragbot.runtime import Runtime
from ragbot.services.keys import has_control_characters

_BOT_ID_TYPE = Bot.__table__.c.id.type
#: The longest bot id the database stores.
BOT_ID_MAX_CHARS: int = (
    _BOT_ID_TYPE.length if isinstance(_BOT_ID_TYPE, String) and _BOT_ID_TYPE.length else 64
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings_dep(request: Request) -> Settings:
    return get_runtime(request).settings


def resolve_bot_id(bot_id: str | None, settings: Settings) -> str:
    """The tenant a request names (none or empty: the deployment's bot), or a 422 when it cannot be one."""
    if not bot_id:
        return settings.bot_id
    problem = None
    if not bot_id.strip():
        problem = "must not be blank"
    elif len(bot_id) > BOT_ID_MAX_CHARS:
        problem = f"has {len(bot_id)} characters; the limit is {BOT_ID_MAX_CHARS}"
    elif has_control_characters(bot_id):
        problem = "must not contain control characters or unpaired surrogates"
    if problem is not None:
        raise ApiError(422, "invalid_bot_id", f"bot_id {problem}")
    return bot_id


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
