"""Recognising "I want a person" in a visitor's own words. Pure and deliberately narrow: a false
positive takes the bot out of the conversation, so only explicit requests count."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["asks_for_human"]

_PATTERNS = [
    # English
    r"\b(talk|speak|chat|connect|transfer)\w*\b.{0,25}\b(human|person|agent|someone|somebody|representative|"
    r"operator|support team|staff|real person|live agent)\b",
    r"\b(get|want|need)\s+(me\s+)?(a|an|to)?\s*(human|person|agent|representative|operator)\b",
    # German
    r"\b(mit|zu)\s+(einem|einer)\s+(menschen|mitarbeiter(in)?|person|berater(in)?)\b",
    r"\b(echten|realen)\s+(menschen|mitarbeiter)\b",
    # French
    r"\b(parler|discuter)\s+(a|avec)\s+(un|une|quelqu'un)\s*(humain|personne|agent|conseiller|conseillere)?\b",
    r"\b(un|une)\s+(humain|vraie personne|conseiller|conseillere)\b",
    # Spanish
    r"\b(hablar|chatear)\s+con\s+(un|una|alguien)\s*(humano|persona|agente|asesor|asesora)?\b",
    r"\b(agente|persona)\s+(humano|humana|real)\b",
]
_RE = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def asks_for_human(message: str) -> bool:
    """Whether the message explicitly asks for a person (English, German, French, Spanish)."""
    if len(message) > 300:  # a long message is a question that mentions people, not a request
        return False
    return _RE.search(_fold(message)) is not None
