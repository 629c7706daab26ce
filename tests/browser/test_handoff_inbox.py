"""A visitor reaches a person: the widget on a customer's page and the agent inbox, two real browsers against
one real ragbot (uvicorn on loopback, SQLite, Qdrant Edge, the packaged encoders, an llm-katan echo LLM).

The visitor asks, gets a cited answer and clicks "Talk to a human"; the agent (an admin key scoped to the
bot and named "Alice") finds the conversation in the inbox, reads the answer with its citation, claims it
and replies; the reply reaches the widget over the conversation's event stream without a reload, an
internal note never does, the visitor's next message reaches the agent's open view live, and the agent
resolves. Thumbs on an answer leave one changeable rating; a bot with a lead form asked ``on_handoff``
shows it after the handoff click, explains a wrong field next to it and stores a good submission with the
page's UTM parameters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.live import LiveServer, free_port
from integration.katan import KatanServer

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
WIDGET = "document.querySelector('#ragbot-widget')"
#: The echo LLM answers with the visitor's words; the marker makes it an answer citing passage 1.
QUESTION = "How does hybrid retrieval fuse sparse and dense lists? [1]"
REPLY = "Hi, I'm Alice from support. Happy to walk you through the fusion step."
NOTE = "Internal: returning customer, keep it short."
FOLLOW_UP = "Thanks! Does it also work for PDF files?"
CONSENT = "I agree that Sales may email me about my question."

#: Counts the widget's event streams that are open at once (installed before any page script runs).
COUNT_STREAMS = """
window.__streams = {open: 0, max: 0, total: 0};
const realFetch = window.fetch;
window.fetch = function (url, init) {
  const answer = realFetch.apply(this, arguments);
  if (!String(url).includes("/events")) return answer;
  const s = window.__streams;
  let closed = false;
  const done = () => { if (!closed) { closed = true; s.open -= 1; } };
  s.open += 1; s.total += 1; s.max = Math.max(s.max, s.open);
  if (init && init.signal) init.signal.addEventListener("abort", done);
  return answer.then((res) => {
    if (!res.ok || !res.body) { done(); return res; }
    const getReader = res.body.getReader.bind(res.body);
    res.body.getReader = () => {
      const reader = getReader();
      const read = reader.read.bind(reader);
      reader.read = () => read().then((r) => { if (r.done) done(); return r; }, (e) => { done(); throw e; });
      return reader;
    };
    return res;
  }, (e) => { done(); throw e; });
};
"""

HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>A customer's page.</p>
<script src="{base}/widget.js" data-bot="{pk}" async></script>
</body></html>
"""


@dataclass
class Stack:
    base: str  # ragbot
    host: str  # the customer's site (both bots allow it)
    bot: dict[str, Any]  # handoff, no lead form
    sales: dict[str, Any]  # handoff with a lead form asked on handoff
    newsletter: dict[str, Any]  # a lead form asked before the chat
    runtime: Any

    def admin(self, bot: dict[str, Any], name: str = "tests") -> str:
        key, _ = self.runtime.api_keys.create(name=name, bot_id=bot["id"])
        return str(key)

    def get(self, path: str, key: str, **params: Any) -> Any:
        res = httpx.get(
            f"{self.base}{path}", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        res.raise_for_status()
        return res.json()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
    serve_dir: Callable[..., str],
) -> Iterator[Stack]:
    from connectors.files import FileConnector
    from ragbot.config import Settings
    from ragbot.index.edge import EdgeIndex
    from ragbot.leads.form import LeadField, LeadForm
    from ragbot.runtime import Runtime
    from ragbot.tenancy.bots import BotChanges

    data = tmp_path_factory.mktemp("handoff-inbox")
    site = data / "site"
    site.mkdir()
    host = serve_dir(site, free_port())
    katan = KatanServer(log_dir=data).start()
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'ragbot.db'}",
        llm_model="openai/katan-echo",
        llm_api_base=katan.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        min_relevance=None,
        grounding="off",  # the stand-in model's text is shown as written
        rate_sessions_per_ip_minute=1000,
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
            "Support bot", BotChanges(allowed_origins=[host], welcome_message="Hi!"), actor="tests"
        )
        form = LeadForm(
            fields=[LeadField(name="email", label="Work email"), LeadField(name="name", label="Your name")],
            consent_text=CONSENT,
            consent_version="2025-01",
            ask=["on_handoff"],
            title="Leave your details and Sales will write back",
        )
        sales = runtime.bots.create(
            "Sales bot", BotChanges(allowed_origins=[host], lead_form=form), actor="tests"
        )
        newsletter = runtime.bots.create(
            "Newsletter bot",
            BotChanges(
                allowed_origins=[host],
                lead_form=LeadForm(
                    fields=[LeadField(name="email")], ask=["before_chat"], title="Stay in touch"
                ),
            ),
            actor="tests",
        )
        report = runtime.ingest_service.ingest(
            bot["id"], FileConnector(str(SAMPLE), max_bytes=settings.max_upload_bytes)
        )
        assert report.added > 0, report
        with LiveServer(runtime) as base:
            for name, title, pk in (
                ("index.html", "Support", bot["public_key"]),
                ("sales.html", "Sales", sales["public_key"]),
                ("news.html", "News", newsletter["public_key"]),
            ):
                (site / name).write_text(HOST_PAGE.format(title=title, base=base, pk=pk), encoding="utf-8")
            yield Stack(base=base, host=host, bot=bot, sales=sales, newsletter=newsletter, runtime=runtime)
    finally:
        runtime.close()
        katan.stop()


@pytest.fixture
def leave(driver: Any, agent_driver: Any) -> Iterator[None]:
    """Leave the pages after each test: their live event streams close before the server stops."""
    yield
    for drv in (driver, agent_driver):
        drv.get("about:blank")


# ------------------------------------------------------------------------------------------ helpers


def js(driver: Any, body: str, *args: Any) -> Any:
    """Run ``body`` with ``root`` bound to the widget's shadow root (null before the widget mounts)."""
    return driver.execute_script(
        f"const host = {WIDGET}; const root = host && host.shadowRoot; {body}", *args
    )


def find(driver: Any, testid: str) -> Any:
    return js(driver, "return root && root.querySelector(`[data-testid='${arguments[0]}']`);", testid)


def find_all(driver: Any, testid: str) -> list[Any]:
    return js(
        driver, "return root ? [...root.querySelectorAll(`[data-testid='${arguments[0]}']`)] : [];", testid
    )


def find_texts(driver: Any, testid: str) -> list[dict[str, str]]:
    return [{"text": e.text} for e in find_all(driver, testid)]


def shown(driver: Any, testid: str) -> Any:
    """The widget element, when it is there and displayed."""
    element = find(driver, testid)
    return element if element is not None and element.is_displayed() else None


def wait_for(driver: Any, condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = [entry["message"] for entry in driver.get_log("browser")]
            raise AssertionError(f"timed out waiting for {what}; browser console: {logs}")
        time.sleep(0.1)


def visit(driver: Any, url: str) -> None:
    """Load ``url`` with no stored widget state for its origin, and wait for the widget."""
    driver.get("about:blank")
    origin = "/".join(url.split("/")[:3])
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "local_storage"})
    driver.get(url)
    wait_for(driver, lambda: find(driver, "panel"), what="the widget to mount")
    if js(driver, "return root.querySelector('[data-testid=panel]').hidden;"):
        find(driver, "launcher").click()
    wait_for(driver, lambda: shown(driver, "input"), what="the panel to open")


def idle(driver: Any) -> bool:
    return bool(
        js(
            driver,
            "return !root.querySelector('[data-testid=send]').disabled && "
            "root.querySelector('[data-testid=messages]').getAttribute('aria-busy') !== 'true';",
        )
    )


def ask(driver: Any, text: str) -> None:
    """Type ``text`` in the widget, press Enter, and wait until the turn is over."""
    from selenium.webdriver.common.keys import Keys

    wait_for(driver, lambda: idle(driver), what="the widget to be idle")
    before = len(find_all(driver, "message-visitor"))
    box = find(driver, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait_for(driver, lambda: len(find_all(driver, "message-visitor")) > before, what="the visitor message")
    wait_for(driver, lambda: idle(driver), timeout=90, what="the turn to finish")


def widget_messages(driver: Any) -> list[dict[str, str]]:
    """Every message in the widget: sender, label (agents) and text."""
    return js(
        driver,
        "return [...root.querySelectorAll('[data-testid=messages] .msg')].map(e => ({"
        " testid: e.dataset.testid, sender: e.dataset.sender || '',"
        " label: (e.querySelector('.label') || {}).textContent || '',"
        " text: (e.querySelector('.body') || e).textContent}));",
    )


def conversation_id(driver: Any, pk: str) -> str:
    state = driver.execute_script("return localStorage.getItem(arguments[0]);", f"ragbot:{pk}")
    conv = json.loads(state or "{}").get("conversation_id")
    assert conv, state
    return str(conv)


def by_testid(driver: Any, testid: str) -> Any:
    return driver.find_element("css selector", f"[data-testid='{testid}']")


def agent_messages(agent: Any) -> list[dict[str, str]]:
    return agent.execute_script(
        "return [...document.querySelectorAll('[data-testid=agent-message]')].map(e => ({"
        " sender: e.dataset.sender, who: e.querySelector('.who').textContent,"
        " text: e.querySelector('.text').textContent,"
        " cites: [...e.querySelectorAll('.cites li')].map(c => c.textContent)}));"
    )


def screenshot(driver: Any, artifacts_dir: Path, name: str) -> Path:
    path = artifacts_dir / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


# ------------------------------------------------------------------------------------------ tests


def test_visitor_asks_for_a_human_and_the_agent_replies_live(
    stack: Stack, driver: Any, agent_driver: Any, leave: None, artifacts_dir: Path
) -> None:
    agent = agent_driver
    pk = stack.bot["public_key"]
    driver.set_window_size(1280, 900)
    counter = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_STREAMS})
    try:
        _visitor_meets_alice(stack, driver, agent, pk, artifacts_dir)
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", counter)


def _visitor_meets_alice(stack: Stack, driver: Any, agent: Any, pk: str, artifacts_dir: Path) -> None:
    visit(driver, f"{stack.host}/index.html")
    assert not shown(driver, "handoff")  # nothing to hand over before the first message

    # The visitor asks and gets a cited answer.
    ask(driver, QUESTION)
    answer = [m for m in widget_messages(driver) if m["testid"] == "message-bot"][-1]
    assert "fuse sparse and dense lists" in answer["text"]
    cited = js(driver, "return [...root.querySelectorAll('[data-testid=citation]')].map(e => e.textContent);")
    assert cited, "the answer has no citation"
    conv = conversation_id(driver, pk)
    driver.execute_script("window.__sameDocument = true;")  # gone if the page ever reloads

    # "Talk to a human": a system note, a status line, and no second button press possible.
    wait_for(driver, lambda: shown(driver, "handoff"), what="the handoff button").click()
    wait_for(
        driver,
        lambda: any("asked someone from our team" in m["text"] for m in find_texts(driver, "message-system")),
        what="the system note",
    )
    wait_for(driver, lambda: shown(driver, "handoff-status"), what="the status line")
    assert find(driver, "handoff-status").text == "Waiting for a person\u2026"
    assert not shown(driver, "handoff")

    # The agent signs in with a key scoped to the bot and named Alice, and finds the conversation.
    agent.set_window_size(1280, 900)
    agent.get(f"{stack.base}/agent")
    by_testid(agent, "agent-key").send_keys(stack.admin(stack.bot, name="Alice"))
    by_testid(agent, "agent-login").click()
    item = wait_for(
        agent,
        lambda: next(
            (
                e
                for e in agent.find_elements("css selector", "[data-testid=queue-item]")
                if e.get_attribute("data-id") == conv
            ),
            None,
        ),
        timeout=20,
        what="the conversation in the queue",
    )
    assert "waiting for a person" in item.text
    item.click()

    # The visitor's question and the bot's answer with its citation.
    def conversation_shown() -> list[dict[str, str]] | None:
        messages = agent_messages(agent)
        senders = [m["sender"] for m in messages]
        return messages if "visitor" in senders and "bot" in senders and "system" in senders else None

    messages = wait_for(agent, conversation_shown, what="the conversation in the inbox")
    visitor = next(m for m in messages if m["sender"] == "visitor")
    bot = next(m for m in messages if m["sender"] == "bot")
    assert visitor["text"] == QUESTION
    assert "fuse sparse and dense lists" in bot["text"]
    assert bot["cites"] and bot["cites"][0] in cited[0], (bot["cites"], cited)
    assert by_testid(agent, "conv-mode").text == "waiting for a person"

    # Claim: the visitor is told someone joined.
    by_testid(agent, "claim").click()
    wait_for(agent, lambda: by_testid(agent, "conv-mode").text.startswith("with a person"), what="claimed")
    wait_for(
        driver,
        lambda: any(
            m["text"] == "Alice joined the conversation." for m in find_texts(driver, "message-system")
        ),
        what="the claim note in the widget",
    )

    # The reply reaches the widget within seconds, without a reload, labelled as the agent.
    by_testid(agent, "reply-input").send_keys(REPLY)
    by_testid(agent, "reply-send").click()
    sent = time.monotonic()
    reply = wait_for(
        driver,
        lambda: next((m for m in widget_messages(driver) if m["sender"] == "agent"), None),
        timeout=10,
        what="the agent's reply in the widget",
    )
    took = time.monotonic() - sent
    assert took < 5, f"the reply took {took:.1f} s"
    assert reply == {"testid": "message-bot", "sender": "agent", "label": "Alice", "text": REPLY}
    assert driver.execute_script("return window.__sameDocument === true;")
    wait_for(
        driver,
        lambda: find(driver, "handoff-status").text == "You're chatting with Alice",
        what="the status line naming the agent",
    )
    screenshot(driver, artifacts_dir, "handoff-widget-agent-reply.png")

    # An internal note stays in the inbox.
    by_testid(agent, "internal-toggle").click()
    by_testid(agent, "reply-input").send_keys(NOTE)
    by_testid(agent, "reply-send").click()
    wait_for(
        agent,
        lambda: any(m["sender"] == "internal" and m["text"] == NOTE for m in agent_messages(agent)),
        what="the internal note in the inbox",
    )
    by_testid(agent, "internal-toggle").click()

    # The visitor writes again: no bot answer, and the agent's open view shows it live.
    ask(driver, FOLLOW_UP)
    wait_for(
        agent,
        lambda: any(m["sender"] == "visitor" and m["text"] == FOLLOW_UP for m in agent_messages(agent)),
        timeout=10,
        what="the visitor's follow-up in the inbox",
    )
    assert [m["sender"] for m in widget_messages(driver) if m["testid"] == "message-bot"] == [
        "bot",
        "agent",
    ]
    time.sleep(1)  # ample time for a leaked note to have arrived
    whole = js(driver, "return root.textContent;")
    assert NOTE not in whole
    screenshot(agent, artifacts_dir, "handoff-inbox-conversation.png")

    # The agent resolves: the visitor is told, and may ask for a person again.
    by_testid(agent, "resolve").click()
    wait_for(agent, lambda: by_testid(agent, "conv-mode").text == "resolved", what="resolved")
    wait_for(
        driver,
        lambda: any("marked as resolved" in m["text"] for m in find_texts(driver, "message-system")),
        what="the resolved note in the widget",
    )
    wait_for(
        driver, lambda: shown(driver, "handoff") and not shown(driver, "handoff-status"), what="bot mode"
    )
    assert driver.execute_script("return window.__sameDocument === true;")
    detail = stack.get(f"/v1/agent/conversations/{conv}", stack.admin(stack.bot))
    assert detail["owner_mode"] == "resolved"
    assert detail["page_url"] == f"{stack.host}/index.html"  # sent with the first message
    # One live stream per conversation, all along: every reply arrived exactly once.
    assert [m["text"] for m in widget_messages(driver) if m["sender"] == "agent"] == [REPLY]
    streams = driver.execute_script("return window.__streams;")
    assert streams["open"] == 1 and streams["max"] == 1, streams
    # Back with the bot and the panel closed: the stream closes.
    find(driver, "close").click()
    wait_for(driver, lambda: driver.execute_script("return window.__streams.open;") == 0, what="no stream")


def test_thumbs_up_then_down_keeps_one_rating(stack: Stack, driver: Any, leave: None) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/index.html")
    ask(driver, QUESTION)
    up = wait_for(driver, lambda: shown(driver, "feedback-up"), what="the thumbs")
    assert up.get_attribute("aria-pressed") == "false"
    up.click()
    wait_for(driver, lambda: find(driver, "feedback-up").get_attribute("aria-pressed") == "true", what="up")
    find(driver, "feedback-down").click()
    wait_for(
        driver,
        lambda: (
            find(driver, "feedback-down").get_attribute("aria-pressed") == "true"
            and find(driver, "feedback-up").get_attribute("aria-pressed") == "false"
        ),
        what="down replacing up",
    )
    # The optional follow-up on a thumbs-down.
    wait_for(driver, lambda: shown(driver, "feedback-comment"), what="the comment box").send_keys("Too vague")
    find(driver, "feedback-send").click()
    conv = conversation_id(driver, stack.bot["public_key"])
    key = stack.admin(stack.bot)

    def rows() -> list[dict[str, Any]] | None:
        found = [
            r for r in stack.get("/v1/feedback", key, bot_id=stack.bot["id"]) if r["conversation_id"] == conv
        ]
        return found if found and found[-1]["comment"] == "Too vague" else None

    found = wait_for(driver, rows, timeout=10, what="the rating through the API")
    assert len(found) == 1, found
    assert found[0]["rating"] == "down" and found[0]["question"] == QUESTION
    assert not shown(driver, "error")


def test_lead_form_after_the_handoff_click(stack: Stack, driver: Any, leave: None) -> None:
    driver.set_window_size(1280, 900)
    page = f"{stack.host}/sales.html?utm_source=newsletter&utm_campaign=spring&ref=x"
    visit(driver, page)
    assert not shown(driver, "lead-form")
    ask(driver, "Do you ship the starter kit to Norway?")
    wait_for(driver, lambda: shown(driver, "handoff"), what="the handoff button").click()

    form = wait_for(driver, lambda: shown(driver, "lead-form"), what="the lead form")
    assert "Leave your details and Sales will write back" in form.text
    assert "Work email *" in form.text and "Your name" in form.text and CONSENT in form.text
    assert len(find_all(driver, "lead-form")) == 1 and len(find_all(driver, "lead-email")) == 1

    # A wrong email and no consent: each error next to its field; nothing stored.
    find(driver, "lead-email").send_keys("ada@@example")
    find(driver, "lead-name").send_keys("Ada Lovelace")
    find(driver, "lead-submit").click()
    email_error = wait_for(driver, lambda: shown(driver, "lead-error-email"), what="the email error")
    assert email_error.text
    assert shown(driver, "lead-error-consent").text
    assert not shown(driver, "lead-error-name")
    assert find(driver, "lead-email").get_attribute("aria-invalid") == "true"
    key = stack.admin(stack.sales)
    assert stack.get("/v1/leads", key, bot_id=stack.sales["id"]) == []

    # Corrected: stored, and the visitor is thanked.
    find(driver, "lead-email").clear()
    find(driver, "lead-email").send_keys("Ada@Example.com")
    find(driver, "lead-consent").click()
    find(driver, "lead-submit").click()
    thanks = wait_for(driver, lambda: shown(driver, "lead-thanks"), what="the thanks")
    assert "Thanks" in thanks.text
    assert not shown(driver, "lead-form")
    leads = stack.get("/v1/leads", key, bot_id=stack.sales["id"])
    assert len(leads) == 1, leads
    lead = leads[0]
    assert lead["email"] == "ada@example.com" and lead["name"] == "Ada Lovelace"
    assert lead["utm"] == {"utm_source": "newsletter", "utm_campaign": "spring"}
    assert lead["page_url"] == page
    assert lead["consent_version"] == "2025-01" and lead["consent_text"] == CONSENT
    assert lead["conversation_id"] == conversation_id(driver, stack.sales["public_key"])
    time.sleep(1)  # the lead_saved event arrives too: still one thanks
    assert len(find_all(driver, "lead-thanks")) == 1


def test_lead_form_before_the_chat(stack: Stack, driver: Any, leave: None) -> None:
    driver.set_window_size(1280, 900)
    visit(driver, f"{stack.host}/news.html?utm_medium=email")
    form = wait_for(driver, lambda: shown(driver, "lead-form"), what="the lead form before any message")
    assert "Stay in touch" in form.text and find(driver, "lead-consent") is None
    find(driver, "lead-email").send_keys("bob@example.com")
    find(driver, "lead-submit").click()
    wait_for(driver, lambda: shown(driver, "lead-thanks"), what="the thanks")
    leads = stack.get("/v1/leads", stack.admin(stack.newsletter), bot_id=stack.newsletter["id"])
    assert [(x["email"], x["conversation_id"], x["utm"]) for x in leads] == [
        ("bob@example.com", None, {"utm_medium": "email"})
    ]
    driver.refresh()  # asked once: not again on the next page view
    wait_for(driver, lambda: find(driver, "panel"), what="the widget after a reload")
    time.sleep(1)
    assert not shown(driver, "lead-form")
