"""``create_app()``: the FastAPI factory. Settings and engines are built in the lifespan, not at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ragbot import __version__
from ragbot.api.errors import error_response, install_error_handlers
from ragbot.api.limits import BodySizeLimitMiddleware
from ragbot.api.routes import (
    agent,
    analytics,
    bots,
    chat,
    conversations,
    feedback,
    handoff,
    health,
    keys,
    leads,
    metrics,
    privacy,
    report,
    search,
    sources,
    webhooks,
)
from ragbot.api.shutdown import drain_on_signals
from ragbot.config import Settings, get_settings
from ragbot.handoff.inbox import routes as inbox_routes
from ragbot.observability.gc_pauses import freeze_startup_heap, watch_pauses
from ragbot.observability.middleware import ObservabilityMiddleware
from ragbot.runtime import Runtime
from ragbot.widget import routes as widget_routes
from ragbot.widget.cors import WidgetCorsMiddleware

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, warmup: bool = True
) -> FastAPI:
    """Build the app. Tests pass a prepared ``runtime``; ``warmup`` loads models before the first request."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from ragbot.quiet import quiet_third_party

        quiet_third_party()
        rt = runtime or Runtime(settings or get_settings())
        app.state.runtime = rt
        restore_signals = drain_on_signals(rt)  # SIGTERM: streams in flight get a grace period
        if warmup:
            _ = rt.engine, rt.index, rt.retriever
            warm_up = getattr(rt.llm, "warm_up", None)
            if callable(warm_up):
                warm_up()
            watch_pauses()
            if rt.settings.gc_freeze:
                freeze_startup_heap()  # the models stay loaded for the process's life: no need to walk them
            rt.background.start()  # jobs, webhook deliveries, handoff timers; `ragbot worker` runs more
        try:
            yield
        finally:
            restore_signals()
            if warmup:
                rt.background.stop()
            if runtime is None:
                rt.close()
            from ragbot.observability.metrics import process_exiting

            process_exiting()

    app = FastAPI(
        title="ragbot",
        version=__version__,
        description="Grounded chat over your own content: SPLADE + dense hybrid retrieval, cited answers.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(WidgetCorsMiddleware)
    app.add_middleware(ObservabilityMiddleware)  # outermost: the request id reaches every layer below

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(first.get("loc", ()))
        if loc == ("body",) and first.get("type") == "model_attributes_type" and not _is_json(request):
            # the body was never parsed as JSON: say why instead of "input should be a valid dictionary"
            given = request.headers.get("content-type")
            got = f"Content-Type was {given}" if given else "no Content-Type header"
            message = f"send the body as JSON with Content-Type application/json ({got})"
            return error_response(415, "unsupported_media_type", message)
        if first.get("type") == "json_invalid":
            at = f" at character {loc[-1]}" if len(loc) > 1 else ""
            reason = (first.get("ctx") or {}).get("error", first.get("msg"))
            return error_response(422, "invalid_request", f"the body is not valid JSON{at}: {reason}")
        where = ".".join(str(p) for p in loc if p != "body")
        message = str(first.get("msg", "invalid input"))
        return error_response(422, "invalid_request", f"{where}: {message}" if where else message)

    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(search.router)
    app.include_router(conversations.router)
    app.include_router(sources.router)
    app.include_router(bots.router)
    app.include_router(keys.router)
    app.include_router(webhooks.router)
    app.include_router(handoff.router)
    app.include_router(agent.router)
    app.include_router(leads.router)
    app.include_router(feedback.router)
    app.include_router(privacy.router)
    app.include_router(analytics.router)
    app.include_router(report.router)
    app.include_router(widget_routes.router)
    app.include_router(inbox_routes.router)
    app.include_router(metrics.router)
    return app


def serve_app() -> FastAPI:
    """The factory ``ragbot serve`` hands uvicorn: logging set up from settings, in each worker process
    (uvicorn's workers are fresh processes that only import this), then the app."""
    from ragbot.observability.logging import configure_logging

    settings = get_settings()
    configure_logging("text" if settings.log_format == "text" else "json", settings.log_level)
    return create_app(settings)


def _operation_id(route: APIRoute) -> str:
    """Stable, readable operation ids for generated clients: ``chat``, ``read_conversation``..."""
    return route.name


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
