from __future__ import annotations

import logging
import random

import pytest

from ragbot.generation.citations import CitationStreamParser, strip_citations

pytestmark = pytest.mark.unit


def stream(deltas: list[str], num_sources: int) -> tuple[str, CitationStreamParser, list[str]]:
    parser = CitationStreamParser(num_sources)
    emitted = [parser.feed(d) for d in deltas]
    emitted.append(parser.finish())
    return "".join(emitted), parser, emitted


def test_marker_pointing_to_no_source_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ragbot.generation.citations"):
        text, parser, _ = stream(["Ragbot uses SQLite [1] and Qdrant [7]. It fuses ranks [3]."], 3)
    assert text == "Ragbot uses SQLite [1] and Qdrant. It fuses ranks [3]."
    assert parser.cited == [1, 3]
    assert parser.dropped == [7]
    assert "[7]" in caplog.text


def test_dropped_marker_split_across_deltas_never_reaches_the_visible_text() -> None:
    deltas = ["Qdrant is the index ", "[", "7", "]", ", and SQLite ", "[2", "]", " stores chats."]
    text, parser, emitted = stream(deltas, 3)
    assert text == "Qdrant is the index, and SQLite [2] stores chats."
    assert all("7" not in piece for piece in emitted)
    assert parser.cited == [2]
    assert parser.dropped == [7]


def test_every_split_point_gives_the_same_result() -> None:
    answer = "Sparse [1] and dense [2, 9] vectors are fused [^3][4] in Qdrant [12]; see [docs](x) [2]."
    expected, cited, dropped = strip_citations(answer, 3)
    assert expected == "Sparse [1] and dense [2] vectors are fused [3] in Qdrant; see [docs](x) [2]."
    assert cited == [1, 2, 3]
    assert dropped == [9, 4, 12]
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(answer)), rng.randint(1, 25)))
        deltas = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
        text, parser, _ = stream(deltas, 3)
        assert text == expected
        assert parser.cited == cited
        assert parser.dropped == dropped


def test_one_character_deltas() -> None:
    answer = "Use [1,2] or [^2]."
    text, parser, _ = stream(list(answer), 2)
    assert text == "Use [1][2] or [2]."
    assert parser.cited == [1, 2]


def test_possible_marker_is_held_back_until_it_resolves() -> None:
    parser = CitationStreamParser(3)
    assert parser.feed("See [") == "See"
    assert parser.feed("2") == ""
    assert parser.feed("] now") == " [2] now"


def test_non_marker_brackets_pass_through_immediately() -> None:
    parser = CitationStreamParser(3)
    assert parser.feed("a [link](http://x) and [sic") == "a [link](http://x) and [sic"
    assert parser.feed(" [2024] done") == " [2024] done"
    assert parser.cited == []


def test_unfinished_marker_at_end_is_flushed_verbatim() -> None:
    parser = CitationStreamParser(3)
    assert parser.feed("Trailing [2") == "Trailing"
    assert parser.finish() == " [2"
    assert parser.cited == []


def test_zero_is_not_a_source_and_no_sources_drops_everything() -> None:
    assert strip_citations("a [0] b", 3) == ("a b", [], [0])
    assert strip_citations("I don't know [1].", 0) == ("I don't know.", [], [1])


def test_cited_keeps_first_seen_order_without_duplicates() -> None:
    _, cited, _ = strip_citations("[3] x [1] y [3] z [2][1]", 3)
    assert cited == [3, 1, 2]


def test_newline_before_dropped_marker_is_kept() -> None:
    assert strip_citations("Line one\n[5] line two", 2)[0] == "Line one\n line two"


def test_negative_source_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_sources"):
        CitationStreamParser(-1)
