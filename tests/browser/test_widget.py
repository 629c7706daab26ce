"""The embeddable widget in a real browser against a real ragbot: no mocks anywhere.

One ragbot (uvicorn on loopback, SQLite, Qdrant Edge, the packaged encoders, an llm-katan echo LLM) serves
``/widget.js``; host pages live on a second loopback port (the bot's allowed origin) and a third one (not
allowed). The bot's knowledge is crawled from the host site: a PDF whose second page holds the answer, and
a hostile page whose title and text carry script payloads. The echo LLM answers with the visitor's message,
so a message ending in ``[1]`` is an answer citing the top retrieved passage, and a message carrying
markup is an answer carrying markup.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.documents import make_pdf
from fixtures.live import LiveServer, free_port
from integration.katan import KatanServer

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

WIDGET = "document.querySelector('#ragbot-widget')"
PDF_QUESTION = "Which bureau certifies the bronze gyroscopes in the workshop? [1]"
HOSTILE_TITLE = '<img src=x onerror="window.__xss=3"> Zircon lantern care'
XSS_MESSAGE = (
    'How often are zircon lanterns polished with walnut oil? <img src=x onerror="window.__xss=1"> '
    "[click](javascript:window.__xss=2) <script>window.__xss=4</script> [1]"
)

# A hostile host page: its CSS must not reach inside the widget (nor hide it).
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  * {{ color: rgb(204, 0, 0) !important; font-family: serif !important; }}
  button, textarea, div, ol, a {{ display: none !important; }}
  #next {{ display: inline !important; }}
</style></head>
<body><h1>{title}</h1><p><a id="next" href="{next}">Next page</a></p>
<script src="{base}/widget.js" data-bot="{pk}" async></script>
</body></html>
"""


@dataclass
class Stack:
    base: str  # ragbot
    host: str  # the bot's allowed origin
    stranger: str  # the same pages from an origin the bot does not allow
    bot: dict[str, Any]
    runtime: Any


def _write_docs(site: Path) -> None:
    docs = site / "docs"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text(
        "<!doctype html><html><head><title>Workshop docs</title></head><body><h1>Workshop docs</h1>"
        '<p>Our handbook and care guides.</p><a href="handbook.pdf">Handbook</a> '
        '<a href="lanterns.html">Lanterns</a></body></html>',
        encoding="utf-8",
    )
    (docs / "handbook.pdf").write_bytes(
        make_pdf(
            [
                "Workshop handbook. Opening hours are nine to five on weekdays; "
                "the front desk signs visitors in.",
                "Bronze gyroscopes. Every bronze gyroscope in the workshop is certified by the Tallinn "
                "metrology bureau after calibration, and the certificate is kept with the instrument.",
                "Shipping. Parcels leave on Thursdays by courier; fragile items are packed in double boxes.",
            ],
            title="Workshop handbook",
        )
    )
    payload = html.escape('<script>window.__xss=5</script> <img src=x onerror="window.__xss=6">')
    (docs / "lanterns.html").write_text(
        f"<!doctype html><html><head><title>{html.escape(HOSTILE_TITLE)}</title></head><body>"
        f"<h1>{html.escape(HOSTILE_TITLE)}</h1><p>Zircon lanterns are polished with walnut oil every "
        f"fortnight {payload} so the glass never clouds. Polishing zircon lanterns more often than that "
        'scratches them. <a href="javascript:window.__xss=7">Details</a></p></body></html>',
        encoding="utf-8",
    )


def _host_pages(site: Path, base: str, pk: str, limited_pk: str) -> None:
    pages = {
        "index.html": ("Host home", "other.html", pk),
        "other.html": ("Host other page", "index.html", pk),
        "limited.html": ("Limited bot", "index.html", limited_pk),
    }
    for name, (title, nxt, key) in pages.items():
        (site / name).write_text(HOST_PAGE.format(title=title, next=nxt, base=base, pk=key), encoding="utf-8")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
    serve_dir: Callable[..., str],
) -> Iterator[Stack]:
    from ragbot.config import Settings
    from ragbot.index.edge import EdgeIndex
    from ragbot.runtime import Runtime
    from ragbot.services.ingest import connector_for
    from ragbot.tenancy.bots import BotChanges

    data = tmp_path_factory.mktemp("widget")
    site = data / "site"
    _write_docs(site)
    host = serve_dir(site, free_port())
    stranger = serve_dir(site)
    katan = KatanServer("--chunk-delay-ms", "15", log_dir=data).start()  # slow enough to see tokens arrive
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'ragbot.db'}",
        llm_model="openai/katan-echo",
        llm_api_base=katan.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        min_relevance=None,
        grounding="off",  # the stand-in model's text is shown as written
        rate_sessions_per_ip_minute=1000,  # every page view renews the session
        rate_ip_per_minute=1000,
    )
    runtime = Runtime(
        settings,
        index=EdgeIndex(data / "edge", "ragbot"),
        sparse_encoder=real_sparse_encoder,
        dense_encoder=real_dense_encoder,
    )
    try:
        bot = runtime.bots.create(
            "Docs bot",
            BotChanges(
                allowed_origins=[host],
                welcome_message="Hi! Ask me about the **workshop**.",
                starter_questions=["When does the workshop open?"],
                accent_color="#0f766e",
            ),
            actor="tests",
        )
        limited = runtime.bots.create(
            "Limited bot", BotChanges(allowed_origins=[host], rate_visitor_per_minute=2), actor="tests"
        )
        report = runtime.ingest_service.ingest(
            bot["id"], connector_for(f"{host}/docs/index.html", settings, allow_private=True)
        )
        assert report.added == 3, report
        with LiveServer(runtime) as base:
            _host_pages(site, base, bot["public_key"], limited["public_key"])
            yield Stack(base=base, host=host, stranger=stranger, bot=bot, runtime=runtime)
    finally:
        runtime.close()
        katan.stop()


# ------------------------------------------------------------------------------------------ helpers


def js(driver: Any, body: str, *args: Any) -> Any:
    """Run ``body`` with ``root`` bound to the widget's shadow root (null before the widget mounts)."""
    return driver.execute_script(
        f"const host = {WIDGET}; const root = host && host.shadowRoot; {body}", *args
    )


def find(driver: Any, testid: str) -> Any:
    return js(driver, "return root && root.querySelector(`[data-testid=${arguments[0]}]`);", testid)


def find_all(driver: Any, testid: str) -> list[Any]:
    return js(
        driver, "return root ? [...root.querySelectorAll(`[data-testid=${arguments[0]}]`)] : [];", testid
    )


def wait_for(driver: Any, condition: Callable[[], Any], timeout: float = 45, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = [entry["message"] for entry in driver.get_log("browser")]
            raise AssertionError(f"timed out waiting for {what}; browser console: {logs}")
        time.sleep(0.1)


def visit(driver: Any, url: str, *, fresh: bool = False) -> None:
    """Load ``url`` and wait for the widget; ``fresh``: forget this origin's stored widget state first."""
    if fresh:  # leave the page first, so no widget still running there writes its state back
        driver.get("about:blank")
        origin = "/".join(url.split("/")[:3])
        driver.execute_cdp_cmd(
            "Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "local_storage"}
        )
    driver.get(url)
    wait_for(driver, lambda: find(driver, "panel"), what="the widget to mount")


def is_open(driver: Any) -> bool:
    return bool(js(driver, "return !root.querySelector('[data-testid=panel]').hidden;"))


def open_panel(driver: Any) -> None:
    if not is_open(driver):
        find(driver, "launcher").click()
    wait_for(driver, lambda: is_open(driver), what="the panel to open")


def idle(driver: Any) -> bool:
    """No answer streaming: the send button is enabled and the message list is not busy."""
    return bool(
        js(
            driver,
            "return !root.querySelector('[data-testid=send]').disabled && "
            "root.querySelector('[data-testid=messages]').getAttribute('aria-busy') !== 'true';",
        )
    )


def ask(driver: Any, text: str) -> None:
    """Type ``text`` in the widget, press Enter, and wait until the turn is over (answer or error)."""
    from selenium.webdriver.common.keys import Keys

    wait_for(driver, lambda: idle(driver), what="the widget to be idle")
    before = len(find_all(driver, "message-visitor"))
    box = find(driver, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait_for(driver, lambda: len(find_all(driver, "message-visitor")) > before, what="the visitor message")
    wait_for(driver, lambda: idle(driver), timeout=90, what="the answer to finish")


def bot_texts(driver: Any) -> list[str]:
    return js(
        driver,
        "return [...root.querySelectorAll('[data-testid=message-bot] .body')].map(e => e.textContent);",
    )


def citations(driver: Any) -> list[dict[str, Any]]:
    return js(
        driver,
        "return [...root.querySelectorAll('[data-testid=citation]')]"
        ".map(e => ({tag: e.tagName.toLowerCase(), href: e.getAttribute('href'), text: e.textContent,"
        " rel: e.getAttribute('rel'), target: e.getAttribute('target')}));",
    )


def screenshot(driver: Any, artifacts_dir: Path, name: str) -> Path:
    path = artifacts_dir / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


# ------------------------------------------------------------------------------------------ tests


def test_answer_streams_with_a_citation_to_the_pdf_page(
    driver: Any, stack: Stack, artifacts_dir: Path
) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/index.html", fresh=True)
    launcher = find(driver, "launcher")
    assert launcher.is_displayed()  # the host page hides every button and div: not this one
    assert launcher.get_attribute("aria-expanded") == "false"
    open_panel(driver)
    panel = find(driver, "panel")
    assert panel.get_attribute("role") == "dialog"
    wait_for(driver, lambda: panel.get_attribute("aria-label") == "Docs bot", what="the bot's title")
    assert find(driver, "welcome").text == "Hi! Ask me about the workshop."
    assert [s.text for s in find_all(driver, "starter")] == ["When does the workshop open?"]
    styles = js(
        driver,
        "const s = getComputedStyle(root.querySelector('[data-testid=input]'));"
        "const send = getComputedStyle(root.querySelector('[data-testid=send]'));"
        "return [s.color, s.fontFamily, send.backgroundColor];",
    )
    assert styles[0] != "rgb(204, 0, 0)" and styles[1].strip() != "serif"  # host CSS did not leak in
    assert styles[2] == "rgb(15, 118, 110)"  # the bot's accent colour

    # Record the answer's length at every DOM change: tokens arrive one after another.
    js(
        driver,
        "window.__seen = []; new MutationObserver(() => {"
        " const bodies = root.querySelectorAll('[data-testid=message-bot] .body');"
        " const last = bodies[bodies.length - 1];"
        " if (last) window.__seen.push([last.textContent.length,"
        "  root.querySelector('[data-testid=messages]').getAttribute('aria-busy')]);"
        "}).observe(root.querySelector('[data-testid=messages]'),"
        " {subtree: true, childList: true, characterData: true});",
    )
    ask(driver, PDF_QUESTION)

    answers = bot_texts(driver)
    assert len(answers) == 1 and "Tallinn" not in answers[0]  # the echo LLM repeats the question
    assert "Which bureau certifies the bronze gyroscopes" in answers[0]
    seen = driver.execute_script("return window.__seen")
    partial = {length for length, busy in seen if 0 < length < len(answers[0]) and busy == "true"}
    assert len(partial) >= 3, f"the answer did not stream: {seen}"
    assert (
        js(driver, "return root.querySelector('[data-testid=messages]').getAttribute('aria-live');")
        == "polite"
    )

    cites = citations(driver)
    assert cites, "no citation rendered"
    first = cites[0]
    assert first["tag"] == "a"
    assert first["href"] == f"{stack.host}/docs/handbook.pdf#page=2"
    assert first["rel"] == "noopener noreferrer nofollow" and first["target"] == "_blank"
    # The [1] marker in the answer links to the same place.
    marker = js(
        driver, "const a = root.querySelector('[data-testid=message-bot] sup a'); return a && a.href;"
    )
    assert marker == f"{stack.host}/docs/handbook.pdf#page=2"
    assert not find(driver, "error").is_displayed()
    screenshot(driver, artifacts_dir, "widget-desktop.png")


def test_conversation_survives_reload_and_navigation(driver: Any, stack: Stack) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/index.html", fresh=True)
    open_panel(driver)
    ask(driver, PDF_QUESTION)
    expected = bot_texts(driver)
    expected_cites = citations(driver)
    assert len(expected) == 1 and expected_cites

    def same_conversation() -> bool:
        return (
            [m.text for m in find_all(driver, "message-visitor")] == [PDF_QUESTION]
            and bot_texts(driver) == expected
            and citations(driver) == expected_cites
        )

    driver.refresh()
    wait_for(driver, lambda: find(driver, "panel"), what="the widget after a reload")
    wait_for(driver, same_conversation, what="the conversation after a reload")
    assert is_open(driver)  # it was open before the reload

    driver.find_element("id", "next").click()  # another page of the same site
    wait_for(driver, lambda: driver.current_url.endswith("/other.html"), what="navigation")
    wait_for(driver, lambda: find(driver, "panel"), what="the widget on the next page")
    wait_for(driver, same_conversation, what="the conversation on the next page")
    assert is_open(driver)

    # A follow-up continues the same conversation (the server knows it: the history now has 2 turns).
    ask(driver, "And who keeps the certificate? [1]")
    driver.refresh()
    wait_for(driver, lambda: len(find_all(driver, "message-visitor")) == 2, what="both turns after a reload")
    assert len(bot_texts(driver)) == 2

    # Closed stays closed across pages.
    find(driver, "launcher").click()
    driver.refresh()
    wait_for(driver, lambda: find(driver, "panel"), what="the widget after a reload")
    time.sleep(0.5)
    assert not is_open(driver)


def test_disallowed_origin_gets_no_answer(driver: Any, stack: Stack) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.stranger}/index.html", fresh=True)
    open_panel(driver)
    error = wait_for(
        driver,
        lambda: (e := find(driver, "error")) is not None and e.is_displayed() and e,
        what="the error banner",
    )
    assert error.text == "This chat isn't available on this site."
    box = find(driver, "input")
    box.send_keys("Which bureau certifies the bronze gyroscopes? [1]")
    find(driver, "send").click()
    wait_for(driver, lambda: idle(driver), what="the refused turn")
    assert find(driver, "error").text == "This chat isn't available on this site."
    assert find_all(driver, "message-bot") == []
    assert find_all(driver, "retry") == []


def test_markup_in_answers_and_sources_stays_text(driver: Any, stack: Stack) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/index.html", fresh=True)
    open_panel(driver)
    ask(driver, XSS_MESSAGE)

    def assert_inert() -> None:
        assert driver.execute_script("return window.__xss") is None
        counts = js(
            driver,
            "return ['img', 'script', 'iframe', 'object', 'embed', 'svg image', '[onerror]', '[onclick]']"
            ".map(s => root.querySelectorAll(s).length);",
        )
        assert counts == [0] * 8, counts
        hrefs = js(driver, "return [...root.querySelectorAll('a')].map(a => a.protocol);")
        assert set(hrefs) <= {"http:", "https:"}, hrefs
        answer = bot_texts(driver)[-1]
        assert '<img src=x onerror="window.__xss=1">' in answer  # shown as text
        assert "<script>window.__xss=4</script>" in answer
        assert "click" in answer and "javascript:" not in answer  # the unsafe link is plain text
        cites = citations(driver)
        assert cites and cites[0]["text"].startswith(HOSTILE_TITLE), cites
        assert cites[0]["href"] == f"{stack.host}/docs/lanterns.html"
        snippet = js(driver, "return root.querySelector('[data-testid=citation]').title;")
        assert "Zircon lanterns" in snippet

    assert_inert()
    driver.refresh()  # the stored conversation renders through the same path: still inert
    wait_for(
        driver, lambda: len(bot_texts(driver)) == 1 and citations(driver), what="the restored conversation"
    )
    assert_inert()


def test_phone_width_panel_fills_the_screen(driver: Any, stack: Stack, artifacts_dir: Path) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        visit(driver, f"{stack.host}/index.html", fresh=True)
        open_panel(driver)
        ask(driver, PDF_QUESTION)
        box = js(
            driver,
            "const r = root.querySelector('[data-testid=panel]').getBoundingClientRect();"
            "return [r.left, r.top, r.width, r.height, innerWidth, innerHeight];",
        )
        assert box == [0, 0, 375, 812, 375, 812], box
        font_size = js(driver, "return getComputedStyle(root.querySelector('[data-testid=input]')).fontSize;")
        assert float(font_size.removesuffix("px")) >= 16
        assert find(driver, "input").is_displayed() and find(driver, "send").is_displayed()
        screenshot(driver, artifacts_dir, "widget-375px.png")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_keyboard_open_type_and_escape(driver: Any, stack: Stack) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/index.html", fresh=True)
    assert not is_open(driver)
    launcher = find(driver, "launcher")
    assert launcher.tag_name == "button" and launcher.get_attribute("aria-label")
    js(driver, "root.querySelector('[data-testid=launcher]').focus();")
    ActionChains(driver).send_keys(Keys.ENTER).perform()  # a keyboard user opens it
    wait_for(driver, lambda: is_open(driver), what="the panel to open")
    assert launcher.get_attribute("aria-expanded") == "true"
    assert js(driver, "return root.activeElement && root.activeElement.dataset.testid;") == "input"

    ActionChains(driver).send_keys("first line").key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(
        Keys.SHIFT
    ).send_keys("second line").perform()
    assert find(driver, "input").get_attribute("value") == "first line\nsecond line"  # Shift+Enter: newline
    assert find_all(driver, "message-visitor") == []

    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    wait_for(driver, lambda: not is_open(driver), what="Escape to close the panel")
    assert launcher.get_attribute("aria-expanded") == "false"
    assert js(driver, "return root.activeElement && root.activeElement.dataset.testid;") == "launcher"


def test_rate_limited_visitor_is_told_when_to_retry(driver: Any, stack: Stack) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/limited.html", fresh=True)
    open_panel(driver)
    ask(driver, "When does the workshop open?")
    ask(driver, "When do parcels leave?")
    assert not find(driver, "error").is_displayed()
    ask(driver, "Is the desk open on weekdays?")  # the limited bot allows 2 messages a minute
    error = find(driver, "error")
    assert error.is_displayed()
    message = error.text.splitlines()[0]
    prefix = "You're sending messages too quickly. Try again in "
    assert message.startswith(prefix) and message.endswith(" seconds."), message
    assert 1 <= int(message.removeprefix(prefix).split()[0]) <= 60
    assert len(bot_texts(driver)) == 2


def test_demo_and_embed_pages_show_the_widget(driver: Any, stack: Stack) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.base}/demo", fresh=True)  # ragbot's own page, for the deployment's default bot
    open_panel(driver)
    time.sleep(0.5)
    assert not find(driver, "error").is_displayed()

    visit(driver, f"{stack.base}/widget/embed/{stack.bot['public_key']}")
    assert find(driver, "launcher") is None  # inline: no launcher, always open
    assert is_open(driver)
    wait_for(
        driver, lambda: find(driver, "panel").get_attribute("aria-label") == "Docs bot", what="the title"
    )
    box = js(
        driver,
        "const r = root.querySelector('[data-testid=panel]').getBoundingClientRect();"
        "return [r.width, r.height, innerWidth, innerHeight];",
    )
    assert box[0] == box[2] and box[1] == box[3], box
    assert not find(driver, "error").is_displayed()


def test_starter_question_is_sent_on_click(driver: Any, stack: Stack) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/index.html", fresh=True)
    open_panel(driver)
    starter = wait_for(driver, lambda: find(driver, "starter"), what="the starter questions")
    starter.click()
    wait_for(driver, lambda: find_all(driver, "message-visitor"), what="the visitor message")
    wait_for(driver, lambda: idle(driver) and bot_texts(driver), timeout=90, what="the answer")
    assert [m.text for m in find_all(driver, "message-visitor")] == ["When does the workshop open?"]
    assert "When does the workshop open?" in bot_texts(driver)[0]
    assert not starter.is_displayed()  # starters belong to an empty conversation


def test_a_second_copy_of_the_script_is_ignored(driver: Any, stack: Stack) -> None:
    visit(driver, f"{stack.host}/index.html", fresh=True)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const s = document.createElement('script');"
        "s.src = arguments[0] + '/widget.js'; s.dataset.bot = arguments[1];"
        "s.onload = () => done(); s.onerror = () => done(); document.body.appendChild(s);",
        stack.base,
        stack.bot["public_key"],
    )
    assert driver.execute_script("return document.querySelectorAll('#ragbot-widget').length") == 1
    assert driver.execute_script("return Object.keys(window.RagbotWidget).sort()") == ["close", "open"]
    driver.execute_script("window.RagbotWidget.open()")
    wait_for(driver, lambda: is_open(driver), what="RagbotWidget.open()")
    driver.execute_script("window.RagbotWidget.close()")
    wait_for(driver, lambda: not is_open(driver), what="RagbotWidget.close()")
