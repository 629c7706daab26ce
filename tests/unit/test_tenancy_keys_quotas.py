"""Key formats, which rate limits a chat message counts against, what a bot's settings may be, and how a
bot's row and the deployment's defaults combine into the profile a request reads. All pure: no database."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pydantic import ValidationError

from ragbot.config import Settings
from ragbot.db.models import Bot
from ragbot.tenancy.bots import MAX_STARTERS, BotChanges, BotProfile
from ragbot.tenancy.keys import (
    ADMIN_KEY_PREFIX,
    PUBLIC_KEY_PREFIX,
    display_prefix,
    hash_key,
    new_admin_key,
    new_public_key,
)
from ragbot.tenancy.principals import AdminPrincipal, VisitorPrincipal
from ragbot.tenancy.quotas import chat_limits, session_limits

pytestmark = pytest.mark.unit

URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def _settings(**overrides: Any) -> Settings:
    """Settings with distinctive defaults, so a test can tell which side a profile value came from."""
    values: dict[str, Any] = {
        "persona": "deployment persona",
        "llm_model": "openai/deployment-model",
        "llm_fallbacks": ["openai/deployment-fallback"],
        "min_relevance": 0.2,
        "rate_visitor_per_minute": 20,
        "rate_ip_per_minute": 60,
        "daily_message_budget": 10000,
    }
    return Settings(**{**values, **overrides})


# --------------------------------------------------------------------------- keys


def test_admin_keys_carry_256_random_bits_behind_their_prefix() -> None:
    keys = {new_admin_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(ADMIN_KEY_PREFIX) and ADMIN_KEY_PREFIX == "rb_"
        body = key.removeprefix(ADMIN_KEY_PREFIX)
        assert len(body) == 43 and URLSAFE.match(body)  # token_urlsafe(32): 32 bytes, base64url
        assert "." not in key  # never mistaken for a JWT by the bearer dispatch


def test_public_keys_are_shorter_but_unguessable() -> None:
    keys = {new_public_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(PUBLIC_KEY_PREFIX) and PUBLIC_KEY_PREFIX == "pk_"
        body = key.removeprefix(PUBLIC_KEY_PREFIX)
        assert len(body) == 24 and URLSAFE.match(body)  # token_urlsafe(18): 144 bits
        assert len(key) <= 64  # fits the bots.public_key column


def test_hash_key_is_the_sha256_hex_of_the_key() -> None:
    key = new_admin_key()
    digest = hash_key(key)
    assert digest == hashlib.sha256(key.encode("utf-8")).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2
    assert hash_key(key) == digest and hash_key(key + "x") != digest


def test_the_display_prefix_names_the_kind_and_reveals_little() -> None:
    key = new_admin_key()
    prefix = display_prefix(key)
    assert prefix == key[:10] and prefix.startswith("rb_")
    assert len(prefix) <= 16  # the api_keys.prefix column
    assert len(prefix) - len(ADMIN_KEY_PREFIX) <= 7  # 42 bits at most of 256 shown


# --------------------------------------------------------------------------- quotas


def _profile(**overrides: Any) -> BotProfile:
    return BotProfile.of(Bot(id="acme-1", name="Acme"), _settings(**overrides))


def test_a_visitor_message_counts_per_visitor_per_ip_and_against_the_daily_budget_last() -> None:
    """The daily budget comes last: a message refused per minute must not spend the day's budget."""
    limits = chat_limits(_profile(), VisitorPrincipal(bot_id="acme-1", visitor_id="v_1"), "203.0.113.7")
    assert [limit.scope for limit in limits] == ["visitor", "ip", "bot_daily"]
    visitor, ip, daily = limits
    assert (visitor.key, visitor.amount, visitor.per_seconds) == ("visitor:acme-1:v_1", 20, 60)
    assert (ip.key, ip.amount, ip.per_seconds) == ("ip:acme-1:203.0.113.7", 60, 60)
    assert (daily.key, daily.amount, daily.per_seconds) == ("day:acme-1", 10000, 86400)


def test_a_visitor_without_a_known_ip_skips_the_ip_limit() -> None:
    limits = chat_limits(_profile(), VisitorPrincipal(bot_id="acme-1", visitor_id="v_1"), None)
    assert [limit.scope for limit in limits] == ["visitor", "bot_daily"]


def test_an_admin_message_only_counts_against_the_daily_budget() -> None:
    """Server-to-server traffic has no visitor; one IP (the customer's backend) must not be throttled."""
    admin = AdminPrincipal(key_id="k", name="backend", prefix="rb_abcdefg", bot_id=None)
    for ip in ("198.51.100.1", None):
        limits = chat_limits(_profile(), admin, ip)
        assert [(limit.scope, limit.key) for limit in limits] == [("bot_daily", "day:acme-1")]


def test_limits_are_per_bot_and_per_visitor() -> None:
    visitor_a = chat_limits(_profile(), VisitorPrincipal(bot_id="acme-1", visitor_id="v_a"), "10.0.0.1")
    visitor_b = chat_limits(_profile(), VisitorPrincipal(bot_id="acme-1", visitor_id="v_b"), "10.0.0.1")
    assert visitor_a[0].key != visitor_b[0].key
    assert visitor_a[1:] == visitor_b[1:]  # same IP, same bot: shared counters
    other_bot = BotProfile.of(Bot(id="other", name="Other"), _settings())
    elsewhere = chat_limits(other_bot, VisitorPrincipal(bot_id="other", visitor_id="v_a"), "10.0.0.1")
    assert not {limit.key for limit in elsewhere} & {limit.key for limit in visitor_a}


def test_a_bots_own_amounts_replace_the_deployments() -> None:
    bot = Bot(
        id="acme-1", name="Acme", rate_visitor_per_minute=3, rate_ip_per_minute=0, daily_message_budget=50
    )
    profile = BotProfile.of(bot, _settings())
    limits = chat_limits(profile, VisitorPrincipal(bot_id="acme-1", visitor_id="v"), "10.0.0.1")
    assert [limit.amount for limit in limits] == [3, 0, 50]  # 0: unlimited, kept as set


def test_session_opening_is_capped_per_ip_and_bot() -> None:
    (limit,) = session_limits("acme-1", "10.0.0.1", 30)
    assert (limit.scope, limit.key, limit.amount, limit.per_seconds) == (
        "session_ip",
        "session:acme-1:10.0.0.1",
        30,
        60,
    )
    assert session_limits("acme-1", None, 30)[0].key == "session:acme-1:-"


# --------------------------------------------------------------------------- BotChanges


@pytest.mark.parametrize(
    ("given", "stored"), [("#ABC", "#abc"), ("#2563EB", "#2563eb"), ("#000000", "#000000")]
)
def test_accent_colours_are_hex_and_lower_cased(given: str, stored: str) -> None:
    assert BotChanges(accent_color=given).accent_color == stored


@pytest.mark.parametrize("colour", ["red", "#12", "#1234", "#12345g", "2563eb", "#2563eb;", "#2563eb\n", ""])
def test_other_accent_colours_are_refused(colour: str) -> None:
    """The colour reaches the widget's CSS: anything but a hex colour could inject style."""
    with pytest.raises(ValidationError, match="accent_color"):
        BotChanges(accent_color=colour)


@pytest.mark.parametrize("policy", ["match", "de", "en", "fil"])
def test_language_policy_is_match_or_an_iso_code(policy: str) -> None:
    assert BotChanges(language_policy=policy).language_policy == policy


@pytest.mark.parametrize("policy", ["DE", "en-US", "english", "e", "", "deutsch", "de\n", "match\n"])
def test_other_language_policies_are_refused(policy: str) -> None:
    with pytest.raises(ValidationError, match="language_policy"):
        BotChanges(language_policy=policy)


def test_starter_questions_are_trimmed_and_blank_ones_dropped() -> None:
    changes = BotChanges(starter_questions=["  How do I start?  ", "", "   ", "Pricing?"])
    assert changes.starter_questions == ["How do I start?", "Pricing?"]


def test_at_most_six_starter_questions_of_200_characters() -> None:
    assert MAX_STARTERS == 6
    assert len(BotChanges(starter_questions=[f"q{i}" for i in range(6)]).starter_questions or []) == 6
    with pytest.raises(ValidationError, match="starter_questions"):
        BotChanges(starter_questions=[f"q{i}" for i in range(7)])
    assert BotChanges(starter_questions=["x" * 200]).starter_questions == ["x" * 200]
    with pytest.raises(ValidationError, match="200 characters"):
        BotChanges(starter_questions=["ok", "x" * 201])


def test_allowed_origins_are_normalised() -> None:
    changes = BotChanges(
        allowed_origins=["HTTPS://WWW.Acme.test:443/pricing", "https://www.acme.test", "https://*.acme.test"]
    )
    assert changes.allowed_origins == ["https://www.acme.test", "https://*.acme.test"]
    assert BotChanges(allowed_origins=[]).allowed_origins == []


@pytest.mark.parametrize("origin", ["www.acme.test", "ftp://acme.test", "https://*.test", "null"])
def test_an_invalid_origin_refuses_the_change(origin: str) -> None:
    with pytest.raises(ValidationError, match="allowed_origins"):
        BotChanges(allowed_origins=["https://ok.acme.test", origin])


def test_unknown_fields_are_refused_not_ignored() -> None:
    """A misspelt setting silently dropped would look applied to the admin who sent it."""
    with pytest.raises(ValidationError, match="extra"):
        BotChanges.model_validate({"welcome": "hi"})
    with pytest.raises(ValidationError):
        BotChanges.model_validate({"public_key": "pk_mine"})  # rotated, never set
    with pytest.raises(ValidationError):
        BotChanges.model_validate({"id": "another-id"})


def test_only_the_fields_given_count_as_changed() -> None:
    """``null`` and "left out" differ: the first resets to the default, the second keeps the value."""
    changes = BotChanges.model_validate({"persona": None, "welcome_message": "Hi"})
    assert changes.model_fields_set == {"persona", "welcome_message"}


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"min_relevance": 1.5},
        {"min_relevance": -1.5},
        {"rate_visitor_per_minute": -1},
        {"rate_ip_per_minute": -1},
        {"daily_message_budget": -1},
        {"persona": "x" * 4001},
    ],
)
def test_out_of_range_settings_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BotChanges.model_validate(body)


# --------------------------------------------------------------------------- BotProfile


def test_a_profile_takes_the_deployments_defaults_where_the_bot_sets_nothing() -> None:
    settings = _settings()
    bot = Bot(id="acme-1", name="Acme", public_key="pk_x")  # a row whose nullable settings are NULL
    profile = BotProfile.of(bot, settings)
    assert profile.title == "Acme"  # the widget header defaults to the name
    assert profile.persona == "deployment persona"
    assert profile.llm_model == "openai/deployment-model"
    assert profile.llm_fallbacks == ("openai/deployment-fallback",)
    assert profile.min_relevance == 0.2
    assert (profile.rate_visitor_per_minute, profile.rate_ip_per_minute, profile.daily_message_budget) == (
        20,
        60,
        10000,
    )
    assert profile.accent_color == "#2563eb"
    assert profile.language_policy == "match"
    assert profile.starter_questions == () and profile.allowed_origins == ()
    assert profile.public_key == "pk_x"


def test_a_bots_own_settings_win_even_when_falsy() -> None:
    """0, 0.0 and [] are choices ("unlimited", "no floor", "no fallbacks"), not "unset"."""
    bot = Bot(
        id="acme-1",
        name="Acme",
        title="Acme help",
        persona="cheerful",
        welcome_message="Hello!",
        starter_questions=["Pricing?"],
        accent_color="#ff0000",
        decline_message="Ask a human.",
        llm_model="openai/bot-model",
        llm_fallbacks=[],
        language_policy="de",
        min_relevance=0.0,
        allowed_origins=["https://www.acme.test"],
        rate_visitor_per_minute=0,
        rate_ip_per_minute=0,
        daily_message_budget=0,
    )
    profile = BotProfile.of(bot, _settings())
    assert profile.title == "Acme help"
    assert profile.persona == "cheerful"
    assert profile.welcome_message == "Hello!"
    assert profile.starter_questions == ("Pricing?",)
    assert profile.accent_color == "#ff0000"
    assert profile.decline_message == "Ask a human."
    assert profile.llm_model == "openai/bot-model"
    assert profile.llm_fallbacks == ()
    assert profile.language_policy == "de"
    assert profile.min_relevance == 0.0
    assert profile.allowed_origins == ("https://www.acme.test",)
    assert (profile.rate_visitor_per_minute, profile.rate_ip_per_minute, profile.daily_message_budget) == (
        0,
        0,
        0,
    )


def test_a_deployment_without_a_relevance_floor_gives_bots_none() -> None:
    profile = BotProfile.of(Bot(id="acme-1", name="Acme"), _settings(min_relevance=None))
    assert profile.min_relevance is None


def test_the_default_profile_is_the_deployments() -> None:
    profile = BotProfile.default("default", _settings())
    assert (profile.id, profile.name, profile.title) == ("default", "default", "default")
    assert profile.public_key is None
    assert profile.llm_model == "openai/deployment-model"
