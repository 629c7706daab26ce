from __future__ import annotations

import pytest

from ragbot.generation.local_stop import SentenceGate, content_words

pytestmark = pytest.mark.unit


def _run(gate: SentenceGate, text: str, *, step: int = 3, truncated: bool = False) -> str:
    out = [gate.feed(text[i : i + step]) for i in range(0, len(text), step)]
    if not gate.stopped:
        out.append(gate.finish(truncated=truncated))
    return "".join(out)


def test_answer_ends_at_a_sentence_that_restates_it() -> None:
    gate = SentenceGate()
    text = (
        "ragbot fuses the sparse and dense lists with reciprocal rank fusion [1]. "
        "It needs Python 3.11 or newer [2]. "
        "The sparse and dense lists are fused with reciprocal rank fusion. "
        "More text that must never be shown."
    )
    shown = _run(gate, text)
    assert gate.stopped
    assert shown == (
        "ragbot fuses the sparse and dense lists with reciprocal rank fusion [1]. "
        "It needs Python 3.11 or newer [2]."
    )


def test_first_sentence_streams_live_and_later_ones_whole() -> None:
    gate = SentenceGate()
    assert gate.feed("ragbot ") == "ragbot "  # nothing to repeat yet: shown at once
    assert gate.feed("combines retrievers.") == "combines retrievers."
    assert gate.feed(" Dense vectors") == ""  # the first sentence is over: the next one is held
    assert gate.feed(" catch paraphrases.") == ""
    assert gate.feed(" Then") == " Dense vectors catch paraphrases."
    assert gate.finish(truncated=False) == " Then"


def test_markers_after_a_full_stop_stay_with_their_sentence() -> None:
    gate = SentenceGate()
    shown = _run(gate, "SPLADE adds expansion terms. [2] [3] A refund passage gains money.", step=2)
    assert shown == "SPLADE adds expansion terms. [2] [3] A refund passage gains money."


def test_a_dropped_sentence_hands_its_new_markers_to_the_answer() -> None:
    gate = SentenceGate()
    text = "Sparse vectors live in an inverted index [1]. Sparse vectors are kept in an inverted index [2]."
    shown = _run(gate, text + " Extra.")
    assert gate.stopped
    assert shown == "Sparse vectors live in an inverted index [1]. [2]"


def test_a_sentence_cut_by_the_token_cap_is_dropped_but_not_the_only_one() -> None:
    gate = SentenceGate()
    shown = _run(gate, "Run make test to run the suite [1]. It also runs the lin", truncated=True)
    assert shown == "Run make test to run the suite [1]. "
    only = SentenceGate()
    assert _run(only, "Run make test to run", truncated=True) == "Run make test to run"


def test_a_cut_sentence_keeps_its_marker() -> None:
    gate = SentenceGate()
    shown = _run(
        gate, "Use PostgreSQL in production [1]. Qdrant runs as a server [2] for the", truncated=True
    )
    assert shown.endswith("[1]. [2]")


def test_short_sentences_and_disabled_gate_are_not_cut() -> None:
    gate = SentenceGate()
    assert _run(gate, "Yes [1]. Yes. Yes indeed.") == "Yes [1]. Yes. Yes indeed."
    off = SentenceGate(redundancy=0)
    text = "Dense retrieval finds paraphrases. Dense retrieval finds paraphrases too."
    assert _run(off, text) == text


def test_line_breaks_end_sentences_for_lists() -> None:
    gate = SentenceGate()
    text = "Owner modes:\n- bot, pending human, human or resolved\n- bot, pending human, human, resolved\n"
    shown = _run(gate, text)
    assert gate.stopped
    assert shown == "Owner modes:\n- bot, pending human, human or resolved\n"


def test_content_words_ignore_markers_case_and_function_words() -> None:
    assert content_words("The SPLADE encoder [1] is used for the index [2, 3].") == [
        "splade",
        "encoder",
        "index",
    ]
