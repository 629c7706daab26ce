"""Which sources support an answer that cited none: lexical attribution for models too small to cite.

SmolLM2-135M answers from its sources more often than it writes ``[n]`` markers. Showing such an answer
without sources would hide where it came from; inventing markers would be worse. This module does what
post-hoc attribution systems do: each answer sentence is matched to the source holding the largest share
of its content words, and a source counts as support only when that share reaches ``min_support``. An
answer that drifted away from its sources gets no attribution at all.

Pure functions over strings, no model: the caller decides whether to show the result (e.g. as markers
appended to the answer) and should store it as attributed, not as cited by the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["attribute_sources", "content_words"]

_WORD = re.compile(r"[^\W_]+(?:[-_.][^\W_]+)*", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# Function words carry no evidence of where a sentence came from.
FUNCTION_WORDS = frozenset(
    " ".join(
        (
            "a about above after again all also am an and any are as at be because been before being below",
            "between both but by can could did do does doing down during each few for from further had has",
            "have having he her here hers him his how i if in into is it its itself just me more most my no",
            "nor not now of off on once only or other our ours out over own same she should so some such",
            "than that the their them then there these they this those through to too under until up very",
            "was we were what when where which while who whom why will with would you your yours one two",
            "use used using uses",
        )
    ).split()
)


def content_words(text: str) -> set[str]:
    return {
        w
        for w in (m.group(0).lower() for m in _WORD.finditer(text))
        if len(w) > 2 and w not in FUNCTION_WORDS
    }


def attribute_sources(answer: str, sources: Sequence[str], *, min_support: float = 0.6) -> list[int]:
    """1-based numbers of the sources that support ``answer``, in the order the answer relies on them."""
    vocabularies = [content_words(text) for text in sources]
    found: list[int] = []
    for sentence in _SENTENCE.split(answer):
        words = content_words(sentence)
        if len(words) < 3:  # "Yes." or a heading: too little to attribute
            continue
        best, best_share = 0, 0.0
        for n, vocabulary in enumerate(vocabularies, start=1):
            share = len(words & vocabulary) / len(words)
            if share > best_share:
                best, best_share = n, share
        if best and best_share >= min_support and best not in found:
            found.append(best)
    return found
