"""Checking what a visitor typed into a bot's lead form, before anything is stored.

Pure: no database, no network. Emails are checked for syntax only (``check_deliverability=False``: a DNS
lookup per submission would be slow, fail offline, and leak visitors' domains to resolvers); phone
numbers are parsed with libphonenumber and stored as E.164. Every problem is reported at once, per field,
so the widget can mark each input instead of failing one error at a time.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from ragbot.leads.form import STANDARD_FIELDS, LeadForm

__all__ = [
    "MAX_CUSTOM_LENGTH",
    "MAX_PAGE_URL_LENGTH",
    "MAX_UTM_LENGTH",
    "UTM_KEYS",
    "LeadValidationError",
    "ValidLead",
    "normalize_email",
    "normalize_phone",
    "validate_lead",
]

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
MAX_PAGE_URL_LENGTH = 2000
MAX_UTM_LENGTH = 200
MAX_CUSTOM_LENGTH = 1000
#: Lengths of the ``leads`` columns (``ragbot.db.models.Lead``), so a value that passes also fits.
_MAX_LENGTH = {"email": 320, "name": 200, "company": 200, "phone": 64}


class LeadValidationError(ValueError):
    """What was wrong, per field (``email``, ``custom:order_id``, ``consent``, ``utm.utm_source``...)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        listed = "; ".join(f"{name}: {message}" for name, message in self.fields.items())
        super().__init__(f"the lead form has errors: {listed}")


@dataclass(frozen=True)
class ValidLead:
    """A submission ready to store. ``None`` (or a missing key) means "not sent": an update keeps the
    stored value, so a visitor who only resends their email never erases their phone number."""

    email: str
    name: str | None = None
    phone: str | None = None
    company: str | None = None
    custom: dict[str, str] = field(default_factory=dict)
    consent_text: str | None = None
    consent_version: str | None = None
    consented_at: datetime | None = None
    page_url: str | None = None
    utm: dict[str, str] = field(default_factory=dict)


def normalize_email(value: str) -> str:
    """The form the ``leads`` table keys on: syntax-checked, normalized, and lower-cased as a whole,
    since people type their address in any case and expect to be recognised."""
    info = validate_email(value, check_deliverability=False)
    return info.normalized.lower()


def normalize_phone(value: str, region: str = "") -> str:
    """E.164 (``+4930123456``); ``region`` is the country assumed for numbers without ``+country``.
    Raises ``ValueError`` with a message fit for the visitor."""
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise ValueError("include the country code, e.g. +1 555 123 4567") from None
        raise ValueError("this does not look like a phone number") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise ValueError("this phone number is not valid")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _bad_text(value: str, *, multiline: bool = False) -> str | None:
    allowed = ("\n", "\r", "\t") if multiline else ()
    for ch in value:
        if ch in allowed:
            continue
        category = unicodedata.category(ch)
        if category == "Cs":
            return "contains characters that are not valid text"
        if category == "Cc":
            return "must not contain control characters"
    return None


def _text(value: Any, limit: int) -> tuple[str | None, str | None]:
    """(cleaned value or None when empty, error message or None)."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, "must be a string"
    value = value.strip()
    if not value:
        return None, None
    problem = _bad_text(value)
    if problem:
        return None, problem
    if len(value) > limit:
        return None, f"at most {limit} characters"
    return value, None


def _page_url(value: Any) -> tuple[str | None, str | None]:
    text, problem = _text(value, MAX_PAGE_URL_LENGTH)
    if problem or text is None:
        return None, problem
    try:
        parts = urlsplit(text)
    except ValueError:
        return None, "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None, "must be an http(s) URL"
    return text, None


def validate_lead(
    form: LeadForm,
    fields: Mapping[str, Any],
    *,
    consent: bool = False,
    page_url: Any = None,
    utm: Mapping[str, Any] | None = None,
    now: datetime,
) -> ValidLead:
    """Check a submission against the bot's form; ``LeadValidationError`` lists every problem.

    Fields are those the form names (``email``, ``name``, ``phone``, ``company``, ``custom:<key>``); any
    other is refused rather than silently dropped, so a misconfigured widget is noticed. Empty values
    count as not sent, which a required field may not be.
    """
    errors: dict[str, str] = {}
    in_form = {f.name: f for f in form.fields}
    values: dict[str, str] = {}
    for name, raw in fields.items():
        if name not in in_form:
            errors[name] = "this form has no such field"
            continue
        limit = _MAX_LENGTH.get(name, MAX_CUSTOM_LENGTH)
        text, problem = _text(raw, limit)
        if problem:
            errors[name] = problem
        elif text is not None:
            values[name] = text
    for name, spec in in_form.items():
        if spec.required and name not in values and name not in errors:
            errors[name] = "required"

    email = None
    if "email" in values:
        try:
            email = normalize_email(values["email"])
        except EmailNotValidError as exc:
            errors["email"] = str(exc)
    phone = None
    if "phone" in values:
        try:
            phone = normalize_phone(values["phone"], form.phone_region)
        except ValueError as exc:
            errors["phone"] = str(exc)

    consent_text = consent_version = None
    consented_at = None
    if form.consent_text:
        if consent is not True:
            errors["consent"] = "accept the terms to send your details"
        else:
            consent_text, consent_version, consented_at = form.consent_text, form.consent_version, now

    url, problem = _page_url(page_url)
    if problem:
        errors["page_url"] = problem

    utm_values: dict[str, str] = {}
    if utm is not None and not isinstance(utm, Mapping):
        errors["utm"] = "must be an object of utm_* parameters"
    for key, raw in utm.items() if isinstance(utm, Mapping) else ():
        if key not in UTM_KEYS:
            errors[f"utm.{key}"] = f"not a UTM parameter; use {', '.join(UTM_KEYS)}"
            continue
        text, problem = _text(raw, MAX_UTM_LENGTH)
        if problem:
            errors[f"utm.{key}"] = problem
        elif text is not None:
            utm_values[key] = text

    if errors or email is None:
        raise LeadValidationError(errors or {"email": "required"})
    return ValidLead(
        email=email,
        name=values.get("name"),
        phone=phone,
        company=values.get("company"),
        custom={name.split(":", 1)[1]: v for name, v in values.items() if name not in STANDARD_FIELDS},
        consent_text=consent_text,
        consent_version=consent_version,
        consented_at=consented_at,
        page_url=url,
        utm=utm_values,
    )
