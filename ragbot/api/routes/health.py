"""Liveness and readiness, for load balancers and orchestrators (no key needed, nothing sensitive)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process answers: nothing else is checked, so a slow database never gets it restarted."""
    return {"status": "ok"}


def _readiness(runtime: Runtime) -> tuple[bool, dict[str, str]]:
    checks: dict[str, str] = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database failed: %s", exc)
        checks["database"] = "failed"
    try:
        runtime.index.count(runtime.settings.bot_id)
        checks["index"] = type(runtime.index).__name__
    except Exception as exc:
        log.warning("readiness: index failed: %s", exc)
        checks["index"] = "failed"
    if runtime.settings.redis_url:
        try:
            runtime.rate_limiter.check_ready()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness: redis failed: %s", exc)
            checks["redis"] = "failed"
    return all(v != "failed" for v in checks.values()), checks


@router.get("/readyz", responses={503: {"description": "A dependency is down."}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready to serve: the database answers, the index opens and, when configured, Redis answers."""
    ready, checks = await run_in_threadpool(_readiness, runtime)
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503
    )


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    """Readiness under its historical name."""
    return await readyz(runtime)
