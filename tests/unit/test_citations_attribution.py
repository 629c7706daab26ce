from __future__ import annotations

import pytest

from ragbot.generation.attribution import attribute_sources, content_words

pytestmark = pytest.mark.unit

SOURCES = [
    "Ragbot combines sparse and dense retrieval in a single Qdrant query; the two lists are fused with RRF.",
    "Conversations are stored in SQLite by default. Set RAGBOT_DATABASE_URL to use PostgreSQL.",
    "When nothing relevant is found the assistant offers to connect the visitor with a human agent.",
]


def test_answer_drawn_from_one_source_is_attributed_to_it() -> None:
    answer = "Ragbot fuses the sparse and dense retrieval lists with RRF in one Qdrant query."
    assert attribute_sources(answer, SOURCES) == [1]


def test_each_sentence_finds_its_own_source_in_order_of_use() -> None:
    answer = (
        "By default conversations are stored in SQLite; RAGBOT_DATABASE_URL switches to PostgreSQL. "
        "Retrieval fuses sparse and dense lists with RRF inside Qdrant."
    )
    assert attribute_sources(answer, SOURCES) == [2, 1]


def test_unsupported_answer_gets_no_attribution() -> None:
    answer = "The product ships with a blue enclosure and a three year warranty for every customer."
    assert attribute_sources(answer, SOURCES) == []


def test_short_sentences_and_empty_input_attribute_nothing() -> None:
    assert attribute_sources("Yes. SQLite.", SOURCES) == []
    assert attribute_sources("", SOURCES) == []
    assert attribute_sources("Conversations are stored in SQLite by default.", []) == []


def test_threshold_is_adjustable() -> None:
    answer = "Conversations are kept in a SQLite file unless configured otherwise by operators."
    assert attribute_sources(answer, SOURCES, min_support=0.2) == [2]
    assert attribute_sources(answer, SOURCES, min_support=0.9) == []


def test_content_words_drop_function_words_and_keep_identifiers() -> None:
    assert content_words("The RAGBOT_DATABASE_URL is set to a PostgreSQL URL") == {
        "ragbot_database_url",
        "set",
        "postgresql",
        "url",
    }
