"""Moving conversations between the bot and people, and what agents do with them.

Every move happens under the conversation's row lock, in one transaction with everything it implies: the
new mode, the handoff event with its reason, the system note the visitor sees, the live events, and
the webhooks in the outbox. Streams are woken after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import events as events_sql
from ragbot.db import repositories as repo
from ragbot.db.models import (
    Bot,
    Conversation,
    ConversationEvent,
    HandoffEvent,
    Message,
    RetrievalLog,
    utcnow,
)
from ragbot.db.session import session_scope
from ragbot.handoff.hours import is_open
from ragbot.handoff.states import Action, Reason, next_mode
from ragbot.leads.form import LeadForm
from ragbot.types import OwnerMode, SenderType
from ragbot.webhooks.outbox import enqueue

__all__ = ["HandoffService", "Moved", "message_event", "move"]

#: What the visitor is told at each move (system messages).
NOTE_REQUESTED = (
    "I've asked someone from our team to join. You can keep writing here; they'll see everything."
)
NOTE_NO_AGENT = (
    "No one from our team is available right now. Leave your contact details and we'll get back to you."
)
NOTE_CLAIMED = "{agent} joined the conversation."
NOTE_RESOLVED = "This conversation was marked as resolved. Write again any time."
NOTE_RELEASED = "You're chatting with the assistant again."
NOTE_REOPENED = "{agent} reopened the conversation."


@dataclass
class Moved:
    """What a move changed, for the caller's response and for waking streams after the commit."""

    conversation_id: str
    from_mode: str
    to_mode: str
    reason: str
    system_message: dict[str, Any] | None = None
    lead_form: dict[str, Any] | None = None
    events: list[int] = field(default_factory=list)


def message_event(message: Message) -> dict[str, Any]:
    """A message as the live stream carries it (``message`` events)."""
    return {
        "id": message.id,
        "seq": message.seq,
        "sender_type": message.sender_type,
        "content": message.content,
        "status": message.status,
        "author": message.author,
        "internal": message.internal,
        "created_at": message.created_at.isoformat(),
    }


def _agent_label(actor: str) -> str:
    return actor.strip() or "A member of our team"


def _add_system(session: Session, conv: Conversation, text: str) -> dict[str, Any]:
    message = repo.add_message(session, conv.bot_id, conv.id, SenderType.SYSTEM, text)
    data = message_event(message)
    events_sql.add_event(session, conv.bot_id, conv.id, "message", data)
    return data


def _lead_form(bot: Bot | None) -> LeadForm | None:
    return LeadForm.model_validate(bot.lead_form) if bot is not None and bot.lead_form else None


def offer_lead_form(session: Session, conv: Conversation, form: LeadForm, reason: str) -> dict[str, Any]:
    """Tell the visitor's widget to show the lead form (a typed ``lead_form`` event)."""
    data = {"reason": reason, "form": form.model_dump()}
    events_sql.add_event(session, conv.bot_id, conv.id, "lead_form", data)
    return data


def move(
    session: Session,
    conv: Conversation,
    action: Action,
    *,
    reason: Reason,
    actor: str,
    note: str = "",
    assignee: str | None = None,
    now: datetime | None = None,
) -> Moved:
    """One transition, inside the caller's transaction; ``conv`` must be locked
    (``repo.lock_conversation``). Raises ``IllegalTransitionError`` for a move the table forbids."""
    now = now or utcnow()
    before = conv.owner_mode
    after = next_mode(before, action)
    conv.owner_mode = after.value
    conv.updated_at = now
    if after is OwnerMode.PENDING_HUMAN:
        conv.waiting_since, conv.assignee = now, None
    elif after is OwnerMode.HUMAN:
        conv.assignee = assignee or actor
        conv.waiting_since = None
    elif after is OwnerMode.BOT:
        conv.assignee, conv.waiting_since, conv.ungrounded_streak = None, None, 0
    else:
        conv.waiting_since = None
    session.add(
        HandoffEvent(
            bot_id=conv.bot_id,
            conversation_id=conv.id,
            from_mode=before,
            to_mode=after.value,
            reason=reason.value,
            actor=actor[:200],
            note=note,
            created_at=now,
        )
    )
    moved = Moved(conv.id, before, after.value, reason.value)
    bot = session.get(Bot, conv.bot_id)
    form = _lead_form(bot)
    summary = {"conversation_id": conv.id, "mode": after.value, "reason": reason.value, "actor": actor}
    if action is Action.REQUEST and reason is Reason.AGENT_CLAIM:
        # an agent stepping in: the claim that follows tells the visitor who joined
        enqueue(session, conv.bot_id, "handoff.requested", {**summary, "note": note})
    elif action is Action.REQUEST:
        open_now = is_open(bot.office_hours if bot else None, now)
        moved.system_message = _add_system(session, conv, NOTE_REQUESTED if open_now else NOTE_NO_AGENT)
        if form is not None and (form.asks("on_handoff") or (not open_now and form.asks("no_agent"))):
            moved.lead_form = offer_lead_form(session, conv, form, "on_handoff" if open_now else "no_agent")
        enqueue(session, conv.bot_id, "handoff.requested", {**summary, "note": note})
    elif action is Action.CLAIM:
        moved.system_message = _add_system(session, conv, NOTE_CLAIMED.format(agent=_agent_label(actor)))
        enqueue(session, conv.bot_id, "handoff.claimed", {**summary, "assignee": conv.assignee})
    elif action is Action.RESOLVE:
        moved.system_message = _add_system(session, conv, NOTE_RESOLVED)
        enqueue(session, conv.bot_id, "conversation.resolved", summary)
    elif action is Action.RELEASE:
        moved.system_message = _add_system(session, conv, NOTE_RELEASED)
    elif action is Action.REOPEN:
        moved.system_message = _add_system(session, conv, NOTE_REOPENED.format(agent=_agent_label(actor)))
    events_sql.add_event(
        session,
        conv.bot_id,
        conv.id,
        "handoff",
        {"mode": after.value, "reason": reason.value, "assignee": conv.assignee},
    )
    session.flush()
    return moved


class HandoffService:
    def __init__(self, sessions: sessionmaker[Session], publish: Callable[[str], None]) -> None:
        self._sessions = sessions
        self._publish = publish

    # ------------------------------------------------------------------ moves
    def request(
        self,
        bot_id: str,
        conversation_id: str,
        *,
        reason: Reason,
        actor: str,
        note: str = "",
        visitor_id: str | None = None,
    ) -> Moved:
        """Someone asks for a person. Asking again while already waiting or with a person is no move."""
        with session_scope(self._sessions) as s:
            conv = self._locked(s, bot_id, conversation_id, visitor_id)
            if conv.owner_mode in (OwnerMode.PENDING_HUMAN, OwnerMode.HUMAN):
                return Moved(conv.id, conv.owner_mode, conv.owner_mode, reason.value)
            moved = move(s, conv, Action.REQUEST, reason=reason, actor=actor, note=note)
        self._publish(conversation_id)
        return moved

    def act(
        self, bot_id: str, conversation_id: str, action: Action, *, actor: str, assignee: str | None = None
    ) -> Moved:
        """An agent's move: claim, resolve, reopen, release."""
        reasons = {
            Action.CLAIM: Reason.AGENT_CLAIM,
            Action.RESOLVE: Reason.AGENT_RESOLVE,
            Action.REOPEN: Reason.AGENT_REOPEN,
            Action.RELEASE: Reason.AGENT_RELEASE,
        }
        with session_scope(self._sessions) as s:
            conv = self._locked(s, bot_id, conversation_id, None)
            moved = move(s, conv, action, reason=reasons[action], actor=actor, assignee=assignee)
        self._publish(conversation_id)
        return moved

    def reply(
        self, bot_id: str, conversation_id: str, *, actor: str, content: str, internal: bool = False
    ) -> dict[str, Any]:
        """An agent writes: to the visitor (claiming a waiting conversation on the way), or an internal
        note only agents see. Replies reach the visitor's stream at once."""
        with session_scope(self._sessions) as s:
            conv = self._locked(s, bot_id, conversation_id, None)
            if not internal:
                # writing to the visitor takes the conversation: from the bot, the queue or resolved
                if conv.owner_mode == OwnerMode.BOT:
                    move(s, conv, Action.REQUEST, reason=Reason.AGENT_CLAIM, actor=actor)
                if conv.owner_mode == OwnerMode.PENDING_HUMAN:
                    move(s, conv, Action.CLAIM, reason=Reason.AGENT_CLAIM, actor=actor)
                elif conv.owner_mode == OwnerMode.RESOLVED:
                    move(s, conv, Action.REOPEN, reason=Reason.AGENT_REOPEN, actor=actor)
            message = repo.add_message(
                s,
                bot_id,
                conversation_id,
                SenderType.AGENT,
                content,
                internal=internal,
                author=actor,
            )
            data = message_event(message)
            events_sql.add_event(s, bot_id, conversation_id, "message", data, for_visitor=not internal)
            if not internal:
                enqueue(s, bot_id, "message.created", {"conversation_id": conversation_id, "message": data})
        self._publish(conversation_id)
        return data

    # ------------------------------------------------------------------ reads
    def queue(
        self,
        bot_ids: list[str] | None,
        *,
        mode: str | None = None,
        assignee: str | None = None,
        waiting_before: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Conversations for the inbox: by default the ones that need people (waiting or with a
        person), longest-waiting first."""
        with session_scope(self._sessions) as s:
            query = select(Conversation)
            if bot_ids is not None:
                query = query.where(Conversation.bot_id.in_(bot_ids))
            if mode is not None:
                query = query.where(Conversation.owner_mode == OwnerMode(mode).value)
            else:
                query = query.where(
                    Conversation.owner_mode.in_([OwnerMode.PENDING_HUMAN.value, OwnerMode.HUMAN.value])
                )
            if assignee is not None:
                query = query.where(Conversation.assignee == assignee)
            if waiting_before is not None:
                query = query.where(Conversation.waiting_since <= waiting_before)
            query = query.order_by(
                Conversation.waiting_since.is_(None),
                Conversation.waiting_since,
                Conversation.updated_at.desc(),
            ).limit(limit)
            rows = list(s.scalars(query))
            out = []
            for conv in rows:
                last = s.scalars(
                    select(Message)
                    .where(Message.conversation_id == conv.id, Message.internal.is_(False))
                    .order_by(Message.seq.desc())
                    .limit(1)
                ).one_or_none()
                out.append(
                    {
                        **_conversation_summary(conv),
                        "last_message": None if last is None else message_event(last),
                    }
                )
            return out

    def detail(self, bot_id: str, conversation_id: str) -> dict[str, Any] | None:
        """Everything an agent needs: messages (internal notes included), each bot answer's citations
        and the retrieval log behind it, and the handoff history."""
        from ragbot.services.conversations import message_to_dict

        with session_scope(self._sessions) as s:
            conv = repo.get_conversation(s, bot_id, conversation_id)
            if conv is None:
                return None
            messages = repo.list_messages(s, bot_id, conversation_id)
            logs: dict[str, list[dict[str, Any]]] = {}
            for row in s.scalars(
                select(RetrievalLog)
                .join(Message, Message.id == RetrievalLog.message_id)
                .where(Message.conversation_id == conversation_id, RetrievalLog.bot_id == bot_id)
                .order_by(RetrievalLog.rank)
            ):
                logs.setdefault(row.message_id, []).append(
                    {
                        "rank": row.rank,
                        "query": row.query,
                        "chunk_id": row.chunk_id,
                        "uri": row.uri,
                        "score": row.score,
                        "sparse_score": row.sparse_score,
                        "dense_score": row.dense_score,
                        "cited": row.cited,
                    }
                )
            handoffs = s.scalars(
                select(HandoffEvent)
                .where(HandoffEvent.conversation_id == conversation_id, HandoffEvent.bot_id == bot_id)
                .order_by(HandoffEvent.created_at, HandoffEvent.id)
            )
            return {
                **_conversation_summary(conv),
                "last_event_id": events_sql.last_event_id(s, bot_id, conversation_id),
                "messages": [
                    {
                        **message_to_dict(m),
                        "author": m.author,
                        "internal": m.internal,
                        "retrieval": logs.get(m.id, []),
                    }
                    for m in messages
                ],
                "handoffs": [
                    {
                        "from_mode": h.from_mode,
                        "to_mode": h.to_mode,
                        "reason": h.reason,
                        "actor": h.actor,
                        "note": h.note,
                        "created_at": h.created_at,
                    }
                    for h in handoffs
                ],
            }

    # ------------------------------------------------------------------ timers
    def sweep_unclaimed(self, now: datetime | None = None) -> int:
        """Offer the lead form in conversations nobody claimed within their bot's timeout (once each);
        run periodically by the background worker. How many were offered."""
        now = now or utcnow()
        offered = 0
        with session_scope(self._sessions) as s:
            waiting = list(
                s.execute(
                    select(Conversation, Bot)
                    .join(Bot, Bot.id == Conversation.bot_id)
                    .where(
                        Conversation.owner_mode == OwnerMode.PENDING_HUMAN.value,
                        Conversation.waiting_since.is_not(None),
                        Bot.lead_form.is_not(None),
                    )
                )
            )
        for conv, bot in waiting:
            form = _lead_form(bot)
            timeout = timedelta(seconds=bot.agent_claim_timeout_s or 300)
            if form is None or not form.asks("no_agent") or conv.waiting_since is None:
                continue
            if now - conv.waiting_since < timeout:
                continue
            with session_scope(self._sessions) as s:
                locked = repo.lock_conversation(s, conv.bot_id, conv.id)
                if locked.owner_mode != OwnerMode.PENDING_HUMAN.value or locked.waiting_since is None:
                    continue
                already = s.scalar(
                    select(ConversationEvent.id).where(
                        and_(
                            ConversationEvent.conversation_id == conv.id,
                            ConversationEvent.type == "lead_form",
                            ConversationEvent.created_at >= locked.waiting_since,
                        )
                    )
                )
                if already is not None:
                    continue
                _add_system(s, locked, NOTE_NO_AGENT)
                offer_lead_form(s, locked, form, "no_agent")
            self._publish(conv.id)
            offered += 1
        return offered

    # ------------------------------------------------------------------ internals
    def _locked(
        self, session: Session, bot_id: str, conversation_id: str, visitor_id: str | None
    ) -> Conversation:
        conv = repo.lock_conversation(session, bot_id, conversation_id)
        if visitor_id is not None and conv.visitor_id != visitor_id:
            raise repo.ConversationNotFoundError(conversation_id)
        return conv


def _conversation_summary(conv: Conversation) -> dict[str, Any]:
    return {
        "id": conv.id,
        "bot_id": conv.bot_id,
        "visitor_id": conv.visitor_id,
        "owner_mode": conv.owner_mode,
        "assignee": conv.assignee,
        "title": conv.title,
        "waiting_since": conv.waiting_since,
        "page_url": conv.page_url,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
    }
