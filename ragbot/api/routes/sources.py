"""Ingest through the API: a server path or URL (JSON) or uploaded files (multipart), queued as background
jobs so a big crawl never blocks the server; clients poll ``GET /v1/sources/jobs/{id}``. The sources
ingested so far are listed at ``GET /v1/sources``, and each can be re-synced on a schedule
(``PUT /v1/sources/{id}/schedule``)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError, BodyTooLargeError
from ragbot.api.schemas import ErrorOut, JobOut, SourceRequest
from ragbot.config import Settings
from ragbot.runtime import Runtime
from ragbot.services.keys import has_control_characters
from ragbot.tenancy.deps import AdminDep, admin_bot_id
from ragbot.tenancy.principals import AdminPrincipal

router = APIRouter(prefix="/v1/sources", tags=["sources"])

#: How often ``?wait=`` looks at the job again.
_WAIT_POLL_S = 0.1

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": SourceRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "bot_id": {"type": "string"},
                    },
                    "required": ["file"],
                }
            },
        },
        "required": True,
    }
}


def job_response(job: Any, finished_code: int = 200) -> JSONResponse:
    """A job as ``JobOut``: 202 while it is queued or running, ``finished_code`` once it ended."""
    body = JobOut.model_validate(job, from_attributes=True).model_dump(mode="json")
    return JSONResponse(status_code=finished_code if job.finished else 202, content=body)


def _check_server_path(target: str, settings: Settings) -> None:
    """A path named through the API must lie inside an allowed root: the API is no file-read oracle."""
    try:
        # expanduser: RuntimeError for an unknown ~user; resolve: RuntimeError for a symlink loop
        resolved = Path(target).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ApiError(422, "invalid_target", f"{target!r} is not a usable path: {exc}") from None
    roots = [r.expanduser().resolve() for r in settings.api_path_roots]
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise ApiError(403, "path_not_allowed", f"{target!r} is outside the folders this server may ingest")
    try:
        resolved.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ApiError(404, "path_not_found", f"{target!r} does not exist on the server") from None
    except (OSError, ValueError) as exc:  # a name too long for the file system, no permission...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ApiError(422, "invalid_target", f"{target!r} cannot be read: {reason}") from None


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _uploads(request: Request, runtime: Runtime, admin: AdminPrincipal) -> tuple[list[Any], str]:
    """The uploaded files and the bot they are for. The body's total size is capped while it arrives
    (``ragbot.api.limits``); each file is checked against ``max_upload_bytes`` here."""
    from connectors.files import Upload, upload_uri

    limit = runtime.settings.max_upload_bytes
    try:
        form = await request.form()
    except BodyTooLargeError:
        raise
    except StarletteHTTPException as exc:  # the multipart parser's refusals (no boundary, broken parts)
        raise ApiError(422, "invalid_multipart", f"cannot read the multipart body: {exc.detail}") from None
    try:
        bot = form.get("bot_id")
        bot_id = await run_in_threadpool(admin_bot_id, admin, bot if isinstance(bot, str) else None, runtime)
        files = [v for v in form.getlist("file") if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(422, "invalid_request", "multipart body needs at least one 'file' part")
        uploads: list[Upload] = []
        seen: dict[str, str] = {}
        for f in files:
            name = f.filename or "upload"
            if has_control_characters(name):
                raise ApiError(422, "invalid_filename", f"file name {name!r} contains control characters")
            uri = upload_uri(name)
            if uri in seen:  # one would silently replace the other: the same document identity
                message = f"{seen[uri]!r} and {name!r} would both be stored as {uri!r}; rename one"
                raise ApiError(422, "duplicate_filename", message)
            seen[uri] = name
            data = await f.read(limit + 1)
            if len(data) > limit:
                raise ApiError(413, "upload_too_large", f"{name!r} is larger than the limit of {limit} bytes")
            uploads.append(Upload(filename=name, data=data, content_type=f.content_type))
    finally:
        await form.close()
    return uploads, bot_id


def _check_target(body: SourceRequest) -> None:
    if has_control_characters(body.target):
        raise ApiError(422, "invalid_target", "target must not contain control characters")


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra=_OPENAPI_BODY,
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        413: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
async def create_source(
    request: Request,
    admin: AdminDep,
    runtime: RuntimeDep,
    wait: float = Query(default=0.0, ge=0, le=600, description="Seconds to wait for the job to finish."),
) -> JSONResponse:
    """Start ingesting a path or URL (JSON body) or uploaded files (multipart); returns the job."""
    if _is_multipart(request):
        uploads, bot_id = await _uploads(request, runtime, admin)
        job = await run_in_threadpool(_submit_uploads, runtime, uploads, bot_id)
    else:
        try:
            body = SourceRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
            raise ApiError(422, "invalid_request", message) from None
        _check_target(body)
        bot_id = await run_in_threadpool(admin_bot_id, admin, body.bot_id, runtime)
        job = await run_in_threadpool(_submit_target, runtime, body, bot_id)
    if wait > 0:
        job = await _wait_for(runtime, job, wait)
    return job_response(job)


async def _wait_for(runtime: Runtime, job: Any, timeout_s: float) -> Any:
    """Poll the job until it finishes or ``timeout_s`` passes, sleeping on the event loop: a long wait
    must not hold one of the worker threads every synchronous route needs."""
    deadline = time.monotonic() + timeout_s
    while not job.finished:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(_WAIT_POLL_S, left))
        job = await run_in_threadpool(runtime.jobs.get, job.bot_id, job.id) or job
    return job


def _submit_target(runtime: Runtime, body: SourceRequest, bot_id: str) -> Any:
    from ragbot.services.ingest import connector_for

    settings = runtime.settings
    if not body.target.lower().startswith(("http://", "https://")):
        if "://" in body.target:
            raise ApiError(422, "unsupported_target", "give an http(s) URL or a server path")
        _check_server_path(body.target, settings)
    try:
        connector = connector_for(
            body.target,
            settings,
            max_pages=body.max_pages,
            max_depth=body.max_depth,
            include=body.include or None,
            exclude=body.exclude or None,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise ApiError(422, "invalid_target", str(exc)) from None
    options = {
        "max_pages": body.max_pages,
        "max_depth": body.max_depth,
        "include": body.include or None,
        "exclude": body.exclude or None,
    }
    del connector  # built only to validate: the job stores the target and options, a worker builds its own
    return runtime.jobs.submit(
        bot_id, body.target, options={k: v for k, v in options.items() if v is not None}
    )


def _submit_uploads(runtime: Runtime, uploads: list[Any], bot_id: str) -> Any:
    names = ", ".join(u.filename for u in uploads)
    return runtime.jobs.submit(bot_id, f"upload: {names}", uploads=uploads)


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses={
        202: {"model": JobOut, "description": "The job is still running."},
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
def read_job(
    job_id: str, admin: AdminDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> JSONResponse:
    """Progress and, once finished, the report of an ingest job."""
    job = runtime.jobs.get(admin_bot_id(admin, bot_id, runtime), job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no ingest job with id {job_id!r}")
    return job_response(job)


# --------------------------------------------------------------------------- sources and schedules


class SourceOut(BaseModel):
    id: str
    bot_id: str
    kind: str
    scope: str
    last_synced_at: datetime | None = None
    every_s: int | None = Field(default=None, description="Re-sync interval in seconds; null: no schedule.")
    every: str | None = Field(default=None, description="The same interval, spelled like 6h or 1d12h.")
    next_sync_at: datetime | None = None


class SourceList(BaseModel):
    sources: list[SourceOut]


class ScheduleIn(BaseModel):
    every: str = Field(
        min_length=1,
        max_length=40,
        description="Re-sync interval: 30m, 6h, 1d, 1h30m or seconds (60..1 year).",
    )


_SOURCE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


def _source_out(info: Any) -> SourceOut:
    return SourceOut(
        id=info.id,
        bot_id=info.bot_id,
        kind=info.kind,
        scope=info.scope,
        last_synced_at=info.last_synced_at,
        every_s=info.every_s,
        every=info.every,
        next_sync_at=info.next_sync_at,
    )


def _known_id(source_id: str) -> bool:
    """Whether ``source_id`` could name a row (PostgreSQL refuses NUL, drivers refuse lone surrogates)."""
    if "\x00" in source_id or len(source_id) > 36:
        return False
    try:
        source_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_found(source_id: str) -> ApiError:
    return ApiError(404, "source_not_found", f"no source with id {source_id!r}")


@router.get("", response_model=SourceList, responses=_SOURCE_ERRORS)
def list_sources(
    admin: AdminDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> SourceList:
    """The bot's sources (folders, sites, uploads) with their re-sync schedules."""
    bot = admin_bot_id(admin, bot_id, runtime)
    return SourceList(sources=[_source_out(s) for s in runtime.schedules.sources(bot)])


@router.put("/{source_id}/schedule", response_model=SourceOut, responses=_SOURCE_ERRORS)
def schedule_source(
    source_id: str,
    body: ScheduleIn,
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
) -> SourceOut:
    """Re-sync the source every interval, the first time one interval from now. A due re-sync runs
    once, whichever worker sees it first."""
    from ragbot.jobs.schedules import NotSchedulableError, parse_every

    bot = admin_bot_id(admin, bot_id, runtime)
    try:
        every_s = parse_every(body.every)
    except ValueError as exc:
        raise ApiError(422, "invalid_interval", str(exc)) from None
    if not _known_id(source_id):
        raise _not_found(source_id)
    try:
        info = runtime.schedules.schedule(bot, source_id, every_s)
    except NotSchedulableError as exc:
        raise ApiError(422, "not_schedulable", str(exc)) from None
    if info is None:
        raise _not_found(source_id)
    return _source_out(info)


@router.delete("/{source_id}/schedule", response_model=SourceOut, responses=_SOURCE_ERRORS)
def unschedule_source(
    source_id: str, admin: AdminDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> SourceOut:
    """Stop re-syncing the source on a schedule (a re-sync already queued still runs)."""
    bot = admin_bot_id(admin, bot_id, runtime)
    info = runtime.schedules.unschedule(bot, source_id) if _known_id(source_id) else None
    if info is None:
        raise _not_found(source_id)
    return _source_out(info)
