"""Ending a small model's answer when it is complete: the sentence gate behind the embedded LLM.

Small instruct models (SmolLM2-135M) answer in a sentence or two and then keep going until the token cap:
they restate the answer in other words ("The dense retrieval is a combination that combines sparse and
sparse..."), since the no-repeat logits processor stops verbatim loops but not paraphrased ones. The
gate reads the streamed text sentence by sentence and ends the answer at the first sentence that adds
almost nothing new: most of its content words were already said in this answer.

* The first sentence streams through as it is generated, so first-token latency is unchanged; later
  sentences are released whole once they end, so a dropped sentence was never shown.
* When generation stops at the token cap, the unfinished last sentence is dropped rather than shown cut
  off mid-word (unless it is the only one).
* Citation markers are never split or lost: markers right after a sentence's full stop belong to it,
  and the markers of a dropped sentence that the kept text does not already carry are appended to it.

Pure text logic, no model: ``ragbot.generation.local_provider`` feeds it decoded pieces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["SentenceGate", "content_words"]

_MARKER = re.compile(r"\[\s*\^?\s*\d{1,3}(?:\s*,\s*\^?\s*\d{1,3})*\s*\]")
# A sentence ends at . ! ? (closing quotes or brackets may follow), then any citation markers, then
# whitespace and the first character of the next sentence; or at a line break.
_BOUNDARY = re.compile(
    r"""[.!?]["')\u201d\u2019*]*(?:\s*\[\s*\^?\s*\d{1,3}(?:\s*,\s*\^?\s*\d{1,3})*\s*\])*(?=\s+[^\s\[])"""
    r"""|\n"""
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "your",
        "with",
        "this",
        "that",
        "these",
        "those",
        "from",
        "into",
        "than",
        "then",
        "them",
        "they",
        "their",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "can",
        "could",
        "should",
        "would",
        "will",
        "its",
        "it's",
        "was",
        "were",
        "been",
        "being",
        "has",
        "have",
        "had",
        "does",
        "did",
        "also",
        "just",
        "only",
        "very",
        "more",
        "most",
        "such",
        "some",
        "other",
        "each",
        "both",
        "use",
        "used",
        "using",
        "about",
        "over",
        "under",
        "between",
        "through",
        "our",
        "out",
        "one",
        "two",
        "may",
        "might",
        "must",
        "shall",
    }
)


def content_words(text: str) -> list[str]:
    """Lower-cased words of three or more letters that are not function words; markers ignored."""
    text = _MARKER.sub(" ", text)
    return [w for w in (m.lower() for m in _WORD.findall(text)) if len(w) >= 3 and w not in _STOPWORDS]


def _markers(text: str) -> list[str]:
    return [" ".join(m.split()) for m in _MARKER.findall(text)]


@dataclass
class SentenceGate:
    """Feed decoded pieces; emit what may be shown; ``stopped`` turns True at a redundant sentence.

    ``redundancy``: a sentence is redundant when at least this share of its content words (and at least
    ``min_words`` of them) already appeared in the answer. 0 or less turns the check off.
    """

    redundancy: float = 0.7
    min_words: int = 3
    stopped: bool = False
    sentences: int = 0  # complete sentences accepted so far
    _current: str = ""  # text of the sentence being received
    _live: int = 0  # characters of ``_current`` already shown (the first sentence streams live)
    _shown: list[str] = field(default_factory=list)
    _said: set[str] = field(default_factory=set)

    @property
    def shown(self) -> str:
        return "".join(self._shown)

    def feed(self, piece: str) -> str:
        """Add a decoded piece; return the text that is now safe to show (possibly empty)."""
        if self.stopped or not piece:
            return ""
        self._current += piece
        out: list[str] = []
        while not self.stopped:
            match = _BOUNDARY.search(self._current)
            if match is None:
                break
            sentence, self._current = self._current[: match.end()], self._current[match.end() :]
            unseen, self._live = sentence[self._live :], max(0, self._live - len(sentence))
            out.append(self._accept(sentence, unseen))
        if self.sentences == 0 and not self.stopped:
            # Still inside the first sentence: show it as it comes (there is nothing to repeat yet).
            out.append(self._show(self._current[self._live :]))
            self._live = len(self._current)
        return "".join(out)

    def finish(self, *, truncated: bool) -> str:
        """The end of generation: release the held text, or drop it when the cap cut it off mid-sentence."""
        if self.stopped:
            return ""
        tail, unseen = self._current, self._current[self._live :]
        self._current, self._live = "", 0
        if truncated and self.sentences > 0 and tail.strip():
            return self._carry_markers(tail)
        return self._show(unseen)

    # ------------------------------------------------------------------ internals
    def _show(self, text: str) -> str:
        if text:
            self._shown.append(text)
        return text

    def _accept(self, sentence: str, unseen: str) -> str:
        words = content_words(sentence)
        if self.sentences > 0 and self.redundancy > 0 and len(words) >= self.min_words:
            seen = sum(1 for w in words if w in self._said)
            if seen / len(words) >= self.redundancy:
                self.stopped = True
                return self._carry_markers(sentence)
        self.sentences += 1
        self._said.update(words)
        return self._show(unseen)

    def _carry_markers(self, dropped: str) -> str:
        """Markers of a dropped sentence that the shown text lacks, appended to the shown text."""
        shown = self.shown
        have = set(_markers(shown))
        extra = [m for m in dict.fromkeys(_markers(dropped)) if m not in have]
        if not extra:
            return ""
        return self._show(("" if not shown or shown.endswith((" ", "\n")) else " ") + "".join(extra))
