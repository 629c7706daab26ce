from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from ragbot.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    """Cheap liveness + readiness: the database answers and the index opens."""
    with runtime.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok", "index": type(runtime.index).__name__}
