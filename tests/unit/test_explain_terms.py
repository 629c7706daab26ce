from __future__ import annotations

import pytest

from ragbot.retrieval.explain import TermPresence, fold, matched_terms
from ragbot.types import MatchedTerm, SparseVector

pytestmark = pytest.mark.unit

VOCAB = ["[PAD]", "refund", "policy", "money", "back", "token", "##ization", "cat", "cafe", "##s", "30", "$"]


def term_of(index: int) -> str:
    return VOCAB[index]


def sv(weights: dict[int, float]) -> SparseVector:
    keys = sorted(weights)
    return SparseVector(tuple(keys), tuple(weights[k] for k in keys))


def test_contributions_are_query_times_doc_weights_largest_first() -> None:
    query = sv({1: 2.0, 2: 0.5, 3: 1.0})
    doc = sv({1: 1.5, 2: 2.0, 4: 9.0})
    terms = matched_terms(query, doc, term_of, "Our refund policy.")
    assert terms == (MatchedTerm("refund", 3.0, True), MatchedTerm("policy", 1.0, True))
    assert sum(t.contribution for t in terms) == pytest.approx(3.0 + 1.0)  # = the sparse dot product


def test_expansion_terms_absent_from_the_text_are_flagged() -> None:
    # SPLADE expanded the document with "money" and "back", which its text never says.
    query = sv({3: 1.0, 4: 0.8, 1: 0.5})
    doc = sv({1: 2.0, 3: 0.7, 4: 0.4})
    terms = {t.term: t.in_text for t in matched_terms(query, doc, term_of, "Refunds: see the REFUND page.")}
    assert terms == {"refund": True, "money": False, "back": False}


def test_limit_keeps_the_top_contributions_and_ties_are_ordered_by_term() -> None:
    query = sv({1: 1.0, 2: 1.0, 3: 1.0})
    doc = sv({1: 1.0, 2: 1.0, 3: 2.0})
    assert [t.term for t in matched_terms(query, doc, term_of, "", limit=2)] == ["money", "policy"]
    assert matched_terms(query, doc, term_of, "", limit=0) == ()


def test_no_shared_terms_means_no_explanation() -> None:
    assert matched_terms(sv({1: 1.0}), sv({2: 1.0}), term_of, "refund policy") == ()
    assert matched_terms(SparseVector((), ()), sv({2: 1.0}), term_of, "policy") == ()


@pytest.mark.parametrize(
    ("text", "term", "doc_terms", "expected"),
    [
        ("The Café opens at 9", "cafe", (), True),  # case and accents folded like BERT-uncased
        ("tokenization matters", "##ization", (), True),  # a piece inside a word
        ("ization alone", "##ization", (), False),  # a ## piece never starts a word
        ("tokenization matters", "token", ("token", "##ization"), True),  # word-initial piece of a split word
        ("category pages", "cat", ("category",), False),  # a mere prefix is not the word
        ("two cats", "cat", ("cat", "##s"), True),
        ("costs $30", "$", (), True),
        ("costs 30", "$", (), False),
        ("within 30 days", "30", (), True),
        ("within 300 days", "30", (), False),
    ],
)
def test_term_presence(text: str, term: str, doc_terms: tuple[str, ...], expected: bool) -> None:
    assert TermPresence(text, doc_terms)(term) is expected


def test_the_documents_own_pieces_are_used_for_split_words() -> None:
    query = sv({5: 1.0, 6: 1.0})
    doc = sv({5: 1.0, 6: 0.5})
    terms = matched_terms(query, doc, term_of, "Tokenization is the first step.")
    assert [(t.term, t.in_text) for t in terms] == [("token", True), ("##ization", True)]


def test_fold() -> None:
    assert fold("Ünïcode CAFÉ") == "unicode cafe"


def test_terms_with_a_negligible_share_of_the_score_are_left_out() -> None:
    query = sv({1: 1.0, 2: 1.0, 3: 1.0})
    doc = sv({1: 5.0, 2: 0.05, 3: 0.2})  # total 5.25: "policy" gives 1 %, "money" 3.8 %
    assert [t.term for t in matched_terms(query, doc, term_of, "refund")] == ["refund", "money"]
    assert len(matched_terms(query, doc, term_of, "refund", min_share=0.0)) == 3
