"""``GET /metrics``: Prometheus exposition for operators.

Metrics cover every bot of the deployment, so they take an unscoped admin key, or the bearer token in
``RAGBOT_METRICS_TOKEN`` (for a scraper that should hold no admin key). Prometheus sends it with
``authorization: {type: Bearer, credentials: ...}`` in its scrape config.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ErrorOut
from ragbot.db.models import utcnow
from ragbot.observability import metrics
from ragbot.runtime import Runtime
from ragbot.tenancy.deps import admin_principal, bearer

router = APIRouter(tags=["operations"])


async def metrics_reader(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """The metrics token, or an admin key for every bot (a bot's key may not see the others' traffic)."""
    token = runtime.settings.metrics_token
    given = credentials.credentials if credentials is not None else ""
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        return
    principal = await admin_principal(request, credentials)
    if principal.bot_id is not None:
        raise ApiError(
            403, "forbidden", "metrics cover every bot: use an unscoped admin key or the metrics token"
        )


def _render(runtime: Runtime, accept: str | None) -> tuple[bytes, str]:
    return metrics.render(accept, [metrics.StoreCollector(runtime.session_factory, utcnow)])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(metrics_reader)],
    responses={
        200: {
            "description": "Prometheus text (OpenMetrics when the Accept header asks for it).",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
    },
)
async def read_metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus metrics: requests, chat turns and time to first token, retrieval and LLM latency,
    webhook outbox depth and deliveries, ingest jobs."""
    body, content_type = await run_in_threadpool(_render, runtime, request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
