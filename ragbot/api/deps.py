"""Dependency aliases for routes: routes ask for what they need, never build it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragbot.api.errors import ApiError
from ragbot.config import Settings
from ragbot.db import repositories as repo
from ragbot.runtime import Runtime
from ragbot.services.keys import has_control_characters


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings_dep(request: Request) -> Settings:
    return get_runtime(request).settings


def resolve_bot_id(bot_id: str | None, settings: Settings) -> str:
    """The tenant a request names (none or empty: the deployment's bot), or a 422 when it cannot be one."""
    if not bot_id:
        return settings.bot_id
    try:
        repo.check_bot_id(bot_id)
    except ValueError as exc:
        raise ApiError(422, "invalid_bot_id", str(exc)) from None
    if has_control_characters(bot_id):
        message = "bot_id must not contain control characters or unpaired surrogates"
        raise ApiError(422, "invalid_bot_id", message)
    return bot_id


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
