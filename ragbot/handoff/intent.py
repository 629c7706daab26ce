"""Recognising "I want a person" in a visitor's own words. Pure and deliberately narrow: a false
positive takes the bot out of the conversation, so only explicit requests count: a first-person or
imperative request to talk to / be connected with / get a person, never a question that merely mentions
agents, people or handoff ("how does the bot transfer to an agent?")."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["asks_for_human"]

_WHO_EN = (
    r"(?:(?:a|an|the|some|one of your|your)\s+)?(?:(?:real|live|actual|human)\s+)?"
    r"(?:human|person|people|agent|representative|rep|operator|someone|somebody|staff|support team|"
    r"team member|employee|customer service|customer support)\b"
)
_WHO_DE = (
    r"(?:(?:einem|einer|einen|eine|jemandem)\s+)?(?:(?:echten|realen|richtigen)\s+)?"
    r"(?:menschen|mitarbeiter(?:in)?|person|berater(?:in)?|kundenberater(?:in)?|ansprechpartner(?:in)?|"
    r"jemandem)\b"
)
_WHO_FR = r"(?:un|une|quelqu'?\s?un)\b"
_WHO_ES = r"(?:un|una|alguien)\b"
_END = r"(?=\s*(?:$|[.!?,;:]|please\b|now\b|right now\b|asap\b))"

_PATTERNS = [
    # English: "talk to a human", "can I speak with someone", "I'd like to chat with an agent",
    # "connect me to a person", "get me a representative", "I need a human", "is there someone I can talk to"
    rf"^(?:\W*(?:hi|hello|hey)\b\W*)?(?:please\s+)?(?:let me\s+)?(?:talk|speak|chat)\s+"
    rf"(?:to|with)\s+{_WHO_EN}",
    rf"\b(?:can|could|may)\s+i\s+(?:please\s+)?(?:talk|speak|chat)\s+(?:to|with)\s+{_WHO_EN}",
    rf"\bi(?:'d|\s+would)?\s+(?:really\s+|just\s+)?(?:like|want|need|wish|have)\s+to\s+(?:talk|speak|chat)\s+"
    rf"(?:to|with)\s+{_WHO_EN}",
    rf"\bi\s+wanna\s+(?:talk|speak|chat)\s+(?:to|with)\s+{_WHO_EN}",
    rf"\b(?:connect|transfer|put)\s+me\s+(?:through\s+)?(?:to|with)\s+{_WHO_EN}",
    rf"\b(?:get|give|find)\s+me\s+{_WHO_EN}",
    rf"\b(?:can|could|may)\s+i\s+(?:get|have)\s+(?:a|an)\s+(?:real\s+|live\s+)?"
    rf"(?:human|person|agent|representative|operator){_END}",
    rf"\bi\s+(?:want|need)\s+(?:a|an)\s+(?:real\s+|live\s+)?(?:human|person|agent|representative|operator){_END}",
    r"\b(?:is|are)\s+there\s+(?:a|an|any)?\s*(?:real\s+)?(?:human|person|agent|someone|somebody|people)\s+"
    r"(?:i|we)\s+(?:can|could)\s+(?:talk|speak|chat)\b",
    r"^\W*(?:(?:a|an)\s+)?(?:real\s+|live\s+)?(?:human|person|agent|operator|representative)"
    r"(?:\s+please)?\W*$",
    # German: "ich möchte mit einem Menschen sprechen", "kann ich mit einem Mitarbeiter reden",
    # "verbinden Sie mich mit ...", "ich brauche einen Menschen", "bitte einen echten Menschen"
    rf"\b(?:ich|wir)\s+(?:mochte|mochten|will|wollen|muss|mussen|wurde|wurden|hatte|hatten)\s+(?:\w+\s+){{0,3}}?"
    rf"mit\s+{_WHO_DE}\s+(?:\w+\s+)?(?:sprechen|reden|chatten|schreiben)\b",
    rf"\b(?:kann|konnte|darf)\s+ich\s+(?:\w+\s+){{0,3}}?mit\s+{_WHO_DE}\s+(?:\w+\s+)?(?:sprechen|reden|chatten)\b",
    rf"\b(?:verbinden sie|verbinde|verbindet)\s+mich\s+(?:bitte\s+)?mit\s+{_WHO_DE}",
    r"\b(?:ich|wir)\s+(?:mochte|mochten|will|wollen|brauche|brauchen)\s+(?:bitte\s+)?(?:einen|eine)\s+"
    r"(?:echten\s+|realen\s+|richtigen\s+)?(?:menschen|mitarbeiter(?:in)?|person|berater(?:in)?)\b",
    r"\b(?:einen|eine|mit einem|mit einer)\s+(?:echten|realen|richtigen)\s+"
    r"(?:menschen|mitarbeiter(?:in)?|person)\b",
    # French: "je veux parler à un humain", "puis-je parler avec un conseiller", "est-ce que je peux parler
    # à quelqu'un", "mettez-moi en relation avec ...", "je voudrais une vraie personne"
    rf"\b(?:je|j')\s*(?:veux|voudrais|souhaite|souhaiterais|aimerais|dois|peux)\s+(?:\w+\s+)?"
    rf"(?:parler|discuter)\s+(?:a|avec)\s+{_WHO_FR}",
    rf"\b(?:puis-je|puis je|pourrais-je|pourrais je)\s+(?:\w+\s+)?(?:parler|discuter)\s+"
    rf"(?:a|avec)\s+{_WHO_FR}",
    rf"^\W*(?:(?:bonjour|salut)\W+)?(?:parler|discuter)\s+(?:a|avec)\s+{_WHO_FR}",
    r"\b(?:mettez|passez)[- ]moi\s+(?:en\s+(?:relation|contact)\s+)?(?:avec|a)\s+(?:un|une|quelqu)",
    r"\bme\s+(?:mettre|passer)\s+en\s+(?:relation|contact)\s+avec\s+(?:un|une|quelqu)",
    r"\b(?:je|j')\s*(?:veux|voudrais|souhaite|souhaiterais|aimerais)\s+(?:un|une)\s+(?:vraie?\s+)?"
    r"(?:humain|personne|conseiller|conseillere|agent|operateur|operatrice)\b",
    # Spanish: "quiero hablar con un humano", "¿puedo hablar con una persona?", "necesito un agente humano",
    # "comuníqueme con un asesor"
    rf"\b(?:quiero|quisiera|necesito|deseo|me gustaria|puedo|podria|prefiero)\s+(?:\w+\s+)?"
    rf"(?:hablar|chatear)\s+con\s+{_WHO_ES}",
    r"\b(?:quiero|quisiera|necesito)\s+(?:un|una)\s+(?:agente|persona|humano|asesor|asesora|operador|operadora)\b",
    r"\b(?:comunicame|comuniqueme|pasame|paseme|transfiereme|transfierame|conectame|conecteme)\s+con\b",
]
_RE = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower().replace("\u2019", "'"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def asks_for_human(message: str) -> bool:
    """Whether the message explicitly asks for a person (English, German, French, Spanish)."""
    if len(message) > 300:  # a long message is a question that mentions people, not a request
        return False
    return _RE.search(_fold(message)) is not None
