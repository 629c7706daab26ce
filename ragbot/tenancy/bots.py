"""Bots: create, read, change (audited), rotate the widget key, delete with everything they own.

``BotProfile`` is what a request reads: the bot's row with the deployment's defaults filled in where the
bot overrides nothing, so per-bot settings never leak into the process-wide ``Settings``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session, sessionmaker

from ragbot.config import Settings
from ragbot.db import bots as bots_sql
from ragbot.db import repositories as repo
from ragbot.db.models import Bot, utcnow
from ragbot.db.retry import retrying
from ragbot.db.session import session_scope
from ragbot.handoff.hours import InvalidOfficeHoursError, check_office_hours
from ragbot.leads.form import LeadForm
from ragbot.tenancy.keys import new_public_key
from ragbot.tenancy.origins import InvalidOriginError, normalize_origins

__all__ = [
    "BotChanges",
    "BotNotFoundError",
    "BotProfile",
    "BotService",
    "InvalidBotSettingError",
    "bot_to_dict",
]

_ACCENT = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_LANGUAGE = re.compile(r"^(?:match|[a-z]{2,3})$")
MAX_STARTERS = 6


class BotNotFoundError(LookupError):
    pass


class InvalidBotSettingError(ValueError):
    """A setting a bot cannot have (an origin that is none, a model the deployment does not allow...)."""


#: Rates and budgets fit a 32-bit integer column on every database.
MAX_RATE = 2_147_483_647


class BotChanges(BaseModel):
    """Settings a caller may set on a bot; a field left out keeps its value, ``null`` restores the
    deployment's default where there is one. Unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    title: str | None = Field(default=None, max_length=200, description="Widget header; default: the name.")
    persona: str | None = Field(default=None, max_length=4000, description="Tone/persona for the prompt.")
    welcome_message: str | None = Field(default=None, max_length=2000)
    starter_questions: list[str] | None = Field(default=None, max_length=MAX_STARTERS)
    accent_color: str | None = Field(default=None, description="#rgb or #rrggbb")
    decline_message: str | None = Field(
        default=None, max_length=2000, description="What the bot says when it cannot answer from its content."
    )
    llm_model: str | None = Field(default=None, max_length=200, description="One the deployment allows.")
    llm_fallbacks: list[str] | None = None
    language_policy: str | None = Field(
        default=None, description="'match' (answer in the visitor's language) or an ISO 639-1 code."
    )
    min_relevance: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="A fixed floor on the dense cosine; null: calibrated on the bot's own content.",
    )
    answer_max_words: int | None = Field(
        default=None, ge=10, le=1000, description="Answer length limit in words; null: the deployment's."
    )
    allowed_origins: list[str] | None = Field(
        default=None, description="Sites the widget may run on, e.g. https://www.example.com; empty: none."
    )
    rate_visitor_per_minute: int | None = Field(default=None, ge=0, le=MAX_RATE, description="0: unlimited.")
    rate_ip_per_minute: int | None = Field(default=None, ge=0, le=MAX_RATE, description="0: unlimited.")
    daily_message_budget: int | None = Field(default=None, ge=0, le=MAX_RATE, description="0: unlimited.")
    handoff_enabled: bool | None = Field(default=None, description="Visitors can reach a person.")
    handoff_after_ungrounded: int | None = Field(
        default=None, ge=0, le=20, description="Hand over after N answers in a row the bot could not ground."
    )
    handoff_after_thumbs_down: int | None = Field(
        default=None, ge=0, le=20, description="Hand over after N thumbs-down in a row; 0: never."
    )
    handoff_on_llm_outage: bool | None = Field(
        default=None, description="Queue for a person instead of failing when the LLM is down."
    )
    agent_claim_timeout_s: int | None = Field(
        default=None, ge=10, le=86400, description="Offer the lead form when no agent claims in time."
    )
    office_hours: dict[str, Any] | None = Field(
        default=None, description='{"timezone": "Europe/Berlin", "days": {"mon": ["09:00", "17:00"]}}'
    )
    lead_form: LeadForm | None = Field(default=None, description="Contact form; null: none.")
    retention_days: int | None = Field(
        default=None, ge=1, le=3650, description="Delete conversations and leads older than this; null: keep."
    )
    redact_questions: bool | None = Field(
        default=None,
        description="Mask emails, phone and card numbers in what visitors type before storing it.",
    )

    @field_validator("office_hours")
    @classmethod
    def _hours(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            return check_office_hours(value)
        except InvalidOfficeHoursError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name must not be blank")
        return value.strip() if value is not None else None

    @field_validator("accent_color")
    @classmethod
    def _accent(cls, value: str | None) -> str | None:
        if value is not None and not _ACCENT.fullmatch(value):
            raise ValueError("accent_color must be #rgb or #rrggbb")
        return value.lower() if value else value

    @field_validator("language_policy")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and not _LANGUAGE.fullmatch(value):
            raise ValueError("language_policy must be 'match' or a lower-case ISO 639 code such as 'de'")
        return value

    @field_validator("starter_questions")
    @classmethod
    def _starters(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [q.strip() for q in value if q.strip()]
        if any(len(q) > 200 for q in cleaned):
            raise ValueError("a starter question has at most 200 characters")
        return cleaned

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        try:
            return normalize_origins(value)
        except InvalidOriginError as exc:
            raise ValueError(str(exc)) from None


#: Fields whose ``null`` means "the deployment's default" (the rest fall back to an empty value).
_NULLABLE = {
    "retention_days",
    "office_hours",
    "lead_form",
    "llm_model",
    "llm_fallbacks",
    "min_relevance",
    "answer_max_words",
    "rate_visitor_per_minute",
    "rate_ip_per_minute",
    "daily_message_budget",
}
_EMPTY: dict[str, Any] = {
    "title": "",
    "persona": "",
    "welcome_message": "",
    "starter_questions": [],
    "accent_color": "#2563eb",
    "decline_message": "",
    "language_policy": "match",
    "allowed_origins": [],
    "handoff_enabled": True,
    "handoff_after_ungrounded": 0,
    "handoff_after_thumbs_down": 0,
    "handoff_on_llm_outage": False,
    "agent_claim_timeout_s": 300,
    "redact_questions": False,
}


@dataclass(frozen=True, slots=True)
class BotProfile:
    """A bot's effective settings for one request."""

    id: str
    name: str
    title: str
    persona: str
    welcome_message: str
    starter_questions: tuple[str, ...]
    accent_color: str
    decline_message: str
    llm_model: str
    llm_fallbacks: tuple[str, ...]
    language_policy: str
    min_relevance: float | None
    public_key: str | None
    allowed_origins: tuple[str, ...]
    rate_visitor_per_minute: int
    rate_ip_per_minute: int
    daily_message_budget: int
    handoff_enabled: bool = True
    handoff_after_ungrounded: int = 0
    handoff_after_thumbs_down: int = 0
    handoff_on_llm_outage: bool = False
    agent_claim_timeout_s: int = 300
    office_hours: dict[str, Any] | None = None
    lead_form: LeadForm | None = None
    retention_days: int | None = None
    redact_questions: bool = False
    answer_max_words: int = 80

    @classmethod
    def of(cls, bot: Bot, settings: Settings) -> BotProfile:
        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return cls(
            id=bot.id,
            name=bot.name,
            title=bot.title or bot.name,
            persona=bot.persona or settings.persona,
            welcome_message=bot.welcome_message,
            starter_questions=tuple(bot.starter_questions or ()),
            accent_color=bot.accent_color or "#2563eb",
            decline_message=bot.decline_message,
            llm_model=bot.llm_model or settings.llm_model,
            llm_fallbacks=tuple(pick(bot.llm_fallbacks, settings.llm_fallbacks)),
            language_policy=bot.language_policy or "match",
            min_relevance=pick(bot.min_relevance, settings.min_relevance),
            public_key=bot.public_key,
            allowed_origins=tuple(bot.allowed_origins or ()),
            rate_visitor_per_minute=pick(bot.rate_visitor_per_minute, settings.rate_visitor_per_minute),
            rate_ip_per_minute=pick(bot.rate_ip_per_minute, settings.rate_ip_per_minute),
            daily_message_budget=pick(bot.daily_message_budget, settings.daily_message_budget),
            handoff_enabled=pick(bot.handoff_enabled, True),
            handoff_after_ungrounded=pick(bot.handoff_after_ungrounded, 0),
            handoff_after_thumbs_down=pick(bot.handoff_after_thumbs_down, 0),
            handoff_on_llm_outage=pick(bot.handoff_on_llm_outage, False),
            agent_claim_timeout_s=pick(bot.agent_claim_timeout_s, 300),
            office_hours=bot.office_hours,
            lead_form=LeadForm.model_validate(bot.lead_form) if bot.lead_form else None,
            retention_days=bot.retention_days,
            redact_questions=bool(bot.redact_questions),
            answer_max_words=pick(bot.answer_max_words, settings.answer_max_words),
        )

    @classmethod
    def default(cls, bot_id: str, settings: Settings) -> BotProfile:
        """The profile of a bot that has no row yet (the CLI's first use of the deployment's bot)."""
        return cls.of(Bot(id=bot_id, name=bot_id), settings)


def bot_to_dict(bot: Bot) -> dict[str, Any]:
    """The bot as stored (``null``: the deployment's default applies)."""
    return {
        "id": bot.id,
        "name": bot.name,
        "title": bot.title,
        "persona": bot.persona,
        "welcome_message": bot.welcome_message,
        "starter_questions": list(bot.starter_questions or []),
        "accent_color": bot.accent_color,
        "decline_message": bot.decline_message,
        "llm_model": bot.llm_model,
        "llm_fallbacks": bot.llm_fallbacks,
        "language_policy": bot.language_policy,
        "min_relevance": bot.min_relevance,
        "answer_max_words": bot.answer_max_words,
        "public_key": bot.public_key,
        "allowed_origins": list(bot.allowed_origins or []),
        "rate_visitor_per_minute": bot.rate_visitor_per_minute,
        "rate_ip_per_minute": bot.rate_ip_per_minute,
        "daily_message_budget": bot.daily_message_budget,
        "handoff_enabled": bot.handoff_enabled,
        "handoff_after_ungrounded": bot.handoff_after_ungrounded,
        "handoff_after_thumbs_down": bot.handoff_after_thumbs_down,
        "handoff_on_llm_outage": bot.handoff_on_llm_outage,
        "agent_claim_timeout_s": bot.agent_claim_timeout_s,
        "office_hours": bot.office_hours,
        "lead_form": bot.lead_form,
        "retention_days": bot.retention_days,
        "redact_questions": bool(bot.redact_questions),
        "created_at": bot.created_at,
        "updated_at": bot.updated_at,
        "updated_by": bot.updated_by,
    }


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug or "bot"


_T = TypeVar("_T")


class BotService:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings

    # ------------------------------------------------------------------ reads
    def _read(self, read: Callable[[Session], _T]) -> _T:
        """One read, waiting out a database restart (``db_retry_s``) as a chat turn's writes do: the chat,
        search and widget-session routes read the bot first, and a visitor's message must not be refused
        for the second or two a restart takes."""
        for attempt in retrying(self._settings.db_retry_s):
            with attempt, session_scope(self._sessions) as s:
                return read(s)
        raise AssertionError("unreachable: retrying() raises the last error when it gives up")

    def get(self, bot_id: str) -> dict[str, Any] | None:
        if not repo.is_storable(bot_id):
            return None
        return self._read(lambda s: bot_to_dict(bot) if (bot := bots_sql.get_bot(s, bot_id)) else None)

    def list_bots(self, bot_ids: list[str] | None = None) -> list[dict[str, Any]]:
        with session_scope(self._sessions) as s:
            return [bot_to_dict(b) for b in bots_sql.list_bots(s, bot_ids)]

    def profile(self, bot_id: str) -> BotProfile | None:
        if not repo.is_storable(bot_id):
            return None
        return self._read(lambda s: self._profile(bots_sql.get_bot(s, bot_id)))

    def profile_by_public_key(self, public_key: str) -> BotProfile | None:
        if not repo.is_storable(public_key):
            return None
        return self._read(lambda s: self._profile(bots_sql.get_bot_by_public_key(s, public_key)))

    def _profile(self, bot: Bot | None) -> BotProfile | None:
        return BotProfile.of(bot, self._settings) if bot else None

    def audit(self, bot_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with session_scope(self._sessions) as s:
            return [
                {"action": a.action, "actor": a.actor, "changes": a.changes, "at": a.at}
                for a in bots_sql.list_audit(s, bot_id, limit)
            ]

    # ------------------------------------------------------------------ writes
    def create(self, name: str, changes: BotChanges | None = None, *, actor: str) -> dict[str, Any]:
        changes = changes or BotChanges()
        values = self._checked(changes)
        values.pop("name", None)
        with session_scope(self._sessions) as s:
            bot_id = f"{_slug(name)}-{secrets.token_hex(3)}"
            while bots_sql.get_bot(s, bot_id) is not None:
                bot_id = f"{_slug(name)}-{secrets.token_hex(3)}"
            bot = Bot(id=bot_id, name=name.strip()[:200] or bot_id, public_key=new_public_key(), **_EMPTY)
            for field, value in values.items():
                setattr(bot, field, value)
            bot.updated_at, bot.updated_by = utcnow(), actor[:200]
            s.add(bot)
            s.flush()
            created = bot_to_dict(bot)
            bots_sql.add_audit(s, bot_id, "create", actor, _jsonable({"name": bot.name, **values}))
            return created

    def ensure(self, bot_id: str, *, actor: str = "system") -> dict[str, Any]:
        """The bot, created (with a public key) when it does not exist: the deployment's default bot
        needs no setup step. A bot created before keys existed gets its public key here."""
        with session_scope(self._sessions) as s:
            bot = repo.ensure_bot(s, bot_id)
            if bot.public_key is None:
                bot.public_key = new_public_key()
                bot.updated_at, bot.updated_by = utcnow(), actor[:200]
                bots_sql.add_audit(s, bot_id, "rotate_key", actor, {"public_key": "created"})
                s.flush()
            return bot_to_dict(bot)

    def update(self, bot_id: str, changes: BotChanges, *, actor: str) -> dict[str, Any]:
        values = self._checked(changes)
        with session_scope(self._sessions) as s:
            bot = bots_sql.get_bot(s, bot_id) if repo.is_storable(bot_id) else None
            if bot is None:
                raise BotNotFoundError(bot_id)
            diff: dict[str, Any] = {}
            for field, value in values.items():
                if value is None and field not in _NULLABLE:
                    value = _EMPTY.get(field, value)
                old = getattr(bot, field)
                if old != value:
                    diff[field] = [old, value]
                    setattr(bot, field, value)
            if diff:
                bot.updated_at, bot.updated_by = utcnow(), actor[:200]
                bots_sql.add_audit(s, bot_id, "update", actor, _jsonable(diff))
            s.flush()
            return bot_to_dict(bot)

    def rotate_public_key(self, bot_id: str, *, actor: str) -> dict[str, Any]:
        """A new widget key; the old one and every visitor session opened with it stop working."""
        with session_scope(self._sessions) as s:
            bot = bots_sql.get_bot(s, bot_id) if repo.is_storable(bot_id) else None
            if bot is None:
                raise BotNotFoundError(bot_id)
            bot.public_key = new_public_key()
            bot.updated_at, bot.updated_by = utcnow(), actor[:200]
            bots_sql.add_audit(s, bot_id, "rotate_key", actor, {"public_key": "rotated"})
            s.flush()
            return bot_to_dict(bot)

    def delete(self, bot_id: str, *, actor: str, delete_vectors: Callable[[str], None]) -> dict[str, int]:
        """Remove the bot's vectors, then its rows (conversations, documents, keys, calibration...).
        Vectors go first: should the database step fail, the bot is still there and deleting it again
        finishes the job, instead of leaving points no bot owns."""
        if self.get(bot_id) is None:
            raise BotNotFoundError(bot_id)
        delete_vectors(bot_id)
        with session_scope(self._sessions) as s:
            removed = bots_sql.delete_bot_rows(s, bot_id)
            bots_sql.add_audit(s, bot_id, "delete", actor, {"removed": removed})
        return removed

    # ------------------------------------------------------------------ rules
    def _checked(self, changes: BotChanges) -> dict[str, Any]:
        """The fields the caller set, after the deployment's own rules (which models are allowed)."""
        values = {f: getattr(changes, f) for f in changes.model_fields_set}
        if isinstance(values.get("lead_form"), LeadForm):
            values["lead_form"] = values["lead_form"].model_dump()
        allowed = self.allowed_models()
        for model in [values.get("llm_model"), *(values.get("llm_fallbacks") or [])]:
            if model is not None and model not in allowed:
                choices = ", ".join(sorted(allowed))
                raise InvalidBotSettingError(
                    f"model {model!r} is not allowed on this deployment; choose from: {choices} "
                    "(operators add more with RAGBOT_ALLOWED_LLM_MODELS)"
                )
        if "name" in values and values["name"] is None:
            raise InvalidBotSettingError("name cannot be null")
        return values

    def allowed_models(self) -> set[str]:
        s = self._settings
        return {s.llm_model, *s.llm_fallbacks, *s.allowed_llm_models}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
