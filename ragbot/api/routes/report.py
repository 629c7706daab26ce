"""``GET /v1/analytics/report``: the analytics report (``ragbot report``) as one HTML page, for an admin
key. The agent inbox fetches it with the agent's key and opens it in a new tab; ``report.css`` is the
stylesheet such a tab can load (see ``ragbot.analytics.report``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ragbot.analytics.windows import WindowError, parse_window
from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.db.models import utcnow
from ragbot.tenancy.deps import AdminDep, admin_bot_id

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])


def html_responses(*error_statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route answering HTML: its errors are the API's JSON error body, not
    HTML; say so, or the route's HTML media type is assumed for them too."""
    return {
        200: {"content": {"text/html": {}}},
        **{
            status: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
            for status in error_statuses
        },
    }


_ERRORS = html_responses(401, 403, 404, 422)
#: The page runs no script and loads nothing but its own stylesheet: charts are inline SVG.
_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {  # also on the report downloaded from a report job (routes/analytics.py)
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get("/report", responses=_ERRORS, response_class=HTMLResponse)
async def analytics_report(
    request: Request,
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None, description="Default: the key's bot, else the deployment's."),
    since: str | None = Query(default=None, description="Start: ISO date/time or a span back (7d, 24h)."),
    until: str | None = Query(default=None, description="End (exclusive): like since, default now."),
    limit: int = Query(default=20, ge=1, le=100, description="Rows per table of questions and gaps."),
) -> HTMLResponse:
    """Summary, activity, top questions, content gaps and sources of one bot over a window (default the
    last 7 days), with charts, in one self-contained HTML page; conversations link to the agent inbox."""
    from ragbot.analytics.report import build_report  # matplotlib loads only when a report is asked for

    bot = await run_in_threadpool(admin_bot_id, admin, bot_id, runtime)
    try:
        window = parse_window(since, until, utcnow())
    except WindowError as exc:
        raise ApiError(422, "invalid_window", str(exc), fields={exc.field: exc.message}) from None
    base_url = str(request.base_url).rstrip("/")
    html = await run_in_threadpool(
        build_report,
        runtime,
        bot,
        window,
        base_url=base_url,
        stylesheet_href=f"{base_url}/v1/analytics/report.css",
        limit=limit,
    )
    return HTMLResponse(html, headers=HEADERS)


@router.get("/report.css", include_in_schema=False)
def analytics_report_stylesheet() -> Response:
    """The report's CSS (no data in it, so no key): linked by the reports above, because the inbox shows
    them under a policy that drops inline styles."""
    from ragbot.analytics.report import stylesheet

    return Response(
        stylesheet(),
        media_type="text/css; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"},
    )
