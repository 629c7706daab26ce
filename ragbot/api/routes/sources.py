"""Ingest through the API: a server path or URL (JSON) or uploaded files (multipart), run as background
jobs so a big crawl never blocks the server; clients poll ``GET /v1/sources/jobs/{id}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ErrorOut, JobOut, SourceRequest
from ragbot.config import Settings
from ragbot.runtime import Runtime

router = APIRouter(prefix="/v1/sources", tags=["sources"])

_MULTIPART_OVERHEAD = 64 * 1024

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


def _job_response(job: Any, finished_code: int = 200) -> JSONResponse:
    body = JobOut.model_validate(job, from_attributes=True).model_dump(mode="json")
    return JSONResponse(status_code=finished_code if job.finished else 202, content=body)


def _check_server_path(target: str, settings: Settings) -> None:
    """A path named through the API must lie inside an allowed root: the API is no file-read oracle."""
    resolved = Path(target).expanduser().resolve()
    roots = [r.expanduser().resolve() for r in settings.api_path_roots]
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise ApiError(403, "path_not_allowed", f"{target!r} is outside the folders this server may ingest")
    if not resolved.exists():
        raise ApiError(404, "path_not_found", f"{target!r} does not exist on the server")


async def _uploads(request: Request, settings: Settings) -> tuple[list[Any], str | None]:
    from connectors.files import Upload

    limit = settings.max_upload_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + _MULTIPART_OVERHEAD:
        raise ApiError(413, "upload_too_large", f"the upload has {declared} bytes; the limit is {limit}")
    form = await request.form()
    files = [v for v in form.getlist("file") if isinstance(v, UploadFile)]
    if not files:
        raise ApiError(422, "invalid_request", "multipart body needs at least one 'file' part")
    uploads = []
    for f in files:
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise ApiError(
                413, "upload_too_large", f"{f.filename!r} is larger than the limit of {limit} bytes"
            )
        uploads.append(Upload(filename=f.filename or "upload", data=data, content_type=f.content_type))
    bot = form.get("bot_id")
    return uploads, bot if isinstance(bot, str) and bot else None


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra=_OPENAPI_BODY,
    responses={
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        413: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
async def create_source(
    request: Request,
    runtime: RuntimeDep,
    wait: float = Query(default=0.0, ge=0, le=600, description="Seconds to wait for the job to finish."),
) -> JSONResponse:
    """Start ingesting a path or URL (JSON body) or uploaded files (multipart); returns the job."""
    settings = runtime.settings
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        uploads, bot = await _uploads(request, settings)
        job = await run_in_threadpool(_submit_uploads, runtime, uploads, bot or settings.bot_id)
    else:
        try:
            body = SourceRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ApiError(422, "invalid_request", f"{where}: {first.get('msg')}") from None
        job = await run_in_threadpool(_submit_target, runtime, body)
    if wait > 0:
        job = await run_in_threadpool(runtime.jobs.wait, job.bot_id, job.id, wait) or job
    return _job_response(job)


def _submit_target(runtime: Runtime, body: SourceRequest) -> Any:
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
    return runtime.jobs.submit(body.bot_id or settings.bot_id, body.target, connector)


def _submit_uploads(runtime: Runtime, uploads: list[Any], bot_id: str) -> Any:
    from connectors.files import UploadConnector

    connector = UploadConnector(uploads, max_bytes=runtime.settings.max_upload_bytes)
    names = ", ".join(u.filename for u in uploads)
    return runtime.jobs.submit(bot_id, f"upload: {names}", connector, kind="upload")


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})
def read_job(job_id: str, runtime: RuntimeDep, bot_id: str | None = Query(default=None)) -> JSONResponse:
    """Progress and, once finished, the report of an ingest job."""
    job = runtime.jobs.get(bot_id or runtime.settings.bot_id, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no ingest job with id {job_id!r}")
    return _job_response(job)
