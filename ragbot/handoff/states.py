"""The handoff state machine, as a pure table: every legal (mode, action) pair and where it leads.

    bot ──request──> pending_human ──claim──> human ──resolve──> resolved
     ^                    │  ^                 │  ^                 │
     └──── release ───────┴──┼─── release ─────┘  └──── reopen ─────┤
                             └────────── request (visitor writes again) ┘

Back to ``bot`` only by an explicit ``release`` (an agent, with a system note). Anything else is an
``IllegalTransitionError`` (HTTP 409).
"""

from __future__ import annotations

from enum import StrEnum

from ragbot.types import OwnerMode

__all__ = ["TRANSITIONS", "Action", "IllegalTransitionError", "Reason", "next_mode"]


class Action(StrEnum):
    REQUEST = "request"  # someone asks for a person
    CLAIM = "claim"  # an agent takes it (or is assigned it)
    RESOLVE = "resolve"
    REOPEN = "reopen"  # an agent opens a resolved conversation again
    RELEASE = "release"  # back to the bot


class Reason(StrEnum):
    """Why a conversation moved; recorded with every handoff event."""

    VISITOR_REQUEST = "visitor_request"  # the widget button or POST .../handoff
    VISITOR_WORDS = "visitor_words"  # "can I talk to a person?"
    VISITOR_MESSAGE = "visitor_message"  # the visitor wrote in a resolved conversation
    UNGROUNDED = "ungrounded"  # the bot could not ground N answers in a row
    THUMBS_DOWN = "thumbs_down"  # repeated thumbs-down
    LLM_TOOL = "llm_tool"  # the model called the handoff tool
    LLM_OUTAGE = "llm_outage"  # no answer could be produced
    ADMIN_REQUEST = "admin_request"  # server to server
    AGENT_CLAIM = "agent_claim"
    AGENT_RESOLVE = "agent_resolve"
    AGENT_REOPEN = "agent_reopen"
    AGENT_RELEASE = "agent_release"


_B, _P, _H, _R = OwnerMode.BOT, OwnerMode.PENDING_HUMAN, OwnerMode.HUMAN, OwnerMode.RESOLVED

TRANSITIONS: dict[tuple[OwnerMode, Action], OwnerMode] = {
    (_B, Action.REQUEST): _P,
    (_R, Action.REQUEST): _P,
    (_P, Action.CLAIM): _H,
    (_H, Action.CLAIM): _H,  # reassignment to another agent
    (_P, Action.RESOLVE): _R,
    (_H, Action.RESOLVE): _R,
    (_R, Action.REOPEN): _H,
    (_P, Action.RELEASE): _B,
    (_H, Action.RELEASE): _B,
    (_R, Action.RELEASE): _B,
}


class IllegalTransitionError(ValueError):
    def __init__(self, mode: OwnerMode, action: Action) -> None:
        super().__init__(f"cannot {action.value} a conversation that is {mode.value}")
        self.mode, self.action = mode, action


def next_mode(mode: OwnerMode | str, action: Action | str) -> OwnerMode:
    current, act = OwnerMode(mode), Action(action)
    try:
        return TRANSITIONS[(current, act)]
    except KeyError:
        raise IllegalTransitionError(current, act) from None
