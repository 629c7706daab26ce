"""Why a chunk matched: the vocabulary terms behind its sparse score, or its BM25 terms (pure, no I/O).

A SPLADE score is the dot product of query and document weights, so each shared vocabulary term
contributes ``q_w * d_w`` and the contributions add up to the score exactly. SPLADE also *expands* texts
with terms they do not contain; ``in_text`` tells those apart, so a UI can highlight real words and label
the rest as related.

The check works on WordPiece vocabularies (``##`` marks a piece inside a word) with BERT-uncased
normalisation (case and accents folded). A word-initial piece such as ``token`` counts as present when a word
in the text starts with it and the document's own terms hold a ``##`` piece that continues it
(``tokenization`` = ``token`` + ``##ization``); a mere prefix (``cat`` in ``category``) does not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ragbot.chunking import context_text
from ragbot.types import Chunk, MatchedTerm, SparseVector

if TYPE_CHECKING:
    from ragbot.encoders.lexical import Bm25Encoder

_WORD = re.compile(r"\w+")
_PIECE_MARK = "##"


def matched_terms(
    query: SparseVector,
    doc: SparseVector,
    term_of: Callable[[int], str],
    text: str,
    limit: int = 8,
    min_share: float = 0.02,
) -> tuple[MatchedTerm, ...]:
    """The ``limit`` largest per-term contributions to ``query . doc``, largest first.

    Terms giving less than ``min_share`` of the score are left out: SPLADE spreads small weights over
    loosely related terms (on MS MARCO, "illinois" under a query about hypertrophy), which explain nothing.
    """
    if limit <= 0:
        return ()
    doc_weights = doc.as_dict()
    shared = [
        (index, q_w * doc_weights[index])
        for index, q_w in zip(query.indices, query.values, strict=True)
        if index in doc_weights and q_w * doc_weights[index] > 0
    ]
    floor = min_share * sum(c for _, c in shared)
    named = [(term_of(index), c) for index, c in shared if c >= floor]
    named.sort(key=lambda tc: (-tc[1], tc[0]))
    top = named[:limit]
    if not top:
        return ()
    presence = TermPresence(text, (term_of(i) for i in doc.indices))
    return tuple(MatchedTerm(term=term, contribution=c, in_text=presence(term)) for term, c in top)


class TermPresence:
    """Answers "does this vocabulary term occur in the text?" for one text, reusing its word list."""

    def __init__(self, text: str, doc_terms: Iterable[str] = ()) -> None:
        self._folded = fold(text)
        self._words = set(_WORD.findall(self._folded))
        self._continuations = {
            t[len(_PIECE_MARK) :] for t in map(fold, doc_terms) if t.startswith(_PIECE_MARK)
        }

    def __call__(self, term: str) -> bool:
        folded = fold(term)
        if folded.startswith(_PIECE_MARK) and len(folded) > len(_PIECE_MARK):
            piece = folded[len(_PIECE_MARK) :]
            return any(word.find(piece, 1) > 0 for word in self._words)
        if not folded or not _WORD.fullmatch(folded):
            return bool(folded) and folded in self._folded  # punctuation and symbols: plain substring
        if folded in self._words:
            return True
        return any(
            word.startswith(folded) and self._continues(word[len(folded) :])
            for word in self._words
            if len(word) > len(folded)
        )

    def _continues(self, rest: str) -> bool:
        return any(rest[:end] in self._continuations for end in range(1, len(rest) + 1))


def fold(text: str) -> str:
    """BERT-uncased normalisation: lower case, accents stripped (``Café`` -> ``cafe``)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def lexical_matched_terms(
    query_terms: Sequence[str], doc: SparseVector, encoder: Bm25Encoder, chunk: Chunk, limit: int = 8
) -> tuple[MatchedTerm, ...]:
    """The query's BM25 terms the chunk's stored vector holds, largest document weight first.

    A term is named by the word as the passage (or its title and headings, which are indexed with it)
    writes it, not by its stem; ``in_text`` is False for one only the title or headings hold. The
    contribution is the document's BM25 term weight (the engine applies IDF, which is not known here).
    """
    if limit <= 0:
        return ()
    from ragbot.encoders.lexical import term_id

    weights = doc.as_dict()
    found = [
        (term, weights[term_id(term)]) for term in dict.fromkeys(query_terms) if term_id(term) in weights
    ]
    if not found:
        return ()
    found.sort(key=lambda tw: (-tw[1], tw[0]))
    body = {term: surface for surface, term in reversed(encoder.analyze(chunk.text))}
    context = {term: surface for surface, term in reversed(encoder.analyze(context_text(chunk)))}
    return tuple(
        MatchedTerm(term=body.get(term) or context.get(term) or term, contribution=w, in_text=term in body)
        for term, w in found[:limit]
    )
