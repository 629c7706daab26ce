"""Browser fixtures: a headless Debian Chromium driven by selenium, and static host pages on loopback.

Chromium and chromedriver come from the system (``/usr/bin``); selenium-manager is never asked to find or
download a browser. Without Chromium the browser tests skip, or fail under CI (``CI`` set) so a missing
browser is never silent. Host pages are served by ``http.server`` on 127.0.0.1 with a port of their own,
so the page's origin differs from ragbot's, as it does on a real customer site.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fixtures.browser import CHROMEDRIVER, CHROMIUM, chrome, serve_static

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        reason = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        import selenium  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("browser tests need selenium (pip install 'selenium>=4.20')")
        pytest.skip("browser tests need selenium (pip install 'selenium>=4.20')")


def _browser() -> Iterator[Any]:
    _require_browser()
    user_data_dir = tempfile.mkdtemp(prefix="ragbot-chrome-")
    drv = chrome(user_data_dir)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(user_data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """One headless Chromium per test module, with a fresh profile (no stored widget state)."""
    yield from _browser()


@pytest.fixture(scope="module")
def agent_driver() -> Iterator[Any]:
    """A second, separate Chromium (its own profile): the agent's, beside the visitor's ``driver``."""
    yield from _browser()


@pytest.fixture(scope="module")
def serve_dir() -> Iterator[Callable[[Path], str]]:
    """``serve_dir(directory, port=0) -> "http://127.0.0.1:PORT"``: a static host site on a loopback port
    of its own (``port=0``: any free one; give one when it must match an allowed origin)."""
    servers: list[ThreadingHTTPServer] = []

    def serve(directory: Path, port: int = 0) -> str:
        server = serve_static(directory, port)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go (``tests/artifacts/``, not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
