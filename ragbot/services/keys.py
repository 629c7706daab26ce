"""Checks on the ids and names that clients send."""

from __future__ import annotations

import unicodedata


def has_control_characters(value: str) -> bool:
    """NUL, other C0/C1 controls or lone surrogates: never part of an id, a name or a file name."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)
