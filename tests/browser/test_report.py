"""The analytics report in a real browser: ``ragbot report`` (the command, in its own process) renders the
content-gap traffic of ``tests/integration/test_content_gaps.py`` to one HTML file, which headless
Chromium opens from disk with charts and tables and without loading anything; and the agent inbox's
Analytics button opens the same report from the API under the inbox's strict CSP, with conversation links
that lead back into the inbox. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.live import LiveServer
from integration.katan import KatanServer
from integration.test_content_gaps import AGENT_REPLIES, Traffic, make_traffic

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

INBOX_BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def traffic(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Traffic]:
    data = tmp_path_factory.mktemp("report")
    with KatanServer(log_dir=data) as katan:
        made = make_traffic(data, real_sparse_encoder, real_dense_encoder, katan)
        try:
            yield made
        finally:
            made.runtime.close()


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def full_page_screenshot(driver: Any, path: Path) -> Path:
    """The whole page, not just the viewport."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": min(height, 12000), "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"\nscreenshot: {path}")
    return path


def run_report_command(traffic: Traffic, out: Path) -> str:
    """``ragbot report`` as an operator runs it: its own process, settings from the environment."""
    settings = traffic.runtime.settings
    env = {
        **os.environ,
        "RAGBOT_DATA_DIR": str(settings.data_dir),
        "RAGBOT_DATABASE_URL": settings.resolved_database_url,
    }
    command = [
        sys.executable,
        "-c",
        "from ragbot.cli import main; main()",
        "report",
        "--bot",
        traffic.bot_id,
        "--since",
        "1h",
        "--base-url",
        INBOX_BASE,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text(encoding="utf-8")


def page_facts(driver: Any) -> dict[str, Any]:
    return dict(
        driver.execute_script(
            """
            const rows = (id) => document.querySelectorAll(`[data-testid=${id}] tbody tr`).length;
            const failed = document.querySelector('svg path[fill="#b2182b"]');
            return {
              svgs: document.querySelectorAll('figure svg').length,
              top: rows('top-questions-table'),
              gaps: rows('content-gaps-table'),
              sources: rows('sources-table'),
              replies: [...document.querySelectorAll('[data-testid=agent-reply]')].map(e => e.textContent),
              links: [...document.querySelectorAll('a[data-testid=conversation-link]')].map(a => a.href),
              loaded: performance.getEntriesByType('resource').map(e => e.name),
              failedFill: failed ? getComputedStyle(failed).fill : null,
              styled: getComputedStyle(document.querySelector('.figures')).display === 'grid',
            };
            """
        )
    )


def test_report_command_renders_a_self_contained_file(
    driver: Any, traffic: Traffic, artifacts_dir: Path
) -> None:
    out = artifacts_dir / "report.html"
    html = run_report_command(traffic, out)
    assert "<script" not in html.lower()
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls and all(u.startswith(f"{INBOX_BASE}/agent#conversation=") for u in urls), urls
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|https?://127\.0\.0\.1:8000/agent#)""", html)

    driver.get(out.as_uri())
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", what="the page")
    facts = page_facts(driver)
    assert facts["svgs"] >= 3, facts
    assert facts["top"] >= 5 and facts["gaps"] >= 2 and facts["sources"] >= 5, facts
    assert facts["loaded"] == [], facts["loaded"]  # nothing fetched: no fonts, images, styles, scripts
    assert facts["failedFill"] == "rgb(178, 24, 43)" and facts["styled"], facts
    assert set(facts["replies"]) <= set(AGENT_REPLIES.values()) and facts["replies"], facts["replies"]
    full_page_screenshot(driver, artifacts_dir / "report.png")


def test_inbox_opens_the_report_and_its_links_lead_back(
    driver: Any, traffic: Traffic, artifacts_dir: Path
) -> None:
    runtime = traffic.runtime
    key, _ = runtime.api_keys.create(name="Alice", bot_id=traffic.bot_id)
    with LiveServer(runtime) as base:
        try:
            driver.get(f"{base}/agent")
            driver.find_element("css selector", "[data-testid=agent-key]").send_keys(key)
            driver.find_element("css selector", "[data-testid=agent-login]").click()
            button = wait_for(
                lambda: (
                    (b := driver.find_element("css selector", "[data-testid=analytics]")).is_displayed() and b
                ),
                what="the Analytics button",
            )
            inbox = driver.current_window_handle
            button.click()
            wait_for(lambda: len(driver.window_handles) == 2, what="the report tab")
            driver.switch_to.window(next(h for h in driver.window_handles if h != inbox))
            wait_for(
                lambda: (
                    driver.current_url.startswith("blob:")
                    and driver.execute_script("return document.querySelectorAll('figure svg').length") >= 3
                ),
                what="the report in the new tab",
            )
            facts = page_facts(driver)
            assert facts["gaps"] >= 2 and facts["top"] >= 5, facts
            # The blob page inherits the inbox's CSP (no inline styles): the charts keep their colours,
            # which are presentation attributes, and the page its layout from the linked stylesheet.
            assert facts["failedFill"] == "rgb(178, 24, 43)", facts
            assert facts["styled"], facts
            assert facts["loaded"] == [f"{base}/v1/analytics/report.css"], facts["loaded"]
            assert facts["links"] and all(u.startswith(f"{base}/agent#conversation=") for u in facts["links"])
            full_page_screenshot(driver, artifacts_dir / "report-inbox.png")

            # a conversation link opens that conversation in the inbox (the tab kept the agent's key)
            target = facts["links"][0].split("#conversation=", 1)[1]
            driver.execute_script("document.querySelector('a[data-testid=conversation-link]').click()")
            wait_for(lambda: driver.current_url.startswith(f"{base}/agent"), what="the inbox")
            wait_for(
                lambda: driver.execute_script(
                    "return !document.getElementById('conv').hidden && "
                    "document.querySelectorAll('[data-testid=agent-message]').length >= 2"
                ),
                what="the linked conversation",
            )
            detail = runtime.handoff.detail(traffic.bot_id, target)
            title = driver.execute_script("return document.getElementById('conv-title').textContent")
            assert detail is not None and title == (detail["title"] or "(untitled)")
        finally:
            for handle in driver.window_handles[1:]:
                driver.switch_to.window(handle)
                driver.close()
            driver.switch_to.window(driver.window_handles[0])
            driver.get("about:blank")
