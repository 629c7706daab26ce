"""Analytics for a bot's owners (admin keys): what visitors ask, what the content misses, which sources
earn their place. Every view takes ``bot_id``, ``since`` and ``until`` (ISO dates/times, or spans like
``7d``/``24h``; default the last 7 days, UTC, ``until`` exclusive) and answers JSON or, with
``format=csv``, a CSV download. Test and preview conversations are never counted."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ragbot.analytics import export, views
from ragbot.analytics.windows import Window, WindowError, parse_window
from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.routes.report import HEADERS as REPORT_HEADERS
from ragbot.api.routes.report import html_responses
from ragbot.api.routes.sources import job_response
from ragbot.api.schemas import JobOut, error_responses
from ragbot.db.models import utcnow
from ragbot.runtime import Runtime
from ragbot.services.jobs import REPORT, SUCCEEDED, JobStatus
from ragbot.tenancy.deps import AdminDep, admin_bot_id
from ragbot.tenancy.principals import AdminPrincipal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

_ERRORS = error_responses(401, 403, 404, 422)
_CSV_OR_JSON: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {"content": {"application/json": {}, "text/csv": {}}},
}
_SINCE = "Start (inclusive): ISO date or date-time (UTC if no offset), or a span back from now: 7d, 24h, 2w."
_UNTIL = "End (exclusive; a date means the end of that day): like since, default now."

Output = Literal["json", "csv"]


def _scope(
    admin: AdminPrincipal,
    bot_id: str | None,
    since: str | None,
    until: str | None,
    runtime: Runtime,
    bucket: str | None = None,
) -> tuple[str, Window]:
    """The bot (within the key's scope) and the window, or the API's 403/404/422."""
    bot = admin_bot_id(admin, bot_id, runtime)
    try:
        window = parse_window(since, until, utcnow(), bucket=bucket)
    except WindowError as exc:
        raise ApiError(422, "invalid_window", str(exc), fields={exc.field: exc.message}) from None
    return bot, window


def _csv(chunks: Iterator[str], name: str, bot_id: str) -> Response:
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-{_filename(bot_id)}.csv"'},
    )


@router.get("/summary", responses=_CSV_OR_JSON, response_model=None)
async def analytics_summary(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: str | None = Query(default=None, description=_SINCE),
    until: str | None = Query(default=None, description=_UNTIL),
    output: Output = Query(default="json", alias="format"),
) -> dict[str, Any] | Response:
    """Conversations, visitors, visitor messages, answers (answered / ungrounded / failed /
    partial_uncited), handoff rate, leads, feedback up/down/ratio, p50/p95 time to first token and to
    the full answer, tokens and cost: one flat record (one CSV row).
    Definitions: ``ragbot.analytics.views``."""
    bot, window = await run_in_threadpool(_scope, admin, bot_id, since, until, runtime)
    data = await run_in_threadpool(views.summary, runtime.session_factory, bot, window)
    if output == "csv":
        return _csv(export.summary_csv(data), "summary", bot)
    return data


@router.get("/timeseries", responses=_CSV_OR_JSON, response_model=None)
async def analytics_timeseries(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: str | None = Query(default=None, description=_SINCE),
    until: str | None = Query(default=None, description=_UNTIL),
    bucket: Literal["hour", "day"] | None = Query(
        default=None, description="Default: hour for windows up to 48 h, else day (hour: up to 31 days)."
    ),
    output: Output = Query(default="json", alias="format"),
) -> dict[str, Any] | Response:
    """The summary's figures per bucket (``points``, oldest first, every bucket present; ``t`` is its
    start in UTC). The points' counters add up to the summary's; rates and percentiles are per bucket."""
    bot, window = await run_in_threadpool(_scope, admin, bot_id, since, until, runtime, bucket)
    data = await run_in_threadpool(views.timeseries, runtime.session_factory, bot, window)
    if output == "csv":
        return _csv(export.timeseries_csv(data), "timeseries", bot)
    return data


@router.get("/sources", responses=_CSV_OR_JSON, response_model=None)
async def analytics_sources(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: str | None = Query(default=None, description=_SINCE),
    until: str | None = Query(default=None, description=_UNTIL),
    level: Literal["document", "source"] = Query(default="document", description="CSV only: the rows."),
    output: Output = Query(default="json", alias="format"),
) -> dict[str, Any] | Response:
    """Per document and per source: answers that retrieved it, cited it, and cited it in an answer rated
    thumbs-down; plus the documents no answer in the window retrieved (``never_retrieved``)."""
    bot, window = await run_in_threadpool(_scope, admin, bot_id, since, until, runtime)
    data = await run_in_threadpool(views.sources, runtime.session_factory, bot, window)
    if output == "csv":
        return _csv(export.sources_csv(data, level), f"sources-{level}", bot)
    return data


@router.get("/feedback", responses=_CSV_OR_JSON, response_model=None)
async def analytics_feedback(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: str | None = Query(default=None, description=_SINCE),
    until: str | None = Query(default=None, description=_UNTIL),
    output: Output = Query(default="json", alias="format"),
    limit: int = Query(default=1000, ge=1, le=10000, description="JSON only; CSV has every rating."),
) -> list[dict[str, Any]] | Response:
    """Ratings given or changed in the window, oldest first, each with the question, the answer, its
    citations, the retrieval log behind it and the comment (the ``/v1/feedback`` export without test
    conversations)."""
    bot, window = await run_in_threadpool(_scope, admin, bot_id, since, until, runtime)
    rows = views.feedback(runtime.feedback, runtime.session_factory, bot, window)
    if output == "csv":
        return _csv(export.feedback_csv(rows), "feedback", bot)
    capped = views.feedback(runtime.feedback, runtime.session_factory, bot, window, limit=limit)
    return await run_in_threadpool(list, capped)


async def _topics(
    name: Literal["top_questions", "content_gaps"],
    admin: AdminPrincipal,
    runtime: Runtime,
    bot_id: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    output: Output,
) -> dict[str, Any] | Response:
    bot, window = await run_in_threadpool(_scope, admin, bot_id, since, until, runtime)
    try:
        topics = importlib.import_module("ragbot.analytics.topics")  # built apart; absent in some builds
    except ModuleNotFoundError as exc:
        if exc.name != "ragbot.analytics.topics":
            raise
        raise ApiError(501, "not_available", "topic analytics are not part of this build") from None
    compute = getattr(topics, name)
    result = await run_in_threadpool(compute, runtime, bot, window.since, window.until, limit)
    if output == "csv":
        return _csv(export.table_csv(export.flat_rows(result)), name.replace("_", "-"), bot)
    frame = {"bot_id": bot, "since": window.since.isoformat(), "until": window.until.isoformat()}
    return {**frame, **result} if isinstance(result, dict) else {**frame, "items": result}


@router.get("/top-questions", responses=_CSV_OR_JSON, response_model=None)
async def analytics_top_questions(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: str | None = Query(default=None, description=_SINCE),
    until: str | None = Query(default=None, description=_UNTIL),
    limit: int = Query(default=20, ge=1, le=200),
    output: Output = Query(default="json", alias="format"),
) -> dict[str, Any] | Response:
    """What visitors ask most: their questions grouped by meaning, largest groups first."""
    return await _topics("top_questions", admin, runtime, bot_id, since, until, limit, output)


@router.get("/content-gaps", responses=_CSV_OR_JSON, response_model=None)
async def analytics_content_gaps(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: str | None = Query(default=None, description=_SINCE),
    until: str | None = Query(default=None, description=_UNTIL),
    limit: int = Query(default=20, ge=1, le=200),
    output: Output = Query(default="json", alias="format"),
) -> dict[str, Any] | Response:
    """What the content misses: the questions the bot could not ground, grouped by meaning."""
    return await _topics("content_gaps", admin, runtime, bot_id, since, until, limit, output)


def _filename(bot_id: str) -> str:
    """The bot id as a safe file name part (ids may hold characters a header must not)."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in bot_id) or "bot"


# --------------------------------------------------------------------------- reports, off the request path


class ReportRequest(BaseModel):
    bot_id: str | None = None
    since: str | None = Field(default=None, description=_SINCE)
    until: str | None = Field(default=None, description=_UNTIL)
    limit: int = Field(default=20, ge=1, le=200, description="Topics and sources listed per section.")


_REPORT_JOB = {
    **error_responses(401, 403, 404, 422),
    202: {"model": JobOut, "description": "Queued or running: poll it."},
}


def _report_job(runtime: Runtime, bot: str, job_id: str) -> JobStatus:
    job = runtime.jobs.get(bot, job_id)
    if job is None or job.kind != REPORT:
        raise ApiError(404, "job_not_found", f"no report job with id {job_id!r}")
    return job


@router.post("/reports", status_code=202, response_model=JobOut, responses=_REPORT_JOB)
async def analytics_report_job(
    body: ReportRequest, admin: AdminDep, runtime: RuntimeDep, request: Request
) -> JSONResponse:
    """Queue the analytics report (what ``ragbot report`` writes: summary, activity, top questions, content
    gaps, sources, with charts) as a background job: it encodes and clusters every question of the
    window, so a worker builds it. Poll ``GET /v1/analytics/reports/{id}``, then download
    ``.../{id}/html``."""
    bot, window = await run_in_threadpool(_scope, admin, body.bot_id, body.since, body.until, runtime)
    base_url = str(request.base_url).rstrip("/")
    job = await run_in_threadpool(
        lambda: runtime.jobs.submit_report(
            bot, window.since, window.until, limit=body.limit, base_url=base_url
        )
    )
    return job_response(job)  # 202: queued


@router.get("/reports/{job_id}", response_model=JobOut, responses=_REPORT_JOB)
async def analytics_report_status(
    job_id: str, admin: AdminDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> JSONResponse:
    """A report job: 202 while queued or running, 200 once it succeeded or failed (``error`` says why)."""
    bot = admin_bot_id(admin, bot_id, runtime)
    job = await run_in_threadpool(_report_job, runtime, bot, job_id)
    return job_response(job)


@router.get(
    "/reports/{job_id}/html",
    response_class=HTMLResponse,
    responses=html_responses(401, 403, 404, 409, 422),
)
async def analytics_report_html(
    job_id: str, admin: AdminDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> Response:
    """The finished report, one self-contained HTML file; 409 while the job has not succeeded."""
    bot = admin_bot_id(admin, bot_id, runtime)
    job = await run_in_threadpool(_report_job, runtime, bot, job_id)
    output = await run_in_threadpool(runtime.jobs.output, bot, job_id) if job.status == SUCCEEDED else None
    if output is None:
        detail = f": {job.error}" if job.error else ""
        raise ApiError(
            409, "report_not_ready", f"the report job is {job.status}{detail}", job_status=job.status
        )
    return Response(
        output.data,
        media_type=output.content_type,
        headers={**REPORT_HEADERS, "Content-Disposition": f'inline; filename="{output.filename}"'},
    )
