"""Lead form validation, offline: email syntax (never a DNS lookup), E.164 phones, required and unknown
fields, custom fields, consent, page URL and UTM parameters, all problems reported per field at once."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from ragbot.leads.form import LeadField, LeadForm
from ragbot.leads.validation import (
    LeadValidationError,
    ValidLead,
    normalize_email,
    normalize_phone,
    validate_lead,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _form(**extra: Any) -> LeadForm:
    fields = [
        LeadField(name="email"),
        LeadField(name="name", required=True),
        LeadField(name="phone"),
        LeadField(name="company"),
        LeadField(name="custom:order_id"),
    ]
    return LeadForm(fields=fields, **extra)


def _errors(form: LeadForm, fields: dict[str, Any], **kw: Any) -> dict[str, str]:
    with pytest.raises(LeadValidationError) as caught:
        validate_lead(form, fields, now=NOW, **kw)
    return caught.value.fields


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Email checks are syntax only: any name lookup fails the test."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("validation tried a DNS lookup")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)


def test_a_valid_submission_is_normalized() -> None:
    lead = validate_lead(
        _form(phone_region="DE"),
        {
            "email": "  Jane.Doe@Example.COM ",
            "name": " Jane Doe ",
            "phone": "030 1234567",
            "company": "Acme",
            "custom:order_id": "A-17",
        },
        page_url="https://shop.acme.io/pricing?x=1",
        utm={"utm_source": "newsletter", "utm_campaign": "spring"},
        now=NOW,
    )
    assert lead == ValidLead(
        email="jane.doe@example.com",
        name="Jane Doe",
        phone="+49301234567",
        company="Acme",
        custom={"order_id": "A-17"},
        page_url="https://shop.acme.io/pricing?x=1",
        utm={"utm_source": "newsletter", "utm_campaign": "spring"},
    )
    assert lead.consented_at is None  # the form has no consent text


def test_phone_numbers_become_e164_with_or_without_a_default_region() -> None:
    assert normalize_phone("+1 (415) 555-2671") == "+14155552671"
    assert normalize_phone("+44 20 7946 0958", "DE") == "+442079460958"  # an explicit country wins
    assert normalize_phone("(415) 555-2671", "US") == "+14155552671"
    with pytest.raises(ValueError, match="country code"):
        normalize_phone("030 1234567")  # no region, no +: which country?
    with pytest.raises(ValueError, match="not valid"):
        normalize_phone("+49 12")
    with pytest.raises(ValueError, match="phone number"):
        normalize_phone("call me maybe", "US")


def test_emails_are_checked_for_syntax_and_compared_case_insensitively() -> None:
    assert normalize_email("Jane@ACME.io") == normalize_email("jane@acme.io") == "jane@acme.io"
    errors = _errors(_form(), {"email": "jane@", "name": "J"})
    assert set(errors) == {"email"} and errors["email"]
    assert "email" in _errors(_form(), {"email": "jane@localhost.test", "name": "J"})  # reserved domain


def test_every_problem_is_reported_per_field_at_once() -> None:
    errors = _errors(
        _form(phone_region="US"),
        {"email": "not-an-email", "phone": "12", "favourite_colour": "blue", "company": 42},
        page_url="javascript:alert(1)",
        utm={"utm_source": "x" * 300, "ref": "partner"},
    )
    assert set(errors) == {
        "email",
        "name",
        "phone",
        "favourite_colour",
        "company",
        "page_url",
        "utm.utm_source",
        "utm.ref",
    }
    assert errors["name"] == "required"
    assert errors["favourite_colour"] == "this form has no such field"
    assert errors["company"] == "must be a string"
    assert "http" in errors["page_url"]


def test_empty_values_count_as_not_sent() -> None:
    lead = validate_lead(_form(), {"email": "a@acme.io", "name": "A", "phone": "  ", "company": ""}, now=NOW)
    assert (lead.phone, lead.company, lead.custom) == (None, None, {})
    assert _errors(_form(), {"email": "a@acme.io", "name": "   "}) == {"name": "required"}
    assert _errors(_form(), {"name": "A"}) == {"email": "required"}


def test_consent_is_required_and_recorded_when_the_form_has_consent_text() -> None:
    form = _form(consent_text="You may email me about my request.", consent_version="2025-01")
    base = {"email": "a@acme.io", "name": "A"}
    assert _errors(form, base) == {"consent": "accept the terms to send your details"}
    lead = validate_lead(form, base, consent=True, now=NOW)
    assert (lead.consent_text, lead.consent_version, lead.consented_at) == (
        "You may email me about my request.",
        "2025-01",
        NOW,
    )


def test_text_limits_and_control_characters() -> None:
    base = {"email": "a@acme.io", "name": "A"}
    assert "at most" in _errors(_form(), {**base, "name": "x" * 201})["name"]
    assert "control" in _errors(_form(), {**base, "company": "Acme\x00Corp"})["company"]
    assert "valid text" in _errors(_form(), {**base, "company": "Acme\ud800"})["company"]
    assert "at most" in _errors(_form(), base, page_url="https://acme.io/" + "a" * 2000)["page_url"]
    assert _errors(_form(), base, utm=["utm_source"])["utm"]  # type: ignore[arg-type]


def test_the_form_checks_its_phone_region() -> None:
    assert _form(phone_region="de").phone_region == "DE"
    with pytest.raises(ValidationError, match="phone_region"):
        _form(phone_region="XX")
    assert LeadForm.model_validate({"fields": [{"name": "email"}]}).phone_region == ""  # older forms
