"""Leads: validate a submission against the bot's form, keep one contact per email, export them.

A submission and everything it implies commit together: the contact, the ``lead_saved`` live event that
lets the widget thank the visitor, and the ``lead.created`` webhook (new contacts only) in the outbox.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import events as events_sql
from ragbot.db import leads as leads_sql
from ragbot.db import repositories as repo
from ragbot.db.models import Bot, Lead, new_id, utcnow
from ragbot.db.session import session_scope
from ragbot.leads.form import LeadForm
from ragbot.leads.validation import UTM_KEYS, ValidLead, validate_lead
from ragbot.webhooks.outbox import enqueue

__all__ = [
    "LeadSaved",
    "LeadService",
    "LeadSubmission",
    "NoLeadFormError",
    "csv_chunks",
    "lead_to_dict",
    "spreadsheet_safe",
]

_BASE_COLUMNS = ("created_at", "updated_at", "email", "name", "phone", "company")
_TAIL_COLUMNS = ("consent_version", "consented_at", "page_url", *UTM_KEYS, "conversation_id")
#: A cell starting with one of these is a formula to Excel and LibreOffice (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class NoLeadFormError(LookupError):
    """The bot has no lead form, so there is nothing a submission could be checked against."""


@dataclass(frozen=True)
class LeadSubmission:
    """What the widget (or an API client) sent: ``fields`` keyed by the form's field names."""

    fields: Mapping[str, Any]
    consent: bool = False
    page_url: Any = None
    utm: Mapping[str, Any] | None = None


@dataclass
class LeadSaved:
    lead: dict[str, Any]
    created: bool  # a new contact (False: an update of the bot's contact with this email)


def lead_to_dict(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "bot_id": lead.bot_id,
        "email": lead.email,
        "name": lead.name,
        "phone": lead.phone,
        "company": lead.company,
        "custom": dict(lead.custom or {}),
        "consent_text": lead.consent_text,
        "consent_version": lead.consent_version,
        "consented_at": lead.consented_at,
        "page_url": lead.page_url,
        "utm": dict(lead.utm or {}),
        "conversation_id": lead.conversation_id,
        "visitor_id": lead.visitor_id,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
    }


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in data.items()}


def spreadsheet_safe(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: visitors write these values, and a leading ``=``
    (or ``+ - @``) would otherwise run as a formula on the machine of whoever opens the export."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell(value: Any, *, trusted: bool) -> str:
    if not trusted:
        return spreadsheet_safe(value)
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _merge(lead: Lead, valid: ValidLead, *, conversation_id: str | None, visitor_id: str | None) -> None:
    """Apply a resubmission: what was sent replaces, what was not is kept; custom fields and UTM
    parameters merge key by key."""
    for name in ("name", "phone", "company"):
        value = getattr(valid, name)
        if value is not None:
            setattr(lead, name, value)
    if valid.custom:
        lead.custom = {**(lead.custom or {}), **valid.custom}
    if valid.utm:
        lead.utm = {**(lead.utm or {}), **valid.utm}
    if valid.consented_at is not None:
        lead.consent_text = valid.consent_text or ""
        lead.consent_version = valid.consent_version or ""
        lead.consented_at = valid.consented_at
    if valid.page_url is not None:
        lead.page_url = valid.page_url
    if conversation_id is not None:
        lead.conversation_id = conversation_id
    if visitor_id is not None:
        lead.visitor_id = visitor_id
    lead.updated_at = utcnow()


class LeadService:
    def __init__(self, sessions: sessionmaker[Session], publish: Callable[[str], None]) -> None:
        self._sessions = sessions
        self._publish = publish

    def submit(
        self,
        bot_id: str,
        data: LeadSubmission,
        *,
        visitor_id: str | None,
        conversation_id: str | None = None,
    ) -> LeadSaved:
        """Store a contact, or update the bot's contact with this email.

        Raises ``NoLeadFormError`` (the bot has no form), ``repo.ConversationNotFoundError`` (no such
        conversation, or given a ``visitor_id``, not that visitor's) and ``LeadValidationError``.
        """
        with session_scope(self._sessions) as s:
            conv = None
            if conversation_id is not None:
                # first, so a conversation out of reach is "not found" whatever the bot's settings; its
                # lock orders this lead's live event with the conversation's others
                conv = repo.lock_conversation(s, bot_id, conversation_id)
                if visitor_id is not None and conv.visitor_id != visitor_id:
                    raise repo.ConversationNotFoundError(conversation_id)
                visitor_id = visitor_id or conv.visitor_id
            bot = s.get(Bot, bot_id)
            if bot is None or not bot.lead_form:
                raise NoLeadFormError(bot_id)
            form = LeadForm.model_validate(bot.lead_form)
            now = utcnow()
            valid = validate_lead(
                form, data.fields, consent=data.consent, page_url=data.page_url, utm=data.utm, now=now
            )
            page_url = valid.page_url or (conv.page_url if conv is not None else None)
            inserted = leads_sql.insert_if_new(
                s,
                {
                    "id": new_id(),
                    "bot_id": bot_id,
                    "conversation_id": conversation_id,
                    "visitor_id": visitor_id,
                    "email": valid.email,
                    "name": valid.name,
                    "phone": valid.phone,
                    "company": valid.company,
                    "custom": valid.custom,
                    "consent_text": valid.consent_text or "",
                    "consent_version": valid.consent_version or "",
                    "consented_at": valid.consented_at,
                    "page_url": page_url,
                    "utm": valid.utm,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            lead = leads_sql.lock_lead(s, bot_id, valid.email)
            if lead is None:  # deleted between the conflict and the lock: the next submission makes it
                raise RuntimeError(f"lead {valid.email!r} vanished while it was being saved")
            if inserted is None:
                _merge(lead, valid, conversation_id=conversation_id, visitor_id=visitor_id)
                if lead.page_url is None and page_url is not None:
                    lead.page_url = page_url
                s.flush()
            saved = LeadSaved(lead_to_dict(lead), created=inserted is not None)
            if saved.created:
                enqueue(s, bot_id, "lead.created", _jsonable(saved.lead))
            if conv is not None:
                events_sql.add_event(s, bot_id, conv.id, "lead_saved", {"lead_id": lead.id})
        if conversation_id is not None:
            self._publish(conversation_id)
        return saved

    # ------------------------------------------------------------------ reads
    def list_leads(self, bot_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        with session_scope(self._sessions) as s:
            return [lead_to_dict(lead) for lead in leads_sql.list_leads(s, bot_id, limit=limit)]

    def iter_all(self, bot_id: str, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every contact, oldest first, read page by page."""
        after = None
        while True:
            with session_scope(self._sessions) as s:
                rows = leads_sql.iter_leads(s, bot_id, after=after, limit=page)
                items = [lead_to_dict(lead) for lead in rows]
            yield from items
            if len(rows) < page:
                return
            after = (rows[-1].created_at, rows[-1].id)

    def csv_columns(self, bot_id: str) -> list[str]:
        """The export's header: fixed columns, then one ``custom_<key>`` per custom field ever stored or
        in the current form, then consent, where the visitor came from, and the conversation."""
        with session_scope(self._sessions) as s:
            keys = set(leads_sql.custom_keys(s, bot_id))
            bot = s.get(Bot, bot_id)
            if bot is not None and bot.lead_form:
                form = LeadForm.model_validate(bot.lead_form)
                keys.update(f.name.split(":", 1)[1] for f in form.fields if f.name.startswith("custom:"))
        return [*_BASE_COLUMNS, *(f"custom_{k}" for k in sorted(keys)), *_TAIL_COLUMNS]

    def export_csv(self, bot_id: str) -> Iterator[str]:
        """The bot's contacts as CSV text, header first, a page of rows per chunk."""
        columns = self.csv_columns(bot_id)  # a generator: nothing runs until the first chunk is read
        rows = (_csv_row(lead) for lead in self.iter_all(bot_id))
        yield from csv_chunks(columns, rows, trusted=("phone",))


def _csv_row(lead: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: lead.get(name) for name in (*_BASE_COLUMNS, "consent_version", "consented_at", "page_url")}
    row["conversation_id"] = lead.get("conversation_id")
    row.update({f"custom_{k}": v for k, v in (lead.get("custom") or {}).items()})
    row.update({k: v for k, v in (lead.get("utm") or {}).items() if k in UTM_KEYS})
    return row


def csv_chunks(
    columns: list[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    trusted: Collection[str] = (),
    every: int = 200,
) -> Iterator[str]:
    """CSV text in chunks of ``every`` rows. Cells go through ``spreadsheet_safe`` except the
    ``trusted`` columns, whose values the server wrote itself (an E.164 phone number keeps its ``+``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow([_cell(row.get(name), trusted=name in trusted) for name in columns])
        if count % every == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
