"""Is each answer sentence supported by the passage it cites? Sentence splitting, support, extraction.

A 135M model invents content often enough that showing its text unchecked is not an option, and a
citation marker it writes proves nothing. Every answer sentence is therefore checked, with evidence, against
the passages it cites (or every source, when it cites none), before the visitor sees it:

* **exact tokens** (numbers, prices, versions, identifiers such as ``@app.route`` or ``SKU-1138``,
  capitalised names) in the sentence must occur in the passage: an invented price or decorator fails here
  whatever else matches;
* **words no dictionary knows** (a misspelling such as "retrieble", an invented product name) count as
  exact tokens too, unless the question used them: with a ``known_word`` lookup (the runtime gives it
  wordfreq's lists), a word in neither the sources nor the language is the model's invention;
* **term coverage**: the share of the sentence's content words (lower-cased, Snowball-stemmed) held by
  one place of the passage: its title and ``support_window`` consecutive sentences. A claim stitched
  together from words spread over the whole passage ("the two encoder modules are fused into a single
  encoder module", each word somewhere on a page about fusing two lists) is not stated there. A high
  share is support on its own;
* **the dense model**: for a sentence with a middling share (a paraphrase), its MiniLM cosine to the
  passage's closest sentence must be high. Encoding is the costly step, so it runs only for those.

A sentence no cited passage supports but another source does is re-cited to that source; one no source
supports is not shown. Markers are rewritten so a shown sentence cites exactly the passages that support
it: the answer never carries a citation to a passage that does not support the text.

When nothing the model wrote survives, ``extract`` quotes the one to three source sentences that best
answer the question, with their markers (an extractive answer), if any passes the same kind of bar.

Pure logic over strings; the dense model comes in as an ``embed`` function, so unit tests need no model.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragbot.generation.attribution import FUNCTION_WORDS

__all__ = [
    "AnswerGate",
    "AnswerTrimmer",
    "Extract",
    "GroundingRules",
    "Passage",
    "SentenceSplitter",
    "Support",
    "Verifier",
    "cited_numbers",
    "content_terms",
    "exact_tokens",
    "extract",
    "passage_sentences",
    "render_markers",
    "split_sentences",
    "strip_markers",
    "without_verdict",
]

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]

_MARKERS = re.compile(r"(?:\s*\[\d{1,3}\])+")
_ONE_MARKER = re.compile(r"\[(\d{1,3})\]")
# A sentence ends at . ! ? (or …), then closing quotes/brackets, then its citation markers, then space
# followed by something that is not another marker. A newline always ends one (list items, paragraphs).
_END = re.compile(r"[.!?…][\"'”’)\]]*(?:\s*\[\d{1,3}\])*(?=\s+[^\s\[])|(?<=\S)[ \t]*\n+")
# "e.g. this" or "v1.2 ships" must not end a sentence: the word before the dot is an abbreviation.
_ABBREVIATIONS = frozenset(
    ["e.g", "i.e", "etc", "vs", "cf", "approx", "no", "fig", "mr", "mrs", "ms", "dr", "st", "inc", "ltd"]
)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
# Tokens a sentence cannot invent: numbers and anything with a digit, identifiers with _ . / @ : # $,
# and CamelCase or ALLCAPS words.
_EXACT = re.compile(
    r"[$€£]?\d[\d.,:/%-]*\w*|[@#]?[A-Za-z_][\w]*(?:(?:\.|::|/|-)[A-Za-z_0-9]\w*)+(?:\(\))?"
    r"|@[A-Za-z_]\w*|\b[a-z]+[A-Z]\w*|\b[A-Z]{2,}[A-Z0-9]*\b|\b\w+_\w+\b|\b[A-Z][a-z]{2,}\w*"
)
# Markdown emphasis and code ticks around a name must not hide it from the exact check.
_EMPHASIS = re.compile(r"\*+|`+|~~")
_EMPHASISED = re.compile(r"\*\*([^*\n]{2,60})\*\*|`([^`\n]{2,60})`")
#: Attribution's function words, plus words every answer uses without claiming anything.
_STOPWORDS = FUNCTION_WORDS | frozenset(
    " ".join(
        (
            "yes sure please thank thanks may might must shall let lets get gets",
            "example following based according source sources provided answer question information",
        )
    ).split()
)


@functools.cache
def _stemmer() -> Any:
    import Stemmer  # PyStemmer (Snowball), a dependency already: BM25 uses it

    return Stemmer.Stemmer("english")


def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


def content_terms(text: str) -> set[str]:
    """Lower-cased, Snowball-stemmed content words (stop words and one- or two-letter words left out)."""
    out: set[str] = set()
    for match in _WORD.finditer(strip_markers(text)):
        word = match.group(0).lower().replace("’", "'")
        if word.endswith("'s"):
            word = word[:-2]
        if len(word) > 2 and word not in _STOPWORDS:
            out.add(_stem(word))
    return out


def exact_tokens(text: str) -> set[str]:
    """Tokens that must be found verbatim (case-insensitive) in a supporting passage."""
    found = set()
    for span in _EMPHASISED.finditer(text):  # what a model sets in bold or code it names exactly
        token = (span.group(1) or span.group(2)).strip(" .,:;").lower()
        if len(token) >= 2:
            found.add(token)
    clean = _EMPHASIS.sub(" ", strip_markers(text))
    for match in _EXACT.finditer(clean):
        token = match.group(0)
        if token[0].isupper() and token[1:].islower():
            # A capitalised word is a name unless capitalised by its place (sentence or list start).
            before = clean[: match.start()].rstrip()
            if not before or before[-1] in ".!?:-•" or before.endswith(("\n", "User:")):
                continue
        token = token.strip(".,:;-/").lower()
        if len(token) >= 2 and token not in _STOPWORDS:
            found.add(token)
    return found


def strip_markers(text: str) -> str:
    return _MARKERS.sub("", text).strip()


def cited_numbers(text: str) -> list[int]:
    """The ``[n]`` markers of a sentence, in order, without repeats."""
    out: list[int] = []
    for m in _ONE_MARKER.finditer(text):
        n = int(m.group(1))
        if n not in out:
            out.append(n)
    return out


_BULLET = re.compile(r"^(?:[-*+•]|\d{1,2}[.)])\s+")
_TAIL = re.compile(r"[.!?…:;,][\"'”’)]*$")


def render_markers(text: str, numbers: Sequence[int]) -> str:
    """``text`` with its markers replaced by ``numbers``, placed before its end punctuation: ``"A [1]."``"""
    body = strip_markers(text)
    if not numbers:
        return body
    markers = "".join(f"[{n}]" for n in numbers)
    tail = _TAIL.search(body)
    if tail is None:
        return f"{body} {markers}"
    return f"{body[: tail.start()].rstrip()} {markers}{body[tail.start() :]}"


def _ends_with_abbreviation(text: str) -> bool:
    words = text.rstrip(".").rsplit(None, 1)
    if not words:
        return False  # "..." alone: nothing to abbreviate
    last = words[-1].lower()
    return last.strip("(") in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


def split_sentences(text: str) -> list[str]:
    """Sentences with their citation markers attached (``"A [1]. B."`` -> ``["A [1].", "B."]``)."""
    splitter = SentenceSplitter()
    out = [s for s, _ in splitter.feed(text)]
    out += [s for s, _ in splitter.finish()]
    return out


# A line that opens a block of its own (list item, heading, table row, code fence, quote), never the
# continuation of the line before.
_BLOCK_START = re.compile(r"\s*(?:(?:[-*+•]|\d{1,2}[.)])\s|#|\||```|>)")


def passage_sentences(text: str) -> list[str]:
    """A source's sentences: as ``split_sentences``, but a paragraph hard-wrapped over several lines (a
    Markdown or text file's chunks keep their line breaks) is read as the sentences it holds, not one
    fragment per line."""
    lines = text.split("\n")
    joined = [lines[0]]
    for line in lines[1:]:
        before = joined[-1].rstrip()
        if (
            before
            and line.strip()
            and before[-1] not in ".!?:;"
            and not _BLOCK_START.match(before)
            and not _BLOCK_START.match(line)
        ):
            joined[-1] = f"{before} {line.lstrip()}"
        else:
            joined.append(line)
    return split_sentences("\n".join(joined))


class SentenceSplitter:
    """Cuts a streamed answer into complete sentences: a sentence is released only once what follows it
    proves it ended (so its trailing ``[n]`` markers are known). Yields ``(sentence, newline_before)``."""

    def __init__(self) -> None:
        self._buf = ""
        self._newline = False

    def feed(self, delta: str) -> list[tuple[str, bool]]:
        self._buf += delta
        out: list[tuple[str, bool]] = []
        pos = 0
        for m in _END.finditer(self._buf):
            end = m.end()
            candidate = self._buf[pos:end]
            is_newline = "\n" in m.group(0)
            if not is_newline and _ends_with_abbreviation(strip_markers(candidate)):
                continue
            sentence = candidate.strip()
            if sentence:
                out.append((sentence, self._newline))
                self._newline = False
            if is_newline:
                self._newline = True
            pos = end
        self._buf = self._buf[pos:]
        if self._buf.strip() == "":
            self._buf = ""  # whitespace between sentences is re-made by the renderer
        return out

    def finish(self) -> list[tuple[str, bool]]:
        rest, self._buf = self._buf.strip(), ""
        return [(rest, self._newline)] if rest else []


@dataclass(frozen=True, slots=True)
class Passage:
    """One numbered source as the model saw it (``n`` is its ``[n]``)."""

    n: int
    text: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class GroundingRules:
    """Thresholds of the support decision (``Settings`` maps onto these)."""

    #: Share of a sentence's content words a passage must hold to support it on words alone.
    min_coverage: float = 0.7
    #: Below this share the dense model is not asked: too little of the sentence is in the passage.
    min_coverage_dense: float = 0.35
    #: MiniLM cosine between the sentence and the passage's closest sentence, for middling shares.
    min_dense: float = 0.65
    #: Sentences with fewer content words make no checkable claim ("Yes.", "Here is how:").
    min_terms: int = 2
    #: Coverage is read in this many consecutive passage sentences (with the title), not the whole passage.
    support_window: int = 2
    #: Extractive answers: cosine between the question and a source sentence, and the sentence's share of
    #: the question's content words, both needed.
    extract_min_dense: float = 0.45
    extract_min_overlap: float = 0.3
    extract_max_sentences: int = 3


@dataclass(frozen=True, slots=True)
class Support:
    """The verdict on one sentence: which passages support it (empty: none), and the evidence."""

    supported: bool
    sources: tuple[int, ...] = ()
    coverage: float = 0.0
    dense: float | None = None
    missing_exact: tuple[str, ...] = ()
    neutral: bool = False  # no checkable claim: shown only between supported sentences

    @property
    def reason(self) -> str:
        if self.neutral:
            return "no claim"
        if self.supported:
            return "supported"
        if self.missing_exact:
            return f"not in the sources: {', '.join(self.missing_exact)}"
        return f"coverage {self.coverage:.2f}, dense {self.dense if self.dense is not None else '-'}"


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@dataclass
class _PassageView:
    passage: Passage
    windows: list[set[str]]  # content terms of the title and each run of ``support_window`` sentences
    lowered: str
    sentences: list[str]
    vectors: list[Sequence[float]] | None = None


def _view(passage: Passage, window: int) -> _PassageView:
    """The passage read once: its sentences' content terms serve both the windows and the dense check."""
    sentences = passage_sentences(passage.text)
    terms = [content_terms(s) for s in sentences] or [set()]
    title = content_terms(passage.title)
    width = min(max(window, 1), len(terms))
    return _PassageView(
        passage=passage,
        windows=[title.union(*terms[i : i + width]) for i in range(len(terms) - width + 1)],
        lowered=f"{passage.title} {passage.text}".lower(),
        sentences=[s for s, t in zip(sentences, terms, strict=False) if len(t) >= 2] or [passage.text],
    )


class Verifier:
    """Checks answer sentences against one turn's passages; caches each passage's terms and vectors."""

    def __init__(
        self,
        passages: Sequence[Passage],
        *,
        rules: GroundingRules | None = None,
        embed: Embed | None = None,
        question: str = "",
        known_word: Callable[[str], bool] | None = None,
    ) -> None:
        self.rules = rules or GroundingRules()
        self._question_terms = content_terms(question)
        self._question_exact = exact_tokens(question)
        self._question_words = {w.lower() for w in _WORD.findall(question)}
        self._embed = embed
        self._known_word = known_word
        self._views = {p.n: _view(p, self.rules.support_window) for p in passages}

    @property
    def numbers(self) -> list[int]:
        return sorted(self._views)

    def _vectors(self, view: _PassageView) -> list[Sequence[float]]:
        if view.vectors is None:
            assert self._embed is not None
            view.vectors = list(self._embed(view.sentences))
        return view.vectors

    def _against(self, sentence: str, terms: set[str], exact: set[str], view: _PassageView) -> Support:
        n = view.passage.n
        missing = tuple(sorted(t for t in exact if t not in view.lowered))
        coverage = max(len(terms & w) for w in view.windows) / len(terms) if terms else 0.0
        if missing:
            return Support(False, coverage=coverage, missing_exact=missing)
        if coverage >= self.rules.min_coverage:
            return Support(True, (n,), coverage=coverage)
        if coverage < self.rules.min_coverage_dense or self._embed is None:
            return Support(False, coverage=coverage)
        vector = self._embed([strip_markers(sentence)])[0]
        dense = max(_cosine(vector, v) for v in self._vectors(view))
        return Support(
            dense >= self.rules.min_dense, (n,) if dense >= self.rules.min_dense else (), coverage, dense
        )

    def _unknown_words(self, sentence: str) -> set[str]:
        """Words of four letters or more that the language does not know and the question did not use."""
        if self._known_word is None:
            return set()
        words = {w.lower() for w in _WORD.findall(strip_markers(sentence)) if len(w) > 3 and w.isalpha()}
        return {w for w in words - self._question_words if not self._known_word(w)}

    def check(self, sentence: str) -> Support:
        """Which passages support ``sentence``: its cited ones first; when none of them does, any other.

        ``Support.sources`` is what the sentence should cite; a sentence that cited a passage that does not
        support it but another that does ends up citing the latter only.
        """
        terms = content_terms(sentence)
        if strip_markers(sentence).endswith("?"):
            return Support(False, neutral=True)  # a question asks; it claims nothing to check
        exact = exact_tokens(sentence) | self._unknown_words(sentence)
        if len(terms) < self.rules.min_terms and not exact:
            return Support(False, neutral=True)
        if self._question_terms and terms <= self._question_terms and exact <= self._question_exact:
            return Support(False, neutral=True)  # the question said back ("right pelvic pain causes.")
        cited = [n for n in cited_numbers(sentence) if n in self._views]
        others = [n for n in self._views if n not in cited]
        best = Support(False)
        for group in (cited, others):
            verdicts = [self._against(sentence, terms, exact, self._views[n]) for n in group]
            backing = tuple(n for n, v in zip(group, verdicts, strict=True) if v.supported)
            if backing:
                top = max((v for v in verdicts if v.supported), key=lambda v: v.coverage)
                # Cite at most the two strongest: a list of every passage sharing some words is noise.
                ranked = sorted(
                    backing,
                    key=lambda n: -next(v.coverage for m, v in zip(group, verdicts, strict=True) if m == n),
                )
                return Support(True, tuple(sorted(ranked[:2])), top.coverage, top.dense)
            for v in verdicts:
                if v.coverage > best.coverage or (v.missing_exact and not best.missing_exact):
                    best = v
        return best


@dataclass(frozen=True, slots=True)
class Extract:
    """A sentence quoted from a source, with the evidence that it answers the question."""

    n: int
    sentence: str
    order: int  # its position in the source, to quote in reading order
    dense: float
    overlap: float

    @property
    def score(self) -> float:
        return self.dense + 0.5 * self.overlap


def extract(
    question: str, passages: Sequence[Passage], *, rules: GroundingRules | None = None, embed: Embed | None
) -> list[Extract]:
    """The one to three source sentences that best answer ``question`` (best passage's first), or none.

    Each must share enough of the question's content words and, with a dense model, be close to it; the
    picks come from at most two passages and are returned in reading order within each.
    """
    rules = rules or GroundingRules()
    q_terms = content_terms(question)
    # A word most of the passages share (the product's name, the topic every hit is about) tells which
    # sentence answers nothing: "How much does Burrow cost?" must not be answered by any Burrow sentence.
    vocabularies = [content_terms(f"{p.title} {p.text}") for p in passages]
    common = (
        {t for t in q_terms if sum(t in v for v in vocabularies) > len(vocabularies) * 0.6}
        if len(vocabularies) >= 3
        else set()
    )
    q_terms = (q_terms - common) or q_terms
    if not q_terms:
        return []
    candidates: list[tuple[int, int, str, float]] = []
    contexts: list[str] = []
    for p in passages:
        title_terms = content_terms(p.title)
        for i, line in enumerate(passage_sentences(p.text)):
            if line.startswith(("#", "|", "```")):
                continue  # a heading or a table row is no answer to quote
            sentence = _BULLET.sub("", line)
            s_terms = content_terms(sentence)
            if len(s_terms) < 3 or len(sentence) > 400:
                continue
            if not q_terms & s_terms:
                continue  # the sentence itself must speak to the question, not only its page title
            # read in its page's context, as the passage was retrieved: "Installing ragbot" > "run make"
            overlap = len(q_terms & (s_terms | title_terms)) / len(q_terms)
            if overlap >= rules.extract_min_overlap:
                candidates.append((p.n, i, sentence, overlap))
                contexts.append(f"{p.title}: {sentence}" if p.title else sentence)
    if not candidates:
        return []
    if embed is not None:
        vectors = embed([question, *contexts])
        dense = [_cosine(vectors[0], v) for v in vectors[1:]]
    else:
        dense = [rules.extract_min_dense] * len(candidates)
    picks = [
        Extract(n=n, sentence=s, order=i, dense=d, overlap=o)
        for (n, i, s, o), d in zip(candidates, dense, strict=True)
        if d >= rules.extract_min_dense
    ]
    picks.sort(key=lambda e: -e.score)
    if not picks:
        return []
    chosen: list[Extract] = []
    used: list[int] = []
    for pick in picks:
        if pick.n not in used and len(used) == 2:
            continue
        if pick.score < picks[0].score - 0.25:  # much weaker than the best: it would dilute the answer
            break
        chosen.append(pick)
        if pick.n not in used:
            used.append(pick.n)
        if len(chosen) == rules.extract_max_sentences:
            break
    chosen.sort(key=lambda e: (used.index(e.n), e.order))
    return chosen


_VERDICT = re.compile(r"(?:yes|no)[,.!;:]\s*", re.IGNORECASE)  # "No data leaves..." is no verdict


def without_verdict(sentence: str) -> str:
    """The sentence without a leading bare "Yes," or "No," (the same object when there is none).

    A yes or no answers the question, not anything a passage states, so no support check can back it:
    a small model opens with either as readily ("No, connectors read websites and documents"), and only
    the claim after it is shown, if its passages support that.
    """
    found = _VERDICT.match(sentence)
    if found is None:
        return sentence
    rest = sentence[found.end() :]
    return rest[:1].upper() + rest[1:]


@dataclass
class AnswerTrimmer:
    """Keeps an answer within ``max_words`` and stops it at the first repetition.

    A sentence that would cross the limit ends the answer (the first sentence is always kept whole, with
    its markers: trimming never cuts a marker off); one whose content words mostly repeat an earlier
    sentence's means the model is looping, and ends it too.
    """

    max_words: int
    repeat_overlap: float = 0.8
    words: int = 0
    done: bool = False
    _seen: list[set[str]] = field(default_factory=list)

    def admit(self, sentence: str) -> bool:
        if self.done:
            return False
        terms = content_terms(sentence)
        if terms and any(len(terms & prev) / len(terms) >= self.repeat_overlap for prev in self._seen):
            self.done = True
            return False
        size = len(strip_markers(sentence).split())
        if self.words and self.words + size > self.max_words:
            self.done = True
            return False
        self.words += size
        self._seen.append(terms)
        if self.words >= self.max_words:
            self.done = True
        return True


class AnswerGate:
    """Holds each streamed sentence until it is complete and verified, then releases it.

    The visitor never sees unverified text: the first visible token waits for one sentence, and after
    that the answer streams sentence by sentence. A supported sentence is released with exactly the
    markers of the passages that support it; an unsupported one is dropped (and kept in ``dropped`` for
    the logs); a sentence without a checkable claim ("Sure.") is released only ahead of a supported one.
    """

    def __init__(self, verifier: Verifier, trimmer: AnswerTrimmer) -> None:
        self._verifier = verifier
        self._trimmer = trimmer
        self._splitter = SentenceSplitter()
        self._neutral: list[tuple[str, bool]] = []
        self.shown: list[str] = []
        self.cited: list[int] = []
        self.dropped: list[tuple[str, Support]] = []

    @property
    def done(self) -> bool:
        """The answer reached its length limit or started repeating: the model can stop."""
        return self._trimmer.done

    def feed(self, text: str) -> str:
        return self._release(self._splitter.feed(text))

    def finish(self) -> str:
        out = self._release(self._splitter.finish())
        self._neutral.clear()
        return out

    def _emit(self, sentence: str, newline: bool, out: list[str]) -> None:
        sep = ("\n" if newline else " ") if self.shown else ""
        out.append(sep + sentence)
        self.shown.append(sentence)

    def _release(self, sentences: Sequence[tuple[str, bool]]) -> str:
        out: list[str] = []
        for said, newline in sentences:
            if self.done:
                break
            sentence = without_verdict(said)
            verdict = self._verifier.check(sentence)
            if verdict.neutral:
                if sentence is said:
                    self._neutral.append((strip_markers(sentence), newline))
                else:  # "Yes, you do." says nothing a passage could back
                    self.dropped.append((said, verdict))
                continue
            if not verdict.supported:
                self.dropped.append((sentence, verdict))
                continue
            rendered = render_markers(sentence, verdict.sources)
            if not self._trimmer.admit(rendered):
                break
            for neutral, neutral_newline in self._neutral:
                self._emit(neutral, neutral_newline, out)
            self._neutral.clear()
            self._emit(rendered, newline, out)
            for n in verdict.sources:
                if n not in self.cited:
                    self.cited.append(n)
        return "".join(out)
