"""Search highlighting and snippets (``ragbot.services.search``): pure functions over words and spans.

The analyzer is the real BM25 encoder (``ragbot.encoders.lexical``: Snowball stems, query stop words,
names), so stems and stop words are the ones search highlights with.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import pytest

from ragbot.encoders.lexical import Bm25Encoder
from ragbot.retrieval.explain import fold
from ragbot.services.search import (
    ELLIPSIS,
    SearchService,
    Snippet,
    best_window,
    highlight_spans,
    make_snippet,
    query_keys,
    to_html,
)
from ragbot.types import Chunk, Hit, MatchedTerm

ANALYZER = Bm25Encoder()


def analyze(text: str) -> list[str]:
    return [fold(t) for t in ANALYZER.terms(text, "en")]


def keys_of(query: str, matched: Sequence[MatchedTerm] = ()) -> set[str]:
    return query_keys(query, matched, ANALYZER, "en")


def words(text: str, query: str, matched: Sequence[MatchedTerm] = ()) -> list[str]:
    keys = keys_of(query, matched)
    return [text[s:e] for s, e in highlight_spans(text, keys, analyze)]


def shown(snippet: Snippet) -> list[str]:
    return [snippet.text[s:e] for s, e in snippet.highlights]


def test_matches_ignore_case_and_follow_stems() -> None:
    text = (
        "Refunds are paid within 30 days. A REFUNDED order cannot be refunded twice; refunding takes a day."
    )
    assert words(text, "how do I get a refund?") == ["Refunds", "REFUNDED", "refunded", "refunding"]


def test_only_whole_words_match_never_substrings() -> None:
    text = "The category page lists concatenated cat names; a Cat is not a catalog."
    assert words(text, "cat") == ["cat", "Cat"]


def test_accents_fold_both_ways() -> None:
    assert words("Le Café ouvre tôt; the cafe opens early.", "cafe") == ["Café", "cafe"]
    assert words("The cafe opens early.", "café") == ["cafe"]


def test_stop_words_of_the_query_light_up_nothing() -> None:
    text = "How do I descale the kettle? Descale it with citric acid."
    assert words(text, "how do I descale the kettle") == ["descale", "kettle", "Descale"]


def test_a_product_code_lights_up_whole_and_its_parts_alone() -> None:
    text = "The XK-200 kettle replaces the XK-100; XK parts fit both."
    assert words(text, "XK-200") == ["XK-200", "XK", "XK"]
    assert words(text, "what does the XK-200 replace?") == ["XK-200", "replaces", "XK", "XK"]
    assert words("Error E_42 means the lid is open.", "E_42") == ["E_42"]


def test_sparse_expansions_in_the_text_light_up_and_word_pieces_do_not() -> None:
    text = "The price of a kettle includes a tokenization fee."
    matched = [
        MatchedTerm("price", 2.0, in_text=True),  # a SPLADE expansion of "cost" the text contains
        MatchedTerm("##ization", 1.0, in_text=True),
        MatchedTerm("fee", 0.5, in_text=False),
    ]
    assert words(text, "cost", matched) == ["price"]


def test_offsets_count_code_points_and_survive_collapsed_whitespace() -> None:
    text = "🙂  Ask\n\nfor a   refund ✓ here"
    keys = keys_of("refund")
    snippet = make_snippet(text, highlight_spans(text, keys, analyze))
    assert snippet.text == "🙂 Ask for a refund ✓ here"
    assert snippet.highlights == ((12, 18),)
    assert shown(snippet) == ["refund"]


def test_markdown_heading_marks_are_left_out_of_the_snippet() -> None:
    text = "# Refund policy\n\n## How refunds work\nA refund takes #3 days."
    keys = keys_of("refund")
    snippet = make_snippet(text, highlight_spans(text, keys, analyze))
    assert snippet.text == "Refund policy How refunds work A refund takes #3 days."
    assert shown(snippet) == ["Refund", "refunds", "refund"]


def test_a_word_longer_than_the_window_is_cut_not_lost() -> None:
    text = "intro " * 60 + "x" * 500 + " refund"
    snippet = make_snippet(text, highlight_spans(text, keys_of("refund"), analyze), size=100)
    assert shown(snippet) == ["refund"] and len(snippet.text) < 200
    long_word = make_snippet("y" * 500 + " tail", [], size=100)
    assert long_word.text == "y" * 100 + " " + ELLIPSIS


def test_a_short_passage_is_shown_whole() -> None:
    text = "Descale the kettle monthly."
    snippet = make_snippet(text, [(0, 7)])
    assert snippet.text == text and ELLIPSIS not in snippet.text and shown(snippet) == ["Descale"]


def test_the_snippet_window_moves_to_the_matches_and_cuts_at_words() -> None:
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12
    text = filler + "To descale the Brewmaster kettle, use citric acid every four weeks. " + filler
    keys = keys_of("descale brewmaster")
    spans = highlight_spans(text, keys, analyze)
    snippet = make_snippet(text, spans, size=120)
    assert shown(snippet) == ["descale", "Brewmaster"]
    assert snippet.text.startswith(ELLIPSIS + " ") and snippet.text.endswith(" " + ELLIPSIS)
    assert len(snippet.text) <= 120 + 120 // 8 + 4
    body = snippet.text.removeprefix(ELLIPSIS + " ").removesuffix(" " + ELLIPSIS)
    assert body in " ".join(text.split())
    flat = " ".join(text.split())
    at = flat.index(body)
    assert at == 0 or flat[at - 1] == " ", "the snippet starts mid-word"
    end = at + len(body)
    assert end == len(flat) or flat[end] == " ", "the snippet ends mid-word"
    assert body.startswith("To descale"), "a sentence start close before the match is preferred"


def test_the_window_prefers_more_distinct_terms_over_repeats() -> None:
    # 'a' repeats at the start; 'a' and 'b' appear together later
    spans = [(0, 1), (5, 6), (10, 11), (200, 201), (210, 211)]
    keys = ["a", "a", "a", "a", "b"]
    assert best_window(400, spans, keys, 50)[0] <= 200 < best_window(400, spans, keys, 50)[1]
    assert best_window(40, spans[:3], keys[:3], 50) == (0, 40)


def test_html_is_escaped_and_marks_only_the_spans() -> None:
    text = '<script>alert("refund")</script> & refund <b>now</b>'
    keys = keys_of("refund")
    snippet = make_snippet(text, highlight_spans(text, keys, analyze))
    out = snippet.html
    assert "<script>" not in out and "<b>" not in out
    assert out.count("<mark>") == 2 and out.count("</mark>") == 2
    assert html.unescape(out.replace("<mark>", "").replace("</mark>", "")) == snippet.text
    assert to_html("a < b", [(0, 1), (0, 1), (4, 99)]) == "<mark>a</mark> &lt; b"


def test_no_query_terms_means_no_highlights_and_the_passage_start() -> None:
    text = "Plain text " * 40
    assert highlight_spans(text, [], analyze) == []
    snippet = make_snippet(text, [], size=50)
    assert (
        snippet.highlights == () and snippet.text.startswith("Plain text") and snippet.text.endswith(ELLIPSIS)
    )


class _ListRetriever:
    """An in-memory retriever: the hits it was given, whatever the query."""

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.calls: list[tuple[str, str, int]] = []

    def retrieve(self, bot_id: str, query: str, top_k: int) -> list[Hit]:
        self.calls.append((bot_id, query, top_k))
        return self.hits[:top_k]


def _hit(chunk_id: str, title: str, text: str, score: float) -> Hit:
    chunk = Chunk(chunk_id, "bot", f"src-{chunk_id}", f"/docs/{chunk_id}.md", title, text, 0)
    return Hit(chunk=chunk, score=score, sparse_score=score * 2, dense_score=0.5, sparse_rank=1, dense_rank=2)


def test_the_service_ranks_highlights_titles_and_reports_every_score() -> None:
    retriever = _ListRetriever(
        [
            _hit("a", "Refund policy", "Refunds take 30 days.", 3.0),
            _hit("b", "Shipping", "We ship worldwide; refunds on request.", 1.0),
        ]
    )
    passages = SearchService(retriever).search("bot", "refund", 5)
    assert retriever.calls == [("bot", "refund", 5)]
    assert [p.rank for p in passages] == [1, 2]
    first = passages[0]
    assert first.title_highlights == ((0, 6),)
    assert shown(first.snippet) == ["Refunds"] and first.highlights == ((0, 7),)
    assert first.scores == {"hybrid": 3.0, "sparse": 6.0, "dense": 0.5, "bm25": None}
    assert first.ranks == {"sparse": 1, "dense": 2, "bm25": None}


@pytest.mark.parametrize(("query", "top_k"), [("", 5), ("   ", 5), ("refund", 0), ("refund", 51)])
def test_the_service_refuses_empty_queries_and_unbounded_top_k(query: str, top_k: int) -> None:
    with pytest.raises(ValueError):
        SearchService(_ListRetriever([])).search("bot", query, top_k)
