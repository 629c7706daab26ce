"""Checks on the ids and names that clients send and the services store or look up."""

from __future__ import annotations

import unicodedata


def is_storable(value: str) -> bool:
    """Whether every supported database can bind ``value``: PostgreSQL rejects NUL in text, and a lone
    surrogate (which a JSON ``\\ud800`` escape produces) cannot be encoded as UTF-8 by any driver.

    A row can never have such an id, so a lookup with one is simply "not found".
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_control_characters(value: str) -> bool:
    """NUL, other C0/C1 controls or lone surrogates: never part of an id, a name or a file name."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)
