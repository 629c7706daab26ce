"""Serves the agent inbox page. It holds no data itself: it signs in with an admin key the agent pastes
(kept in the tab's sessionStorage) and calls the agent API like any other client."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@lru_cache(maxsize=4)
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@router.get("/agent")
def agent_page() -> HTMLResponse:
    return HTMLResponse(
        _read("agent.html"),
        headers={**_HEADERS, "Content-Security-Policy": _CSP, "Cache-Control": "no-store"},
    )


@router.get("/agent/agent.js")
def agent_script() -> Response:
    return Response(_read("agent.js"), media_type="application/javascript; charset=utf-8", headers=_HEADERS)


@router.get("/agent/agent.css")
def agent_styles() -> Response:
    return Response(_read("agent.css"), media_type="text/css; charset=utf-8", headers=_HEADERS)
