"""BM25 as a sparse encoder: language detection, per-language stemming, exact names, CJK bigrams.

Why a third retriever: the packaged SPLADE-tiny and MiniLM know English word pieces only. An invented model
name ("KT-4471"), an error code or a page in Arabic falls apart into pieces they match loosely, while an
exact-term signal carries it. This module is pure CPU work (no model, a few hundred microseconds a chunk).

Pipeline for one text, in ``Bm25Encoder.analyze``:

- NFKC + casefold; words are runs of letters/digits, joined by ``- _ . / : @`` inside a name.
- A name (a joined run, or letters mixed with digits: ``XR-200``, ``ERR_CONN_42``, ``v2.3.1``, ``KT4471``)
  yields its whole form without separators (``xr200``: ``XR200``, ``xr-200`` and ``XR 200`` meet there)
  plus its parts (``xr``, ``200``), so a model number matches exactly and still matches when written apart.
  Whole forms are never stemmed; they are rare, so the index's IDF gives them a high weight.
- Runs of scripts written without spaces (Han, Kana, Hangul, Thai, Lao, Khmer, Myanmar) become overlapping
  character bigrams (a lone character stays a unigram), the usual BM25 treatment of CJK.
- Other words are stemmed with the text's language's Snowball stemmer (PyStemmer, ~30 languages); a
  language without one keeps its words as they are.

Stop words are removed from **queries only** (stopwordsiso lists; for English the short Lucene/Snowball list,
because stopwordsiso's English list holds content words such as "buy", "web", "world", "mg" or "kw" that
product pages need). Documents keep every word: a chunk's vector does not depend on a list that may change,
and IDF already gives function words almost no weight. A query made only of stop words keeps them.

Weights: a document term gets BM25's saturated term frequency ``tf*(k1+1)/(tf+k1*(1-b+b*dl/avgdl))`` with
k1=1.2, b=0.75 and a fixed ``avgdl`` (``AVG_DOC_TOKENS``, as fastembed's Bm25 does with 256): a corpus mean
would make every stored vector depend on the corpus and change as it grows. A query term gets 1 per unique
term; the index multiplies by IDF at query time (Qdrant's ``Modifier.Idf`` on the named vector), so the dot
product is the BM25 score. Token ids are a stable 31-bit hash (CRC-32) of the term.

Language: ``detect_language`` (py3langid, normalised probabilities) says "und" when the text is too short or
the best language is below ``MIN_CONFIDENCE``. A document uses its detected language (or the connector's,
or the encoder's ``default_language`` when undetermined). A query is tokenised under every language it
plausibly is (the detected one when confident, langid's top candidates when not, and always the default):
short queries are unreliable to detect, and a term from a wrong analysis simply matches nothing.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from ragbot.types import SparseVector

if TYPE_CHECKING:
    import Stemmer

__all__ = [
    "AVG_DOC_TOKENS",
    "UNDETERMINED",
    "Bm25Encoder",
    "detect_language",
    "language_candidates",
    "normalise_language",
    "term_id",
]

UNDETERMINED = "und"
#: BM25 constants (Robertson et al.; Lucene's defaults).
K1, B = 1.2, 0.75
#: Fixed average document length in tokens (stop words included): a full 200-word-piece chunk of English
#: prose is about 130 tokens here and MS MARCO passages about 60; 100 sits between them.
AVG_DOC_TOKENS = 100.0
#: langid's normalised probability below which a language is "undetermined" (msmarco-5k's 50 English
#: queries: none reaches 0.7 for another language; a six-word German or Arabic question is >= 0.9).
MIN_CONFIDENCE = 0.7
#: Fewer letters than this: too little text to tell a language from.
MIN_LETTERS = 8
#: Query analysis also runs under langid's candidates at or above this probability (at most 3).
CANDIDATE_PROBABILITY = 0.15

_JOINERS = "-_./:@"
_TOKEN = re.compile(r"\w+(?:[-_./:@]\w+)*")
_SEPARATORS = re.compile(r"[-_./:@]+")
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
# Scripts written without spaces between words.
_UNSPACED = (
    "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"  # Thai, Lao, Myanmar, Khmer
    "\u3040-\u30ff\u31f0-\u31ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\u1100-\u11ff\uac00-\ud7af"  # Hangul
)
_UNSPACED_RUN = re.compile(f"[{_UNSPACED}]+")
_SPLIT_UNSPACED = re.compile(f"([{_UNSPACED}]+)")

#: ISO 639-1 -> Snowball algorithm name in PyStemmer.
_SNOWBALL = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "cs": "czech",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "eo": "esperanto",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "fa": "persian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "st": "sesotho",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
#: Lucene's English stop set (what Snowball's English analyzers remove); see the module docstring.
_ENGLISH_STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    }
)

_identifier_lock = threading.Lock()
_local = threading.local()


@lru_cache(maxsize=1 << 17)
def term_id(term: str) -> int:
    """The stable 31-bit id of a term (CRC-32): the same in every process and release."""
    return zlib.crc32(term.encode("utf-8")) & 0x7FFFFFFF


@cache
def _identifier() -> Any:
    """py3langid's model with normalised probabilities, loaded once (about 0.3 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _ranked(text: str) -> list[tuple[str, float]]:
    """Languages by probability, best first, dialect codes folded into their language (probabilities added:
    a short Arabic question splits its mass between ``ar``, ``ary`` and ``arz``)."""
    with _identifier_lock:  # the identifier keeps per-call state in numpy buffers: one caller at a time
        ranked = _identifier().rank(text)
    folded: dict[str, float] = {}
    for lang, probability in ranked:
        code = _base_code(str(lang))
        folded[code] = folded.get(code, 0.0) + float(probability)
    return sorted(folded.items(), key=lambda lp: -lp[1])


def _letters(text: str) -> int:
    """Letters in the text; a character of an unspaced script (Han, Kana, Thai...) counts as two."""
    return sum(2 if _UNSPACED_RUN.match(ch) else 1 for ch in text if ch.isalpha())


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text``'s language, or ``"und"`` when it cannot be told reliably."""
    if _letters(text) < MIN_LETTERS:
        return UNDETERMINED
    lang, probability = _ranked(text)[0]
    return lang if probability >= MIN_CONFIDENCE else UNDETERMINED


def language_candidates(text: str) -> list[str]:
    """The languages a (short) query plausibly is, most likely first; empty when nothing is plausible."""
    if _letters(text) < 2:
        return []
    ranked = _ranked(text)
    if ranked[0][1] >= MIN_CONFIDENCE and _letters(text) >= MIN_LETTERS:
        return [ranked[0][0]]
    return [lang for lang, p in ranked[:3] if p >= CANDIDATE_PROBABILITY]


def normalise_language(code: str) -> str:
    """``de-DE``, ``pt_BR``, ``EN`` -> ``de``, ``pt``, ``en`` (a connector's or an HTML page's tag)."""
    return _base_code(code.replace("_", "-").split("-", 1)[0].strip().lower())


def _base_code(lang: str) -> str:
    """langid also names dialects and scripts (``ary``/``arz`` Arabic, ``srl``); fold the few that matter."""
    return {"ary": "ar", "arz": "ar", "srl": "sr", "zh-tw": "zh", "nb": "no", "nn": "no"}.get(lang, lang)


def _stemmer(language: str) -> Stemmer.Stemmer | None:
    """This thread's Snowball stemmer for the language (PyStemmer objects must not be shared by threads)."""
    algorithm = _SNOWBALL.get(language)
    if algorithm is None:
        return None
    stemmers: dict[str, Stemmer.Stemmer | None] | None = getattr(_local, "stemmers", None)
    if stemmers is None:
        stemmers = _local.stemmers = {}
    if algorithm not in stemmers:
        import Stemmer

        stemmers[algorithm] = Stemmer.Stemmer(algorithm) if algorithm in Stemmer.algorithms() else None
    return stemmers[algorithm]


@cache
def stop_words(language: str) -> frozenset[str]:
    """The query-side stop words of a language (empty when none are known)."""
    if language == "en":
        return _ENGLISH_STOP
    import stopwordsiso

    if not stopwordsiso.has_lang(language):
        return frozenset()
    return frozenset(unicodedata.normalize("NFKC", w).casefold() for w in stopwordsiso.stopwords(language))


class Bm25Encoder:
    """``SparseEncoder``-like BM25 encoder; ``default_language`` analyses undetermined text."""

    def __init__(self, *, default_language: str = "en", avg_doc_tokens: float = AVG_DOC_TOKENS) -> None:
        if avg_doc_tokens <= 0:
            raise ValueError(f"avg_doc_tokens must be positive, got {avg_doc_tokens}")
        self.default_language = default_language
        self.avg_doc_tokens = avg_doc_tokens

    # --- encoding ------------------------------------------------------------------------------------

    def encode_documents(
        self, texts: Sequence[str], languages: Sequence[str | None] | None = None
    ) -> list[SparseVector]:
        """One BM25 document vector per text; ``languages`` (per text, None = detect) skips detection."""
        if languages is not None and len(languages) != len(texts):
            raise ValueError(f"{len(languages)} languages for {len(texts)} texts")
        langs = languages if languages is not None else [None] * len(texts)
        return [self.encode_document(text, lang) for text, lang in zip(texts, langs, strict=True)]

    def encode_document(self, text: str, language: str | None = None) -> SparseVector:
        terms = self.terms(text, language)
        if not terms:
            return SparseVector((), ())
        norm = K1 * (1.0 - B + B * len(terms) / self.avg_doc_tokens)
        weights: dict[int, float] = {}
        for term, tf in Counter(terms).items():
            tid = term_id(term)
            weights[tid] = weights.get(tid, 0.0) + tf * (K1 + 1.0) / (tf + norm)
        return _sparse(weights)

    def encode_query(self, text: str, languages: Iterable[str] | None = None) -> SparseVector:
        """Weight 1 per unique query term, analysed under each of ``languages`` (default: the plausible
        ones, see the module docstring), stop words dropped unless nothing else is left."""
        return _sparse(dict.fromkeys((term_id(t) for t in self.query_terms(text, languages)), 1.0))

    def query_terms(self, text: str, languages: Iterable[str] | None = None) -> list[str]:
        """The unique terms ``encode_query`` weights, in first-seen order."""
        langs = list(dict.fromkeys([*(languages or self.query_languages(text)), self.default_language]))
        kept: dict[str, None] = {}
        stopped: dict[str, None] = {}
        for lang in langs:
            stops = stop_words(lang)
            for surface, term in self.analyze(text, lang):
                (stopped if surface in stops else kept).setdefault(term)
        return list(kept or stopped)

    def query_languages(self, text: str) -> list[str]:
        return language_candidates(text) or [self.default_language]

    # --- analysis ------------------------------------------------------------------------------------

    def terms(self, text: str, language: str | None = None) -> list[str]:
        """The normalised, stemmed tokens of ``text`` (with repeats), as a document is indexed."""
        return [term for _, term in self.analyze(text, language)]

    def analyze(self, text: str, language: str | None = None) -> list[tuple[str, str]]:
        """``(surface word, indexed term)`` pairs; ``language`` None detects it (undetermined: default)."""
        if language is None:
            language = detect_language(text)
            if language == UNDETERMINED:
                language = self.default_language
        else:
            language = normalise_language(language)
        out: list[tuple[str, str]] = []
        for token in _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()):
            out.extend(_token_terms(token, language))
        return out

    def count_tokens(self, text: str) -> int:
        return len(self.terms(text))


@lru_cache(maxsize=1 << 17)
def _token_terms(token: str, language: str) -> tuple[tuple[str, str], ...]:
    """The ``(surface, term)`` pairs of one casefolded token (cached: most words recur)."""
    if token.isalpha() and not _UNSPACED_RUN.search(token):
        stemmer = _stemmer(language)
        return ((token, stemmer.stemWord(token) if stemmer is not None else token),)
    out: list[tuple[str, str]] = []
    for piece in _SPLIT_UNSPACED.split(token):
        if not piece:
            continue
        if _UNSPACED_RUN.fullmatch(piece):
            out.extend((gram, gram) for gram in _bigrams(piece))
        else:
            _word_terms(piece, _stemmer(language), out)
    return tuple(out)


def _word_terms(token: str, stemmer: Stemmer.Stemmer | None, out: list[tuple[str, str]]) -> None:
    """A plain word, stemmed; or a name: its whole form, then its parts."""
    token = token.strip(_JOINERS)
    if not token:
        return
    parts = [p for p in _SEPARATORS.split(token) if p]
    pieces = [q for p in parts for q in _LETTER_DIGIT.split(p.replace("_", " ")) for q in q.split() if q]
    if len(pieces) > 1:
        out.append((token, "".join(pieces)))
    for piece in pieces:
        if piece.isdigit() or stemmer is None:
            out.append((piece, piece))
        else:
            out.append((piece, stemmer.stemWord(piece)))


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def _sparse(weights: dict[int, float]) -> SparseVector:
    items = sorted((i, w) for i, w in weights.items() if w > 0 and math.isfinite(w))
    return SparseVector(tuple(i for i, _ in items), tuple(w for _, w in items))
