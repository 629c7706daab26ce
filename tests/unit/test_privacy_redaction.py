"""Redaction masks personal data in what visitors type and leaves the question readable."""

from __future__ import annotations

import pytest

from ragbot.privacy.redaction import redact

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@example.co.uk please", "mail me at [email] please"),
        ("call +49 30 1234567 tomorrow", "call [phone] tomorrow"),
        ("my number is (555) 123-4567", "my number is [phone]"),
        ("card 4111 1111 1111 1111 was charged twice", "card [card] was charged twice"),
        ("card 4111-1111-1111-1111", "card [card]"),
    ],
)
def test_personal_data_is_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "How do I upgrade from version 2.13.0 to 3.0?",
        "Error 404 on /v1/chat",
        "Is the 2026 plan cheaper?",
        "Order 12345 is late",  # too short to be a phone number
        "model XR-500 vs XR-700",
    ],
)
def test_ordinary_questions_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_long_number_that_fails_the_card_checksum_is_not_called_a_card() -> None:
    assert "[card]" not in redact("tracking 1234 5678 9012 3456")
