"""A bot's lead form: which fields, which are required, the consent text and its version, and when the
backend offers it. Stored as JSON on the bot; this model is its only reader and writer."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["STANDARD_FIELDS", "LeadField", "LeadForm", "ask_after_messages"]

STANDARD_FIELDS = ("email", "name", "phone", "company")
_CUSTOM = re.compile(r"^custom:[a-z][a-z0-9_]{0,39}$")
_ASK = re.compile(r"^(before_chat|on_handoff|no_agent|after_messages:[1-9][0-9]?)$")


class LeadField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="email, name, phone, company, or custom:<key>")
    label: str = Field(default="", max_length=100)
    required: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value not in STANDARD_FIELDS and not _CUSTOM.match(value):
            raise ValueError(f"field {value!r}: use {', '.join(STANDARD_FIELDS)} or custom:<lowercase_key>")
        return value


class LeadForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[LeadField] = Field(min_length=1, max_length=12)
    consent_text: str = Field(default="", max_length=2000)
    consent_version: str = Field(default="", max_length=40)
    ask: list[str] = Field(
        default_factory=lambda: ["on_handoff", "no_agent"],
        description="before_chat | on_handoff | no_agent | after_messages:N",
    )
    title: str = Field(default="Leave your details and we'll get back to you", max_length=200)
    phone_region: str = Field(
        default="",
        max_length=2,
        description="ISO 3166 alpha-2 region (e.g. DE) for phone numbers written without +country code",
    )

    @field_validator("ask")
    @classmethod
    def _ask(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _ASK.match(item):
                raise ValueError(f"ask {item!r}: use before_chat, on_handoff, no_agent or after_messages:N")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers  # lazily: most processes read forms without ever checking a region

        value = value.strip().upper()
        if value and value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"phone_region {value!r}: use an ISO 3166 alpha-2 code such as DE or US")
        return value

    @model_validator(mode="after")
    def _email_is_there(self) -> LeadForm:
        names = [f.name for f in self.fields]
        if "email" not in names:
            raise ValueError("a lead form needs an email field (leads are kept once per email)")
        if len(set(names)) != len(names):
            raise ValueError("a field appears twice")
        for f in self.fields:
            if f.name == "email":
                f.required = True
        if self.consent_text and not self.consent_version:
            raise ValueError("give consent_version with consent_text, so each lead records what it agreed to")
        return self

    def asks(self, when: Literal["before_chat", "on_handoff", "no_agent"]) -> bool:
        return when in self.ask


def ask_after_messages(form: LeadForm | None) -> int | None:
    """After how many visitor messages the form is offered, if the bot asks for that."""
    if form is None:
        return None
    for item in form.ask:
        if item.startswith("after_messages:"):
            return int(item.split(":", 1)[1])
    return None
