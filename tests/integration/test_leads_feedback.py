"""Leads and feedback end to end on real parts, once on SQLite and once on PostgreSQL: the real app with
real admin keys and visitor sessions, real encoders and a Qdrant Edge shard, and an llm-katan echo server
behind LiteLLM for the bot answers that get rated.

The echo server answers with the visitor's message, so a ``[1]`` in a question is a citation marker the
"model" emitted: the answers carry real citations and retrieval logs for the feedback export.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.threads import race
from integration.katan import KatanServer
from sqlalchemy import func, select
from typer.testing import CliRunner

from ragbot.api.app import create_app
from ragbot.cli import app as cli_app
from ragbot.config import Settings, get_settings
from ragbot.db import events as events_sql
from ragbot.db.models import (
    Conversation,
    Feedback,
    HandoffEvent,
    Lead,
    WebhookDelivery,
    WebhookSubscription,
)
from ragbot.db.session import session_scope
from ragbot.leads.form import LeadField, LeadForm
from ragbot.leads.service import LeadSubmission
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges

pytestmark = pytest.mark.integration

SITE = "https://shop.acme.io"
DOC = """# Acme returns

Acme accepts returns within 30 days of delivery. Refunds go back to the original payment method
within five business days after the parcel arrives at the Acme warehouse in Leipzig.

# Acme shipping

Standard shipping takes two to four business days inside Germany. Express shipping arrives the next
business day when ordered before 14:00.
"""

FORM = LeadForm(
    fields=[
        LeadField(name="email"),
        LeadField(name="name", required=True),
        LeadField(name="phone"),
        LeadField(name="company"),
        LeadField(name="custom:order_id", label="Order number"),
    ],
    consent_text="Acme may contact me about my request.",
    consent_version="2025-02",
    phone_region="DE",
)


class Deployment:
    """One ragbot deployment: a bot with a lead form (handing over after 2 thumbs-down), one without."""

    def __init__(self, runtime: Runtime, client: TestClient, data_dir: Path) -> None:
        self.runtime, self.client, self.data_dir = runtime, client, data_dir
        self.admin = admin_headers(runtime)
        self.bot = runtime.bots.create(
            "Acme shop",
            BotChanges(allowed_origins=[SITE], lead_form=FORM, handoff_after_thumbs_down=2),
            actor="tests",
        )
        self.plain = runtime.bots.create("No form", BotChanges(allowed_origins=[SITE]), actor="tests")
        with session_scope(runtime.session_factory) as s:
            s.add(
                WebhookSubscription(
                    bot_id=self.bot["id"],
                    url="https://hooks.acme.io/ragbot",
                    events=["lead.created", "feedback.created"],
                    secret="whsec_" + "a" * 32,
                )
            )

    def ingest(self) -> None:
        from connectors.files import FileConnector

        doc = self.data_dir / "acme.md"
        doc.write_text(DOC, encoding="utf-8")
        report = self.runtime.ingest_service.ingest(
            self.bot["id"], FileConnector(str(doc), max_bytes=1 << 20)
        )
        assert (report.added, report.failed) == (1, 0), report

    def visitor(self, bot: dict[str, Any] | None = None) -> dict[str, str]:
        bot = bot or self.bot
        token, _ = self.runtime.visitor_sessions.issue(bot["id"], bot["public_key"])
        return {"Authorization": f"Bearer {token}", "Origin": SITE}

    def chat(
        self, headers: dict[str, str], message: str, conversation_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"message": message, "page_url": f"{SITE}/help"}
        if conversation_id:
            body["conversation_id"] = conversation_id
        response = self.client.post("/v1/chat", json=body, headers=headers)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["status"] == "complete", answer
        return answer

    def deliveries(self, event_type: str) -> list[WebhookDelivery]:
        with session_scope(self.runtime.session_factory) as s:
            return list(
                s.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.event_type == event_type)
                    .order_by(WebhookDelivery.created_at)
                )
            )


@pytest.fixture
def deployment(
    tmp_path: Path,
    database_url: str,
    katan_echo: KatanServer,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[Deployment]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        llm_model="openai/katan-echo",
        llm_api_base=katan_echo.base_url,
        llm_api_key="sk-test",
        llm_max_retries=0,
        min_relevance=None,  # the echo answer is stored as the bot's answer whatever retrieval scored
        grounding="off",  # the stand-in model's text is shown as written
    )
    runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
    try:
        with TestClient(create_app(runtime=runtime, warmup=False)) as client:
            yield Deployment(runtime, client, tmp_path)
    finally:
        runtime.close()


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# --------------------------------------------------------------------------- leads


def test_lead_validation_answers_422_per_field_and_stores_e164_with_consent(deployment: Deployment) -> None:
    d = deployment
    visitor = d.visitor()
    bad = d.client.post(
        "/v1/leads",
        json={
            "fields": {"email": "jane@", "phone": "12", "favourite_colour": "teal"},
            "page_url": "ftp://acme.io/x",
            "utm": {"utm_source": "mail", "gclid": "abc"},
        },
        headers=visitor,
    )
    assert _error(bad) == (422, "invalid_lead")
    fields = bad.json()["fields"]
    assert set(fields) == {"email", "name", "phone", "favourite_colour", "consent", "page_url", "utm.gclid"}
    assert fields["name"] == "required" and all(fields.values())

    no_form = d.client.post("/v1/leads", json={"fields": {"email": "a@acme.io"}}, headers=d.visitor(d.plain))
    assert _error(no_form) == (409, "no_lead_form")

    ok = d.client.post(
        "/v1/leads",
        json={
            "fields": {"email": "Jane.Doe@Example.COM", "name": "Jane Doe", "phone": "030 1234567"},
            "consent": True,
            "page_url": f"{SITE}/pricing",
            "utm": {"utm_source": "newsletter", "utm_medium": "email"},
        },
        headers=visitor,
    )
    assert ok.status_code == 200, ok.text
    assert set(ok.json()) == {"saved", "lead_id"}  # a visitor learns nothing about earlier submissions

    (lead,) = d.client.get("/v1/leads", params={"bot_id": d.bot["id"]}, headers=d.admin).json()
    assert lead["id"] == ok.json()["lead_id"]
    assert (lead["email"], lead["name"], lead["phone"]) == (
        "jane.doe@example.com",
        "Jane Doe",
        "+49301234567",
    )
    assert (lead["consent_text"], lead["consent_version"]) == (FORM.consent_text, "2025-02")
    assert lead["consented_at"] is not None
    assert lead["page_url"] == f"{SITE}/pricing"
    assert lead["utm"] == {"utm_source": "newsletter", "utm_medium": "email"}
    assert lead["visitor_id"] and lead["conversation_id"] is None

    # many submissions of one new email at once: one contact, one webhook, every change applied
    def submit(i: int, barrier: Any) -> None:
        data = LeadSubmission(
            fields={"email": "Race@acme.io", "name": "Racer", "custom:order_id": f"R-{i}"}, consent=True
        )
        barrier.wait()
        d.runtime.leads.submit(d.bot["id"], data, visitor_id=f"v_race_{i}")

    assert race(6, submit) == []
    with session_scope(d.runtime.session_factory) as s:
        (raced,) = s.scalars(select(Lead).where(Lead.email == "race@acme.io"))
        assert raced.custom["order_id"].startswith("R-")
    assert [x.payload["data"]["email"] for x in d.deliveries("lead.created")] == [
        "jane.doe@example.com",
        "race@acme.io",
    ]

    # a visitor names no other bot
    other = d.client.post(
        "/v1/leads",
        params={"bot_id": d.plain["id"]},
        json={"fields": {"email": "a@acme.io"}},
        headers=visitor,
    )
    assert _error(other) == (403, "forbidden")

    # an admin key only within its scope
    scoped = admin_headers(d.runtime, bot_id=d.plain["id"])
    refused = d.client.post(
        "/v1/leads", params={"bot_id": d.bot["id"]}, json={"fields": {"email": "x@acme.io"}}, headers=scoped
    )
    assert refused.status_code == 403


def test_one_contact_per_email_updated_without_losing_unsent_fields(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = deployment
    d.ingest()
    visitor = d.visitor()
    conv = d.chat(visitor, "How long do refunds take?")["conversation_id"]

    first = d.client.post(
        f"/v1/conversations/{conv}/lead",
        json={
            "fields": {
                "email": "jane@acme.io",
                "name": "Jane",
                "phone": "+49 30 1234567",
                "company": "Acme",
                "custom:order_id": "A-1",
            },
            "consent": True,
            "utm": {"utm_source": "newsletter", "utm_campaign": "spring"},
        },
        headers=visitor,
    )
    assert first.status_code == 200, first.text
    created = d.client.get("/v1/leads", params={"bot_id": d.bot["id"]}, headers=d.admin).json()[0]
    assert created["page_url"] == f"{SITE}/help"  # where the conversation started
    assert created["conversation_id"] == conv

    # the same person again, another case, leaving out phone and company, a new page and campaign
    second = d.client.post(
        f"/v1/conversations/{conv}/lead",
        json={
            "fields": {"email": "JANE@acme.io", "name": "Jane Roe", "phone": "", "custom:order_id": "A-2"},
            "consent": True,
            "page_url": f"{SITE}/checkout",
            "utm": {"utm_campaign": "summer"},
        },
        headers=visitor,
    )
    assert second.status_code == 200, second.text
    assert second.json()["lead_id"] == first.json()["lead_id"]

    with session_scope(d.runtime.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 1
        lead = s.scalars(select(Lead)).one()
        assert (lead.email, lead.name, lead.phone, lead.company) == (
            "jane@acme.io",
            "Jane Roe",
            "+49301234567",
            "Acme",
        )
        assert lead.custom == {"order_id": "A-2"}
        assert lead.utm == {"utm_source": "newsletter", "utm_campaign": "summer"}
        assert lead.page_url == f"{SITE}/checkout"
        assert lead.created_at == created_at_of(created) and lead.updated_at > lead.created_at
        saved = [
            e
            for e in events_sql.events_after(s, d.bot["id"], conv, 0, visitor_only=True)
            if e.type == "lead_saved"
        ]
        assert [e.data for e in saved] == [{"lead_id": lead.id}] * 2

    # the webhook reports the new contact once, not the update
    (delivery,) = d.deliveries("lead.created")
    assert delivery.payload["type"] == "lead.created" and delivery.payload["bot_id"] == d.bot["id"]
    assert delivery.payload["data"]["email"] == "jane@acme.io"
    assert delivery.payload["data"]["phone"] == "+49301234567"

    # another visitor cannot attach a lead to this conversation; an admin key can
    stranger = d.client.post(
        f"/v1/conversations/{conv}/lead", json={"fields": {"email": "x@acme.io"}}, headers=d.visitor()
    )
    assert _error(stranger) == (404, "conversation_not_found")
    other_bot = d.client.post(
        f"/v1/conversations/{conv}/lead", json={"fields": {"email": "x@acme.io"}}, headers=d.visitor(d.plain)
    )
    assert _error(other_bot) == (404, "conversation_not_found")  # not "no lead form": it is not theirs
    missing = d.client.post(
        "/v1/conversations/nope/lead", json={"fields": {"email": "x@acme.io"}}, headers=d.admin
    )
    assert _error(missing) == (404, "conversation_not_found")
    by_admin = d.client.post(
        f"/v1/conversations/{conv}/lead",
        json={"fields": {"email": "=2+5@acme.io", "name": "Mallory"}, "consent": True},
        headers=d.admin,
    )
    assert by_admin.status_code == 200, by_admin.text
    assert (
        by_admin.json()["created"] is True and by_admin.json()["lead"]["visitor_id"] == created["visitor_id"]
    )

    # CSV: one row per contact, custom fields flattened, formulas defused
    exported = d.client.get("/v1/leads", params={"bot_id": d.bot["id"], "format": "csv"}, headers=d.admin)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert list(rows[0]) == [
        "created_at",
        "updated_at",
        "email",
        "name",
        "phone",
        "company",
        "custom_order_id",
        "consent_version",
        "consented_at",
        "page_url",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
        "conversation_id",
    ]
    jane, mallory = rows
    assert (jane["email"], jane["name"], jane["phone"], jane["company"]) == (
        "jane@acme.io",
        "Jane Roe",
        "+49301234567",
        "Acme",
    )
    assert (jane["custom_order_id"], jane["consent_version"], jane["utm_campaign"]) == (
        "A-2",
        "2025-02",
        "summer",
    )
    assert jane["conversation_id"] == conv and jane["consented_at"]
    assert mallory["email"].startswith("'=")

    # the same export from the shell
    monkeypatch.setenv("RAGBOT_DATA_DIR", str(d.runtime.settings.data_dir))
    monkeypatch.setenv("RAGBOT_DATABASE_URL", d.runtime.settings.resolved_database_url)
    get_settings.cache_clear()
    try:
        out = d.data_dir / "leads.csv"
        result = CliRunner().invoke(cli_app, ["leads", "export", "--bot", d.bot["id"], "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_bytes().decode("utf-8") == exported.text
        as_json = CliRunner().invoke(cli_app, ["leads", "export", "--bot", d.bot["id"], "--format", "json"])
        assert as_json.exit_code == 0, as_json.output
        assert [lead["email"] for lead in json.loads(as_json.stdout)] == [
            "jane@acme.io",
            mallory["email"][1:],
        ]
        unknown = CliRunner().invoke(cli_app, ["leads", "export", "--bot", "no-such-bot"])
        assert unknown.exit_code == 2
    finally:
        get_settings.cache_clear()


def created_at_of(lead: dict[str, Any]) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(lead["created_at"])


# --------------------------------------------------------------------------- feedback


def test_feedback_is_one_changeable_rating_per_answer_and_visitor(deployment: Deployment) -> None:
    d = deployment
    d.ingest()
    visitor = d.visitor()
    answer = d.chat(visitor, "How long do refunds take? [1]")
    assert answer["citations"], answer
    message = answer["message_id"]

    up = d.client.post(f"/v1/messages/{message}/feedback", json={"rating": "up"}, headers=visitor)
    assert up.status_code == 200, up.text
    assert (up.json()["rating"], up.json()["created"], up.json()["handoff"]) == ("up", True, False)

    down = d.client.post(
        f"/v1/messages/{message}/feedback",
        json={"rating": "down", "reason": "incomplete", "comment": "Which payment methods?"},
        headers=visitor,
    )
    assert down.status_code == 200, down.text
    assert (down.json()["rating"], down.json()["created"], down.json()["changed"]) == ("down", False, True)
    assert down.json()["id"] == up.json()["id"]
    assert down.json()["handoff"] is False  # one thumbs-down; the bot hands over after two

    again = d.client.post(
        f"/v1/messages/{message}/feedback",
        json={"rating": "down", "reason": "incomplete", "comment": "Which payment methods?"},
        headers=visitor,
    )
    assert again.json()["changed"] is False

    bad_reason = d.client.post(
        f"/v1/messages/{message}/feedback", json={"rating": "down", "reason": "rude"}, headers=visitor
    )
    assert _error(bad_reason) == (422, "invalid_feedback") and "reason" in bad_reason.json()["fields"]

    # someone else's answer, the visitor's own question, an unknown id: all simply not found
    assert _error(
        d.client.post(f"/v1/messages/{message}/feedback", json={"rating": "up"}, headers=d.visitor())
    ) == (
        404,
        "message_not_found",
    )
    with session_scope(d.runtime.session_factory) as s:
        conv = s.get_one(Conversation, answer["conversation_id"])
        question_id = next(m.id for m in conv.messages if m.sender_type == "visitor")
    assert (
        d.client.post(
            f"/v1/messages/{question_id}/feedback", json={"rating": "up"}, headers=visitor
        ).status_code
        == 404
    )
    assert (
        d.client.post("/v1/messages/nope/feedback", json={"rating": "up"}, headers=d.admin).status_code == 404
    )

    # an admin's rating is its own row, and reviewing never hands a visitor's conversation over
    reviewed = d.client.post(f"/v1/messages/{message}/feedback", json={"rating": "down"}, headers=d.admin)
    assert reviewed.status_code == 200 and reviewed.json()["created"] is True
    with session_scope(d.runtime.session_factory) as s:
        raters = sorted(r for r in s.scalars(select(Feedback.rater).where(Feedback.message_id == message)))
        assert len(raters) == 2 and raters[0].startswith("key:")
        assert s.get_one(Conversation, answer["conversation_id"]).owner_mode == "bot"

    # the webhook reports the first rating and each change, not a resubmission
    assert [x.payload["data"]["rating"] for x in d.deliveries("feedback.created")] == ["up", "down", "down"]
    assert d.deliveries("feedback.created")[1].payload["data"]["previous_rating"] == "up"

    # the export ties each rating to the question, the answer, its citations and its retrieval log
    exported = d.client.get("/v1/feedback", params={"bot_id": d.bot["id"]}, headers=d.admin)
    assert exported.status_code == 200, exported.text
    mine = next(x for x in exported.json() if x["rater"] == visitor_id(d, visitor))
    assert (mine["rating"], mine["reason"], mine["comment"]) == (
        "down",
        "incomplete",
        "Which payment methods?",
    )
    assert mine["question"] == "How long do refunds take? [1]"
    assert mine["answer"] == answer["answer"]
    assert mine["citations"] and mine["citations"][0]["n"] == 1
    assert mine["citations"][0]["chunk_id"] == answer["citations"][0]["chunk_id"]
    assert mine["sources"] and any(s["cited"] for s in mine["sources"])

    as_csv = d.client.get("/v1/feedback", params={"bot_id": d.bot["id"], "format": "csv"}, headers=d.admin)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == 2
    row = next(r for r in rows if r["comment"])
    assert row["question"] == mine["question"] and row["citations"].startswith("[1] ")

    later = d.client.get(
        "/v1/feedback", params={"bot_id": d.bot["id"], "since": "2999-01-01T00:00:00Z"}, headers=d.admin
    )
    assert later.status_code == 200 and later.json() == []


def visitor_id(d: Deployment, headers: dict[str, str]) -> str:
    session = d.runtime.visitor_sessions.verify(headers["Authorization"].split(" ", 1)[1])
    return str(session.visitor_id)


def test_repeated_thumbs_down_hands_the_conversation_to_a_person(deployment: Deployment) -> None:
    d = deployment
    d.ingest()
    visitor = d.visitor()
    first = d.chat(visitor, "How long do refunds take?")
    conv = first["conversation_id"]
    second = d.chat(visitor, "And how fast is express shipping?", conv)

    one = d.client.post(
        f"/v1/messages/{first['message_id']}/feedback", json={"rating": "down"}, headers=visitor
    )
    assert one.json()["handoff"] is False
    two = d.client.post(
        f"/v1/messages/{second['message_id']}/feedback",
        json={"rating": "down", "reason": "incorrect"},
        headers=visitor,
    )
    assert two.status_code == 200, two.text
    assert (two.json()["handoff"], two.json()["owner_mode"]) == (True, "pending_human")

    with session_scope(d.runtime.session_factory) as s:
        assert s.get_one(Conversation, conv).owner_mode == "pending_human"
        (event,) = s.scalars(select(HandoffEvent).where(HandoffEvent.conversation_id == conv))
        assert (event.reason, event.from_mode, event.to_mode, event.actor) == (
            "thumbs_down",
            "bot",
            "pending_human",
            "visitor",
        )
        kinds = [e.type for e in events_sql.events_after(s, d.bot["id"], conv, 0, visitor_only=True)]
        assert "handoff" in kinds and "lead_form" in kinds  # the form asks on_handoff by default

    # changing an old rating back and forth while waiting moves nothing again
    d.client.post(f"/v1/messages/{first['message_id']}/feedback", json={"rating": "up"}, headers=visitor)
    d.client.post(f"/v1/messages/{first['message_id']}/feedback", json={"rating": "down"}, headers=visitor)
    with session_scope(d.runtime.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(HandoffEvent)) == 1

    # racing ratings of one answer by its visitor end as one row
    rater = visitor_id(d, visitor)

    def rate(i: int, barrier: Any) -> None:
        barrier.wait()
        d.runtime.feedback.rate(
            d.bot["id"], second["message_id"], "up" if i % 2 else "down", rater=rater, visitor_id=rater
        )

    assert race(6, rate) == []
    with session_scope(d.runtime.session_factory) as s:
        rows = list(s.scalars(select(Feedback).where(Feedback.message_id == second["message_id"])))
        assert len(rows) == 1 and rows[0].rating in ("up", "down")
        assert s.scalar(select(func.count()).select_from(HandoffEvent)) == 1
