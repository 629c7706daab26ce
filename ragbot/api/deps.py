"""Dependency aliases for routes: routes ask for what they need, never build it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragbot.config import Settings
from ragbot.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings_dep(request: Request) -> Settings:
    return get_runtime(request).settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
