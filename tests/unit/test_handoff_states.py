"""The pure parts of handoff: the transition table, "I want a person" in words, and office hours.

The table is checked pair by pair against the lifecycle the issue describes (bot -> pending_human ->
human -> resolved, back to the bot only by an explicit release), so a new row cannot slip in unnoticed.
The intent matcher must catch explicit requests in four languages and stay silent on questions that
merely mention agents, people or handoff: a false positive silences the bot. Office hours are checked at
their boundaries, across time zones and days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ragbot.handoff.hours import InvalidOfficeHoursError, check_office_hours, is_open
from ragbot.handoff.intent import asks_for_human
from ragbot.handoff.states import TRANSITIONS, Action, IllegalTransitionError, next_mode
from ragbot.types import OwnerMode

pytestmark = pytest.mark.unit

B, P, H, R = OwnerMode.BOT, OwnerMode.PENDING_HUMAN, OwnerMode.HUMAN, OwnerMode.RESOLVED

#: The lifecycle from the issue, written out independently of the product's table.
EXPECTED: dict[tuple[OwnerMode, Action], OwnerMode] = {
    (B, Action.REQUEST): P,  # someone asks for a person
    (P, Action.CLAIM): H,  # an agent takes it
    (H, Action.CLAIM): H,  # reassigned to another agent
    (P, Action.RESOLVE): R,
    (H, Action.RESOLVE): R,
    (R, Action.REQUEST): P,  # the visitor writes again after it was resolved
    (R, Action.REOPEN): H,  # an agent opens it again
    (P, Action.RELEASE): B,  # the only ways back to the bot
    (H, Action.RELEASE): B,
    (R, Action.RELEASE): B,
}
ALL_PAIRS = [(mode, action) for mode in OwnerMode for action in Action]


# --------------------------------------------------------------------------- the transition table


def test_the_table_is_exactly_the_issues_lifecycle() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("mode", "action"), ALL_PAIRS, ids=[f"{m.value}-{a.value}" for m, a in ALL_PAIRS])
def test_every_pair_either_leads_where_the_table_says_or_is_illegal(mode: OwnerMode, action: Action) -> None:
    if (mode, action) in EXPECTED:
        assert next_mode(mode, action) is EXPECTED[(mode, action)]
        assert next_mode(mode.value, action.value) is EXPECTED[(mode, action)], "plain strings work too"
        return
    with pytest.raises(IllegalTransitionError) as caught:
        next_mode(mode, action)
    assert caught.value.mode is mode and caught.value.action is action
    assert mode.value in str(caught.value) and action.value in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_back_to_the_bot_only_by_release() -> None:
    into_bot = {action for (mode, action), after in TRANSITIONS.items() if after is B and mode is not B}
    assert into_bot == {Action.RELEASE}
    assert all((B, action) not in TRANSITIONS for action in Action if action is not Action.REQUEST)


def test_the_happy_path_walks_the_whole_lifecycle() -> None:
    mode = B
    for action, expected in [
        (Action.REQUEST, P),
        (Action.CLAIM, H),
        (Action.RESOLVE, R),
        (Action.REQUEST, P),
        (Action.CLAIM, H),
        (Action.RELEASE, B),
    ]:
        mode = next_mode(mode, action)
        assert mode is expected


def test_unknown_modes_and_actions_are_refused() -> None:
    with pytest.raises(ValueError):
        next_mode("asleep", Action.REQUEST)
    with pytest.raises(ValueError):
        next_mode(B, "escalate")


# --------------------------------------------------------------------------- asking for a person in words


@pytest.mark.parametrize(
    "message",
    [
        # English
        "Can I talk to a human please?",
        "I want to speak to a real person",
        "I’d like to speak to someone",
        "Connect me with an agent",
        "Please transfer me to a live agent",
        "can i chat with someone from support?",
        "get me a representative",
        "I need a human",
        "TALK TO A HUMAN",
        "human please",
        "Is there a person I can talk to?",
        # German
        "Ich möchte mit einem Menschen sprechen",
        "Kann ich mit einem Mitarbeiter reden?",
        "Ich würde gerne mit einer Beraterin sprechen",
        "Verbinden Sie mich bitte mit einem Mitarbeiter",
        "Bitte einen echten Menschen",
        # French
        "Je veux parler à un humain",
        "Puis-je parler avec un conseiller ?",
        "Est-ce que je peux parler à quelqu'un ?",
        "Mettez-moi en relation avec un conseiller",
        "Je voudrais une vraie personne",
        # Spanish
        "Quiero hablar con un humano",
        "¿Puedo hablar con una persona?",
        "Necesito un agente humano",
        "Comuníqueme con un asesor, por favor",
    ],
)
def test_explicit_requests_for_a_person_are_recognised(message: str) -> None:
    assert asks_for_human(message)


@pytest.mark.parametrize(
    "message",
    [
        "How do I become a support agent?",
        "What does a travel agent do?",
        "Who are the people behind ragbot?",
        "How does the handoff feature work?",
        "Does ragbot support human handoff?",
        "Is this answer written by a human?",
        "Can the bot talk about human rights?",
        "Does the chat widget show which agent answered?",
        "How does the bot decide to transfer to an agent?",
        "When does the chatbot connect visitors to a human agent?",
        "How do I connect an agent to the inbox?",
        "Is talking to a person faster than the bot?",
        "I need a human resources policy document",
        "What happens when I ask to speak to a human?",
        "Can your agents speak German?",
        "Wie spreche ich mit einem Menschen im Chat-Widget?",
        "Wann übergibt der Bot an einen Mitarbeiter?",
        "Ist das ein echter Mensch oder ein Bot?",
        "Quelle est la différence entre un humain et un robot ?",
        "Un conseiller peut-il modifier ma commande ?",
        "Comment le bot transfère-t-il la conversation à un agent ?",
        "¿Cómo transfiere el bot la conversación a un agente?",
        "La persona real detrás del producto?",
        "¿Cuántas personas trabajan aquí?",
    ],
)
def test_questions_that_merely_mention_people_are_not_requests(message: str) -> None:
    assert not asks_for_human(message)


def test_a_long_message_is_a_question_not_a_request() -> None:
    request = "Can I talk to a human please?"
    assert asks_for_human(request)
    padded = request + " " + "My kettle makes a strange noise when it boils and I tried descaling it. " * 5
    assert len(padded) > 300
    assert not asks_for_human(padded)


# --------------------------------------------------------------------------- office hours

BERLIN_WEEKDAYS: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "days": {day: ["09:00", "17:30"] for day in ("mon", "tue", "wed", "thu", "fri")},
}


MONDAY = {"mon": ["09:00", "17:00"]}


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Monday 2025-01-06, winter: Berlin is UTC+1
        pytest.param(_utc(2025, 1, 6, 7, 59), False, id="winter-before-opening"),
        pytest.param(_utc(2025, 1, 6, 8, 0), True, id="winter-opening-minute-is-open"),
        pytest.param(_utc(2025, 1, 6, 16, 29, 59), True, id="winter-last-second"),
        pytest.param(_utc(2025, 1, 6, 16, 30), False, id="winter-closing-minute-is-closed"),
        # Monday 2025-07-07, summer: Berlin is UTC+2
        pytest.param(_utc(2025, 7, 7, 6, 59), False, id="summer-before-opening"),
        pytest.param(_utc(2025, 7, 7, 7, 0), True, id="summer-opening"),
        pytest.param(_utc(2025, 7, 7, 15, 29), True, id="summer-last-minute"),
        pytest.param(_utc(2025, 7, 7, 15, 30), False, id="summer-closing"),
        # Saturday and Sunday are not listed: closed all day
        pytest.param(_utc(2025, 1, 11, 12, 0), False, id="saturday-closed"),
        pytest.param(_utc(2025, 1, 12, 12, 0), False, id="sunday-closed"),
    ],
)
def test_is_open_at_the_boundaries_in_the_offices_time_zone(now: datetime, expected: bool) -> None:
    assert is_open(BERLIN_WEEKDAYS, now) is expected


def test_the_weekday_is_the_offices_not_utcs() -> None:
    tokyo_monday = {"timezone": "Asia/Tokyo", "days": {"mon": ["00:00", "09:00"]}}
    sunday_evening_utc = _utc(2025, 1, 5, 16, 0)  # Monday 01:00 in Tokyo
    assert sunday_evening_utc.weekday() == 6
    assert is_open(tokyo_monday, sunday_evening_utc)
    assert not is_open(tokyo_monday, _utc(2025, 1, 6, 16, 0))  # Tuesday 01:00 in Tokyo

    new_york_friday = {"timezone": "America/New_York", "days": {"fri": ["18:00", "23:00"]}}
    saturday_early_utc = _utc(2025, 1, 11, 2, 0)  # Friday 21:00 in New York
    assert is_open(new_york_friday, saturday_early_utc)


def test_any_offset_of_now_gives_the_same_answer() -> None:
    moment = _utc(2025, 1, 6, 8, 30)
    for hours in (-8, 0, 5, 13):
        assert is_open(BERLIN_WEEKDAYS, moment.astimezone(timezone(timedelta(hours=hours))))


def test_no_office_hours_means_always_open() -> None:
    assert is_open(None, _utc(2025, 1, 12, 3, 0))
    assert is_open({}, _utc(2025, 1, 12, 3, 0))


def test_valid_office_hours_are_normalised() -> None:
    checked = check_office_hours({"days": {"sat": ["10:00", "14:00"]}})
    assert checked == {"timezone": "UTC", "days": {"sat": ["10:00", "14:00"]}}
    assert check_office_hours(BERLIN_WEEKDAYS)["timezone"] == "Europe/Berlin"
    assert is_open(checked, _utc(2025, 1, 11, 10, 0))


@pytest.mark.parametrize(
    ("hours", "complaint"),
    [
        pytest.param(
            {"timezone": "Mars/Olympus", "days": {"mon": ["09:00", "17:00"]}}, "timezone", id="zone"
        ),
        pytest.param(
            {"timezone": "../etc/passwd", "days": {"mon": ["09:00", "17:00"]}}, "timezone", id="path"
        ),
        pytest.param({"timezone": "UTC"}, "days", id="no-days"),
        pytest.param({"days": {}}, "days", id="empty-days"),
        pytest.param({"days": [["09:00", "17:00"]]}, "days", id="days-not-a-mapping"),
        pytest.param({"days": {"monday": ["09:00", "17:00"]}}, "unknown day", id="day-name"),
        pytest.param({"days": {"mon": ["09:00"]}}, "mon", id="one-time"),
        pytest.param({"days": {"mon": "09:00-17:00"}}, "mon", id="span-as-text"),
        pytest.param({"days": {"mon": ["9am", "5pm"]}}, "9am", id="not-a-clock"),
        pytest.param({"days": {"mon": ["09:00", "24:00"]}}, "24:00", id="hour-24"),
        pytest.param({"days": {"mon": ["09:00", "17:60"]}}, "17:60", id="minute-60"),
        pytest.param({"days": {"mon": ["17:00", "09:00"]}}, "opens at or after", id="reversed"),
        pytest.param({"days": {"mon": ["22:00", "02:00"]}}, "opens at or after", id="overnight"),
        pytest.param({"days": {"mon": ["09:00", "09:00"]}}, "opens at or after", id="empty-span"),
    ],
)
def test_invalid_office_hours_say_what_is_wrong(hours: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidOfficeHoursError, match=complaint):
        check_office_hours(hours)
