"""Grounding's pure parts: sentences keep their markers, support needs evidence, extraction, trimming,
and the streamed gate never releases an unverified sentence."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ragbot.generation.grounding import (
    AnswerGate,
    AnswerTrimmer,
    GroundingRules,
    Passage,
    SentenceSplitter,
    Verifier,
    cited_numbers,
    exact_tokens,
    extract,
    passage_sentences,
    render_markers,
    split_sentences,
    strip_markers,
    without_verdict,
)

pytestmark = pytest.mark.unit

PASSAGES = [
    Passage(
        1,
        "Conversations are stored in SQLite by default. Set RAGBOT_DATABASE_URL to use PostgreSQL in "
        "production.",
        "Configuring ragbot",
    ),
    Passage(
        2,
        "The widget accent colour is set with accent_color. Each bot has a public key for its widget.",
        "The widget",
    ),
    Passage(3, "Run ragbot serve to start the HTTP API on port 8000.", "Running the server"),
]


CONCEPTS = {
    "store": ("store", "kept", "keep", "saved"),
    "chat": ("chat", "conversation"),
    "sqlite": ("sqlite",),
    "default": ("default",),
    "widget": ("widget",),
    "port": ("port",),
}


def bag_embed(texts: Sequence[str]) -> list[list[float]]:
    """A deterministic stand-in for the dense model in pure tests: a bag of concepts with synonyms."""
    return [[float(any(w in t.lower() for w in words)) for words in CONCEPTS.values()] for t in texts]


# ------------------------------------------------------------------ sentences and markers
def test_sentences_keep_their_markers_wherever_the_model_put_them() -> None:
    text = "Data lives in SQLite [1]. Use PostgreSQL in production.[1][2] Port 8000! [3] Done"
    assert split_sentences(text) == [
        "Data lives in SQLite [1].",
        "Use PostgreSQL in production.[1][2]",
        "Port 8000! [3]",
        "Done",
    ]


def test_abbreviations_decimals_and_list_items() -> None:
    text = "Use e.g. PostgreSQL. Version 1.5 is out.\n- first item\n- second item [2]"
    assert split_sentences(text) == [
        "Use e.g. PostgreSQL.",
        "Version 1.5 is out.",
        "- first item",
        "- second item [2]",
    ]


def test_a_sentence_is_released_only_once_its_markers_are_known() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Data lives in SQLite.") == []
    assert splitter.feed(" [1") == []
    assert splitter.feed("] ") == []  # a second marker could still follow
    assert splitter.feed("Next") == [("Data lives in SQLite. [1]", False)]
    assert splitter.finish() == [("Next", False)]


def test_markers_are_rendered_before_the_end_punctuation() -> None:
    assert render_markers("Data lives in SQLite. [3]", [1, 2]) == "Data lives in SQLite [1][2]."
    assert render_markers("No punctuation [9]", [1]) == "No punctuation [1]"
    assert render_markers("Nothing cited [2].", []) == "Nothing cited."
    assert cited_numbers("A [2] b [1][2].") == [2, 1]
    assert strip_markers("A [2] b [1][2].") == "A b."


def test_exact_tokens_are_what_a_sentence_cannot_invent() -> None:
    tokens = exact_tokens("The Pro plan costs $49 with @app.route, SKU-1138 and accent_color on v1.2.")
    assert {"$49", "@app.route", "sku-1138", "accent_color", "v1.2", "pro"} <= tokens


# ------------------------------------------------------------------ support
def test_a_sentence_its_passage_states_is_supported_and_cites_it() -> None:
    verdict = Verifier(PASSAGES).check("Conversations are stored in SQLite by default [1].")
    assert verdict.supported and verdict.sources == (1,)


def test_an_invented_number_or_name_is_not_supported_whatever_else_matches() -> None:
    verifier = Verifier(PASSAGES)
    price = verifier.check("Run ragbot serve to start the HTTP API on port 9090 [3].")
    assert not price.supported and "9090" in price.missing_exact
    assert not verifier.check("The widget accent colour is set with the useAccent hook [2].").supported


def test_an_unrelated_sentence_is_not_supported_by_any_source() -> None:
    verdict = Verifier(PASSAGES).check("Bananas are rich in potassium and taste sweet [1].")
    assert not verdict.supported and verdict.sources == ()


def test_a_wrong_marker_is_replaced_by_the_passage_that_supports_the_sentence() -> None:
    verdict = Verifier(PASSAGES).check("Start the HTTP API on port 8000 with ragbot serve [1].")
    assert verdict.supported and verdict.sources == (3,)


def test_a_sentence_without_a_claim_is_neutral() -> None:
    assert Verifier(PASSAGES).check("Sure!").neutral


def test_a_paraphrase_needs_the_dense_model() -> None:
    sentence = "By default your chats are kept in an SQLite database."
    assert not Verifier(PASSAGES).check(sentence).supported  # words alone: too little of it is there
    with_dense = Verifier(PASSAGES, embed=bag_embed).check(sentence)
    assert with_dense.supported and with_dense.sources == (1,) and with_dense.dense is not None


# ------------------------------------------------------------------ extraction
def test_extract_quotes_the_source_sentences_that_answer_the_question() -> None:
    picks = extract("Which port does the HTTP API use?", PASSAGES, embed=None)
    assert [(p.n, p.sentence) for p in picks] == [(3, "Run ragbot serve to start the HTTP API on port 8000.")]


def test_extract_finds_nothing_for_an_unrelated_question() -> None:
    assert extract("What is the capital of Mongolia?", PASSAGES, embed=None) == []


# ------------------------------------------------------------------ trimming and the gate
def test_trimming_stops_at_the_limit_and_at_repetition_keeping_markers() -> None:
    trimmer = AnswerTrimmer(max_words=12)
    assert trimmer.admit("Conversations are stored in SQLite by default [1].")
    assert not trimmer.admit("Set RAGBOT_DATABASE_URL to use PostgreSQL in production [1].")
    assert trimmer.done
    looping = AnswerTrimmer(max_words=100)
    assert looping.admit("SQLite stores conversations by default [1].")
    assert not looping.admit("By default SQLite stores the conversations [1].")
    assert looping.done


def test_the_gate_releases_only_verified_sentences_with_their_supporting_markers() -> None:
    gate = AnswerGate(Verifier(PASSAGES), AnswerTrimmer(max_words=100))
    streamed = "Sure! Conversations are stored in SQLite by default [1]. The Pro plan costs $49 [2]. "
    streamed += "Run ragbot serve to start the HTTP API on port 8000 [1]."
    shown = ""
    for i in range(0, len(streamed), 7):  # arbitrary slices, as tokens arrive
        shown += gate.feed(streamed[i : i + 7])
        assert "$49" not in shown
    shown += gate.finish()
    assert shown == (
        "Sure! Conversations are stored in SQLite by default [1]. "
        "Run ragbot serve to start the HTTP API on port 8000 [3]."
    )
    assert gate.cited == [1, 3]
    assert [s for s, _ in gate.dropped] == ["The Pro plan costs $49 [2]."]


def test_the_gate_drops_a_trailing_neutral_sentence_and_shows_nothing_for_an_invention() -> None:
    gate = AnswerGate(Verifier(PASSAGES), AnswerTrimmer(max_words=100))
    assert gate.feed("Bananas are yellow fruit [1]. ") == ""
    assert gate.feed("Thanks!") + gate.finish() == ""
    assert gate.shown == [] and gate.cited == []


def test_extract_ignores_words_every_passage_shares() -> None:
    # "ragbot" is in every passage's title or text: it says nothing about the price asked for.
    named = [Passage(p.n, f"{p.text} ragbot is open source.", p.title) for p in PASSAGES]
    assert extract("How much does ragbot cost?", named, embed=None) == []
    assert extract("Which port does the ragbot HTTP API use?", named, embed=None)[0].n == 3


def test_extract_never_quotes_a_heading_and_drops_list_bullets() -> None:
    passage = Passage(1, "## Reciprocal rank fusion\n- Reciprocal rank fusion adds 1 / (k + rank) per list.")
    picks = extract("How does reciprocal rank fusion work?", [passage], embed=None)
    assert [p.sentence for p in picks] == ["Reciprocal rank fusion adds 1 / (k + rank) per list."]


def test_a_run_of_dots_is_no_sentence_to_crash_on() -> None:
    assert split_sentences("... Then SQLite. ... [1] Done") == ["...", "Then SQLite.", "... [1]", "Done"]


def test_a_name_in_markdown_emphasis_is_still_checked() -> None:
    assert "graphean" in exact_tokens("* **Graphean**: a company that uses ragbot.")
    assert "conversations" not in exact_tokens("Conversations are stored in SQLite.")  # sentence start


def test_saying_the_question_back_is_no_claim() -> None:
    verifier = Verifier(PASSAGES, question="Which port does the HTTP API use?")
    assert verifier.check("HTTP API port [3].").neutral
    assert verifier.check("Run ragbot serve to start the HTTP API on port 8000 [3].").supported


# ------------------------------------------------------------------ claims stitched together, unknown words
HYBRID = Passage(
    1,
    "ragbot combines sparse and dense retrieval in a single Qdrant query. The query is encoded twice: once "
    "by the SPLADE learned-sparse encoder and once by the dense sentence encoder. Qdrant runs a sparse "
    "prefetch and a dense prefetch, and the two candidate lists are fused into one ranking.\n"
    "Sparse retrieval is precise on rare words such as product names. Dense retrieval understands "
    "paraphrases. The starting fusion method is reciprocal rank fusion, which damps the very first ranks.",
    "Hybrid retrieval",
)


def test_a_claim_is_read_where_the_passage_states_it_not_stitched_from_words_all_over_it() -> None:
    verifier = Verifier([HYBRID], rules=GroundingRules(support_window=2))
    stitched = verifier.check("The encoder lists damp rare paraphrases into a single prefetch [1].")
    assert not stitched.supported  # every word is on the page, none of it says this
    whole_page = Verifier([HYBRID], rules=GroundingRules(support_window=100))
    assert whole_page.check("The encoder lists damp rare paraphrases into a single prefetch [1].").supported
    stated = verifier.check("The two candidate lists are fused into one ranking [1].")
    assert stated.supported and stated.coverage == 1.0
    across_two = verifier.check("The query is encoded by the SPLADE encoder, and Qdrant fuses the lists [1].")
    assert across_two.supported  # two neighbouring sentences state it together


def test_a_word_no_dictionary_knows_must_be_in_the_source() -> None:
    known = {"the", "hybrid", "retrieval", "is", "learned", "sparse", "encoder", "named"}.__contains__
    verifier = Verifier([HYBRID], known_word=known, question="What is SPLADE's retreival like?")
    typo = verifier.check("The hybrid retrieble is a learned sparse encoder [1].")
    assert not typo.supported and typo.missing_exact == ("retrieble",)
    # a word the source writes, or one the visitor used, is no invention
    assert verifier.check("Hybrid retrieval is a learned sparse encoder named SPLADE [1].").supported
    assert "retreival" not in verifier.check("The retreival is a learned sparse encoder [1].").missing_exact
    # without a lookup (a language with no word list) nothing is called unknown
    assert Verifier([HYBRID]).check("The hybrid retrieble is a learned sparse encoder [1].").supported


def test_the_word_lookup_knows_real_words_in_the_languages_asked() -> None:
    from ragbot.generation.lexicon import known_word

    english = known_word(["en", "und"])
    assert english is not None
    assert english("retrieval") and english("modules") and not english("retrieble")
    german = known_word(["de"])
    assert german is not None and german("rückerstattung")
    assert known_word(["und", "xx"]) is None


def test_a_hard_wrapped_paragraph_is_read_as_its_sentences() -> None:
    text = (
        "# Hybrid retrieval\n\nragbot combines sparse and dense retrieval. "
        "The query is encoded twice: once by\n"
        "the SPLADE encoder and once by the dense encoder. Qdrant fuses\nthe two lists.\n"
        "- a list item\n- another one\n| a | table |"
    )
    assert passage_sentences(text) == [
        "# Hybrid retrieval",
        "ragbot combines sparse and dense retrieval.",
        "The query is encoded twice: once by the SPLADE encoder and once by the dense encoder.",
        "Qdrant fuses the two lists.",
        "- a list item",
        "- another one",
        "| a | table |",
    ]


def test_a_bare_yes_or_no_is_never_shown_only_the_claim_after_it() -> None:
    assert without_verdict("No, connectors read websites [1].") == "Connectors read websites [1]."
    assert without_verdict("Yes. It does.") == "It does."
    assert without_verdict("Nothing to strip.") == "Nothing to strip."
    assert without_verdict("Notably, yes.") == "Notably, yes."
    assert without_verdict("No data leaves the server.") == "No data leaves the server."  # not a verdict
    assert without_verdict("No-code setup works.") == "No-code setup works."
    gate = AnswerGate(Verifier(PASSAGES), AnswerTrimmer(max_words=100))
    shown = gate.feed("Yes, you do. No, conversations are stored in SQLite by default [1]. ")
    shown += gate.finish()
    assert shown == "Conversations are stored in SQLite by default [1]."
    assert [s for s, _ in gate.dropped] == ["Yes, you do."]
