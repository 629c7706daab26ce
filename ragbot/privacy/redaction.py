"""Masking personal data in text before it is written (``Bot.redact_questions``). Pure functions.

Emails, phone numbers and card-like numbers (13-19 digits passing the Luhn check) become placeholders;
the rest of the question stays readable for analytics. The model still answers the original words of the
turn: only what is stored is masked.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_DIGIT_RUN = re.compile(r"(?<![\w])\+?\(?\d[\d \-.()/]{5,}\d(?![\w])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _mask_number(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if 13 <= len(digits) <= 19 and _luhn(digits):
        return "[card]"
    if 7 <= len(digits) <= 15:
        return "[phone]"
    return text


def redact(text: str) -> str:
    """``text`` with emails, phone numbers and card numbers masked."""
    text = _EMAIL.sub("[email]", text)
    return _DIGIT_RUN.sub(_mask_number, text)
