"""Knowledge-base search: the ranked passages for a query, with highlighted snippets, and no LLM call.

The backend of a help-center search box (``POST /v1/search``) and of the LangChain retriever. Retrieval is
the chat's own (``Retriever.retrieve``: the same fusion, the same per-bot calibration), so a search shows
what the bot would have read.

Highlighting is pure and works on words, never on raw substrings: the query and every word of a passage
go through the BM25 encoder's analysis (``query_terms()`` for the query: stop words dropped; ``terms()`` for
the passage's words: case folding, the language's Snowball stemmer, names such as "XK-200" as a whole), so
"refunds" highlights "refunded" and "the" highlights nothing. A passage is analyzed in its own language, and
the query in that language too, so both sides are stemmed the same way. Spans are offsets into the returned
text in Unicode code points; ``snippet_html`` is the same snippet HTML-escaped with ``<mark>`` around each
span, so no source text ever reaches a page unescaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from ragbot.encoders.lexical import UNDETERMINED
from ragbot.retrieval.explain import fold
from ragbot.tenancy.principals import Caller, VisitorPrincipal
from ragbot.tenancy.ratelimit import Limit
from ragbot.types import Hit, MatchedTerm

if TYPE_CHECKING:
    from ragbot.runtime import Runtime
    from ragbot.tenancy.bots import BotProfile

__all__ = [
    "ELLIPSIS",
    "MAX_TOP_K",
    "SNIPPET_CHARS",
    "Passage",
    "SearchService",
    "Snippet",
    "Span",
    "TermAnalyzer",
    "best_window",
    "highlight_spans",
    "make_snippet",
    "query_keys",
    "search_limits",
    "search_service",
    "to_html",
]

Span = tuple[int, int]

#: The most passages one search returns (a page of a help-center search, not an export).
MAX_TOP_K = 50
#: Characters of passage text a snippet shows around its best-matching words.
SNIPPET_CHARS = 240
ELLIPSIS = "…"

#: A word: letters, digits and marks; a compound keeps its inner joiners ("XK-200", "v2.1", "o'clock").
_WORD = re.compile(r"\w+")
_JOINERS = "-_.'’/:+#"
_COMPOUND = re.compile(rf"\w+(?:[{re.escape(_JOINERS)}]\w+)+")
#: Snowball's English stop list, contractions aside (they are not single words): the words a highlight skips.
_ENGLISH_FUNCTION_WORDS = frozenset(
    [
        "i",
        "me",
        "my",
        "myself",
        "we",
        "our",
        "ours",
        "ourselves",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "he",
        "him",
        "his",
        "himself",
        "she",
        "her",
        "hers",
        "herself",
        "it",
        "its",
        "itself",
        "they",
        "them",
        "their",
        "theirs",
        "themselves",
        "what",
        "which",
        "who",
        "whom",
        "this",
        "that",
        "these",
        "those",
        "am",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "having",
        "do",
        "does",
        "did",
        "doing",
        "would",
        "should",
        "could",
        "ought",
        "a",
        "an",
        "the",
        "and",
        "but",
        "if",
        "or",
        "because",
        "as",
        "until",
        "while",
        "of",
        "at",
        "by",
        "for",
        "with",
        "about",
        "against",
        "between",
        "into",
        "through",
        "during",
        "before",
        "after",
        "above",
        "below",
        "to",
        "from",
        "up",
        "down",
        "in",
        "out",
        "on",
        "off",
        "over",
        "under",
        "again",
        "further",
        "then",
        "once",
        "here",
        "there",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "no",
        "nor",
        "not",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "can",
        "will",
        "just",
    ]
)
_HEADING_MARK = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?…]\s")


class TermAnalyzer(Protocol):
    """What highlighting needs of the BM25 encoder (``ragbot.encoders.lexical.Bm25Encoder``)."""

    default_language: str

    def terms(self, text: str, language: str | None = None) -> list[str]:
        """A text's indexed terms: normalised and stemmed in ``language``, every word kept."""
        ...

    def query_terms(self, text: str, languages: Iterable[str] | None = None) -> list[str]:
        """A query's terms analysed under each of ``languages``, stop words dropped."""
        ...


@dataclass(frozen=True, slots=True)
class Snippet:
    text: str
    highlights: tuple[Span, ...]

    @property
    def html(self) -> str:
        return to_html(self.text, self.highlights)


@dataclass(frozen=True, slots=True)
class Passage:
    """One search result: the hit, where it came from, and what to show of it."""

    rank: int
    hit: Hit
    snippet: Snippet
    highlights: tuple[Span, ...]  # in the chunk's full text
    title_highlights: tuple[Span, ...]
    language: str | None

    @property
    def scores(self) -> dict[str, float | None]:
        h = self.hit
        return {"hybrid": h.score, "sparse": h.sparse_score, "dense": h.dense_score, "bm25": h.bm25_score}

    @property
    def ranks(self) -> dict[str, int | None]:
        h = self.hit
        return {"sparse": h.sparse_rank, "dense": h.dense_rank, "bm25": h.bm25_rank}


# --- pure: highlighting and snippets ---------------------------------------------------------------------


def highlight_spans(
    text: str, query_terms: Iterable[str], analyze: Callable[[str], Sequence[str]]
) -> list[Span]:
    """Spans of the words of ``text`` whose analyzed terms include one of ``query_terms`` (already
    analyzed the same way), in order, never overlapping.

    A name ("XK-200") is highlighted whole when the query has a term of the whole name, or all of its
    words; otherwise each of its words is looked at alone, so "sparse" in "sparse/dense" lights up only
    "sparse", and "XK" alone lights up the "XK" of "XK-100".
    """
    wanted = {t for t in query_terms if t}
    if not wanted or not text:
        return []
    spans: list[Span] = []
    for m in _COMPOUND.finditer(text):
        own = set(analyze(m.group())).difference(*(analyze(w) for w in _WORD.findall(m.group())))
        if own & wanted:  # a term of the whole name (e.g. "xk200"), not of one of its words
            spans.append(m.span())
    whole = list(spans)
    for word in _WORD.finditer(text):
        start, end = word.span()
        if any(s <= start < e for s, e in whole):
            continue
        if wanted.intersection(analyze(word.group())):
            spans.append((start, end))
    return _join(text, sorted(spans))


def _join(text: str, spans: list[Span]) -> list[Span]:
    """Adjacent matches one joiner apart read as one ("XK-200" rather than "XK" and "200")."""
    joined: list[Span] = []
    for start, end in spans:
        if joined and start == joined[-1][1] + 1 and text[start - 1] in _JOINERS:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return joined


def best_window(length: int, spans: Sequence[Span], keys: Sequence[str], size: int) -> Span:
    """The ``size``-character window of a text of ``length`` that shows the most distinct matched terms
    (``keys[i]`` names what ``spans[i]`` matched), then the most matches, then the earliest; with a little
    context before its first match. A text that fits is shown whole."""
    if length <= size or not spans:
        return 0, min(length, size)
    lead = size // 6
    best: tuple[int, int, int] | None = None
    best_start = 0
    for anchor, _ in spans:
        start = max(0, min(anchor - lead, length - size))
        inside = [i for i, (s, e) in enumerate(spans) if s >= start and e <= start + size]
        score = (len({keys[i] for i in inside}), len(inside), -start)
        if best is None or score > best:
            best, best_start = score, start
    return best_start, best_start + size


def make_snippet(
    text: str,
    spans: Sequence[Span],
    keys: Sequence[str] | None = None,
    size: int = SNIPPET_CHARS,
) -> Snippet:
    """The passage's best window as one line of plain text (whitespace collapsed), cut at word
    boundaries (at a sentence start where one is near), with ``…`` where text was left out, and the
    spans that fall inside it, moved to the snippet's offsets."""
    flat, position = _collapse(text)
    moved = [(position[s], position[e - 1] + 1) for s, e in spans if e > s]
    names = list(keys) if keys is not None else [flat[s:e].lower() for s, e in moved]
    start, end = best_window(len(flat), moved, names, size)
    if end < len(flat):
        end = _word_end(flat, start, end, moved)
    if start > 0:
        first = min((s for s, e in moved if s >= start and e <= end), default=start)
        start = _word_start(flat, start, first, moved, reach=size // 8)
    prefix = ELLIPSIS + " " if start > 0 else ""
    suffix = " " + ELLIPSIS if end < len(flat) else ""
    body = flat[start:end].strip()
    shift = len(prefix) - start - (len(flat[start:end]) - len(flat[start:end].lstrip()))
    kept = tuple((s + shift, e + shift) for s, e in moved if s >= start and e <= end)
    return Snippet(prefix + body + suffix, kept)


def to_html(text: str, spans: Sequence[Span]) -> str:
    """``text`` HTML-escaped, each span wrapped in ``<mark>``; spans are assumed sorted and disjoint."""
    out: list[str] = []
    at = 0
    for start, end in spans:
        if start < at or end <= start or end > len(text):
            continue
        out.append(html.escape(text[at:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def _collapse(text: str) -> tuple[str, list[int]]:
    """``text`` as one line: each whitespace run one space, Markdown heading marks (``## ``) dropped, no
    leading or trailing space; and for every original offset its offset in that line."""
    dropped = {i for m in _HEADING_MARK.finditer(text) for i in range(*m.span())}
    out: list[str] = []
    position: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        if ch.isspace() or i in dropped:
            pending_space = bool(out)
            position.append(len(out))
            continue
        if pending_space:
            out.append(" ")
            pending_space = False
        position.append(len(out))
        out.append(ch)
    return "".join(out), position


def _inside(offset: int, spans: Sequence[Span]) -> Span | None:
    return next(((s, e) for s, e in spans if s < offset < e), None)


def _word_start(flat: str, start: int, first_match: int, spans: Sequence[Span], *, reach: int) -> int:
    """Move a window's start to the last sentence start before its first match (looking up to ``reach``
    characters before the window too), else to the start of a word."""
    look_back = max(0, start - reach)
    sentence = None
    for m in _SENTENCE_END.finditer(flat, look_back, max(look_back, first_match)):
        sentence = m.end()
    if sentence is not None:
        return sentence
    if flat[start - 1].isspace():
        return start
    cut = _inside(start, spans)
    if cut is not None:
        return cut[0]  # never cut a highlighted word: show it whole
    space = flat.find(" ", start)
    return space + 1 if space != -1 else start


def _word_end(flat: str, start: int, end: int, spans: Sequence[Span]) -> int:
    """Move a window's end back to the end of a word (a window that is one long word keeps its cut)."""
    cut = _inside(end, spans)
    if cut is not None:
        return cut[1]
    if end < len(flat) and not flat[end].isspace() and not flat[end - 1].isspace():
        space = flat.rfind(" ", start + 1, end)
        if space > start:
            return space
    return end


# --- the service -----------------------------------------------------------------------------------------


class _Retriever(Protocol):
    def retrieve(self, bot_id: str, query: str, top_k: int) -> list[Hit]: ...


class SearchService:
    """Ranked passages with snippets, for one bot; ``analyzer`` is the BM25 encoder and ``detect_language``
    its language detection, so highlighting matches what BM25 matched."""

    def __init__(
        self,
        retriever: _Retriever,
        analyzer: TermAnalyzer | None = None,
        detect_language: Callable[[str], str] | None = None,
        *,
        snippet_chars: int = SNIPPET_CHARS,
    ) -> None:
        from ragbot.encoders import lexical

        self._retriever = retriever
        self._analyzer: TermAnalyzer = analyzer or lexical.Bm25Encoder()
        self._detect = detect_language or lexical.detect_language
        self._snippet_chars = snippet_chars

    def search(self, bot_id: str, query: str, top_k: int) -> list[Passage]:
        """The ``top_k`` best passages of the bot for ``query``, best first (``ValueError`` on an empty
        query or a ``top_k`` outside 1..``MAX_TOP_K``)."""
        if not query.strip():
            raise ValueError("query is empty")
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        hits = self._retriever.retrieve(bot_id, query, top_k)
        return [self.passage(rank, query, hit) for rank, hit in enumerate(hits, start=1)]

    def passage(self, rank: int, query: str, hit: Hit) -> Passage:
        chunk = hit.chunk
        detected = self._detect(chunk.text)
        language = detected if detected != UNDETERMINED else self._analyzer.default_language
        analyze = _cached(self._analyzer, language)
        wanted = query_keys(query, hit.matched_terms, self._analyzer, language)
        spans = highlight_spans(chunk.text, wanted, analyze)
        keys = [_key(chunk.text[s:e], analyze, wanted) for s, e in spans]
        return Passage(
            rank=rank,
            hit=hit,
            snippet=make_snippet(chunk.text, spans, keys, self._snippet_chars),
            highlights=tuple(spans),
            title_highlights=tuple(highlight_spans(chunk.title, wanted, analyze)),
            language=detected if detected != UNDETERMINED else None,
        )


def search_service(runtime: Runtime) -> SearchService:
    """The search over a runtime's served retriever, highlighting with its BM25 encoder (which analyses
    text whether or not BM25 retrieval is switched on)."""
    return SearchService(runtime.retriever, runtime.lexical_encoder)


def query_keys(query: str, matched: Sequence[MatchedTerm], analyzer: TermAnalyzer, language: str) -> set[str]:
    """What to highlight in a passage of ``language``: the query's terms analysed in that language, plus
    the retrievers' matched terms that occur in the passage's text (a SPLADE expansion such as "price" for
    "cost"); word pieces (``##...``) are left out. English function words ("how", "do", "I") are left out
    too: BM25's short English stop list keeps them (IDF makes them harmless there), but lit up in a
    snippet they only hide the words that matter. Accents are folded on both sides ("cafe" finds "Café",
    as SPLADE's uncased vocabulary does)."""
    keys = set(analyzer.query_terms(query, [language]))
    if language == "en":
        function = {
            t
            for w in _WORD.findall(query.casefold())
            if w in _ENGLISH_FUNCTION_WORDS
            for t in analyzer.terms(w, language)
        }
        keys = keys - function or keys
    for term in matched:
        if term.in_text and not term.term.startswith("##"):
            keys.update(analyzer.terms(term.term, language))
    return {fold(k) for k in keys}


def _key(word: str, analyze: Callable[[str], Sequence[str]], wanted: set[str]) -> str:
    found = [t for t in analyze(word) if t in wanted]
    return found[0] if found else word.lower()


def _cached(analyzer: TermAnalyzer, language: str) -> Callable[[str], Sequence[str]]:
    """``analyzer.terms`` in one language, accents folded, remembered per word (words recur)."""

    @lru_cache(maxsize=4096)
    def analyze(text: str) -> tuple[str, ...]:
        return tuple(fold(t) for t in analyzer.terms(text, language))

    return analyze


# --- pure: rate limits -----------------------------------------------------------------------------------


def search_limits(profile: BotProfile, caller: Caller, client_ip: str | None) -> list[Limit]:
    """A visitor's searches count against the bot's per-visitor and per-IP minute limits, on counters of
    their own (searching never eats the chat allowance); no LLM runs, so nothing counts against the daily
    message budget, and server-to-server searches (admin keys) are not limited."""
    if not isinstance(caller, VisitorPrincipal):
        return []
    bot = profile.id
    limits = [Limit("visitor", f"search:{bot}:{caller.visitor_id}", profile.rate_visitor_per_minute, 60)]
    if client_ip:
        limits.append(Limit("ip", f"search-ip:{bot}:{client_ip}", profile.rate_ip_per_minute, 60))
    return limits
