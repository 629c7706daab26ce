"""Documents -> chunks: structure-aware, bounded by the encoders' real token count, exact offsets.

A chunk never crosses a section (heading path) or a page, so a citation can name both; transcript cues of
one section are packed together and the chunk keeps the time span of its cues. A section that fits in
``max_tokens`` (as measured by the caller's counter) is one chunk. A longer one is cut into sentence-sized
units (oversized sentences into words, pathological words into characters), packed greedily, cutting at
the strongest break (cue or paragraph before line before sentence) in the back half of a full chunk, with
up to ``overlap_tokens`` carried into the next. Every chunk is measured as a whole before it is emitted,
so nothing an encoder sees is ever silently truncated.

langchain-text-splitters' recursive splitter follows the same idea, but it measures length per piece
plus an estimated separator and recovers offsets with ``str.find``; chunk bounds and offsets here must be
exact, so the packing is done directly on character spans of ``SourceDocument.text``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from ragbot.index.points import chunk_point_id
from ragbot.types import Chunk, Segment, SourceDocument

TokenCounter = Callable[[str], int]

#: A cut is only moved back to a stronger break if the chunk stays at least this full (fraction of max).
_MIN_FILL = 0.5

_PARAGRAPH_GAP = re.compile(r"\n[ \t]*\n\s*")
_LINE_GAP = re.compile(r"\s*\n\s*")
_SENTENCE_GAP = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+|(?<=[。！？])\s*")
_WORD_GAP = re.compile(r"\s+")


class _Break(IntEnum):
    """How good a place the end of a unit is to end a chunk."""

    CHARACTER = 0
    WORD = 1
    SENTENCE = 2
    LINE = 3
    PARAGRAPH = 4
    SEGMENT = 5


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    tokens: int
    brk: _Break
    segment: int


def document_id(bot_id: str, uri: str) -> str:
    """Stable id of a document inside a bot: the ``source_id`` on every chunk and the documents row key."""
    return hashlib.sha256(f"{bot_id}\x00{uri}".encode()).hexdigest()[:32]


def content_hash(doc: SourceDocument) -> str:
    """Hash of everything a chunk is built from, so a re-sync re-encodes only documents whose hash moved.

    Transport details (ETag, Last-Modified, fetch metadata) are left out: they change without the content.
    """
    payload = [
        doc.title,
        doc.mime_type,
        doc.language,
        [[s.text, list(s.heading_path), s.page, s.start_s, s.end_s] for s in doc.segments],
    ]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


#: Most characters of title and headings put in front of a chunk's text for encoding: the chunker leaves
#: the encoders ``max_length - chunk_max_tokens`` tokens of room (56 by default), about 200 characters.
CONTEXT_MAX_CHARS = 200


def context_text(chunk: Chunk) -> str:
    """What the encoders see for a chunk: its page title and section heading path, then its text.

    A later chunk of "Refund policy" then still matches "refund". A title or heading the text already
    starts with (a page whose first line is its title) or that repeats an earlier one is left out, and the
    context is cut to ``CONTEXT_MAX_CHARS`` at a word boundary so the chunk stays within the encoders'
    length. The stored chunk text, its id and its document's hash do not include the context: a title
    change moves the document's content hash (``content_hash`` covers the title), so it is re-encoded.
    """
    lead = " ".join(chunk.text[: CONTEXT_MAX_CHARS * 2].split()).casefold()
    parts: list[str] = []
    seen: set[str] = set()
    for raw in (chunk.title, *chunk.heading_path):
        part = " ".join(raw.split())
        key = part.casefold()
        if not part or key in seen or lead.startswith(key):
            continue
        seen.add(key)
        parts.append(part)
    context = " / ".join(parts)
    if len(context) > CONTEXT_MAX_CHARS:
        context = context[:CONTEXT_MAX_CHARS].rsplit(" ", 1)[0]
    return f"{context}\n{chunk.text}" if context else chunk.text


def chunk_document(
    doc: SourceDocument,
    *,
    bot_id: str,
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Split ``doc`` into chunks of at most ``max_tokens`` (by ``count_tokens``) with exact char offsets."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens}")
    text = doc.text
    starts = _segment_offsets(doc.segments)
    source_id = document_id(bot_id, doc.uri)
    chunks: list[Chunk] = []
    for group in _groups(doc.segments):
        for start, end, covered in _group_chunks(
            doc, group, starts, count_tokens, max_tokens, overlap_tokens
        ):
            chunk_text = text[start:end]
            index = len(chunks)
            chunks.append(
                Chunk(
                    id=chunk_point_id(bot_id, doc.uri, index, chunk_text),
                    bot_id=bot_id,
                    source_id=source_id,
                    uri=doc.uri,
                    title=doc.title,
                    text=chunk_text,
                    chunk_index=index,
                    heading_path=covered[0].heading_path,
                    page=covered[0].page,
                    start_s=min((s.start_s for s in covered if s.start_s is not None), default=None),
                    end_s=max((s.end_s for s in covered if s.end_s is not None), default=None),
                    char_start=start,
                    char_end=end,
                )
            )
    return chunks


def _group_chunks(
    doc: SourceDocument,
    group: Sequence[int],
    starts: Sequence[int],
    count: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
) -> list[tuple[int, int, list[Segment]]]:
    """(start, end, segments covered) of each chunk of one section; a section that fits is one chunk.

    Measuring the whole section first is one tokenizer call for the common case; only sections that
    must be split pay for sentence-level units.
    """
    text = doc.text
    first, last = group[0], group[-1]
    start, end = starts[first], starts[last] + len(doc.segments[last].text)
    span = text[start:end]
    stripped = span.strip()
    if not stripped:
        return []
    start += len(span) - len(span.lstrip())
    end = start + len(stripped)
    if count(stripped) <= max_tokens:
        return [(start, end, [doc.segments[i] for i in group if doc.segments[i].text.strip()])]
    units: list[_Unit] = []
    for i in group:
        units.extend(_units(text, starts[i], starts[i] + len(doc.segments[i].text), i, count, max_tokens))
    spans = []
    for lo, hi in _pack(units, text, count, max_tokens, overlap_tokens):
        covered = [doc.segments[i] for i in sorted({u.segment for u in units[lo:hi]})]
        spans.append((units[lo].start, units[hi - 1].end, covered))
    return spans


def _segment_offsets(segments: Sequence[Segment]) -> list[int]:
    """Where each segment starts in ``SourceDocument.text`` (segments are joined by a blank line)."""
    offsets, position = [], 0
    for segment in segments:
        offsets.append(position)
        position += len(segment.text) + 2
    return offsets


def _groups(segments: Sequence[Segment]) -> list[list[int]]:
    """Runs of consecutive segments that share a heading path and a page: no chunk crosses their edge."""
    groups: list[list[int]] = []
    previous: tuple[tuple[str, ...], int | None] | None = None
    for i, segment in enumerate(segments):
        key = (segment.heading_path, segment.page)
        if groups and key == previous:
            groups[-1].append(i)
        else:
            groups.append([i])
        previous = key
    return groups


def _pieces(text: str, start: int, end: int, gap: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank spans of ``text[start:end]`` between matches of ``gap``, trimmed of whitespace."""
    spans, position = [], start
    for match in gap.finditer(text, start, end):
        if match.end() == match.start() == position:
            continue
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, end))
    trimmed = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            a += len(piece) - len(piece.lstrip())
            trimmed.append((a, a + len(stripped)))
    return trimmed


def _units(
    text: str, start: int, end: int, segment: int, count: TokenCounter, max_tokens: int
) -> list[_Unit]:
    """Sentence-sized units of one segment, each within ``max_tokens``, tagged with the break after it."""
    units: list[_Unit] = []
    paragraphs = _pieces(text, start, end, _PARAGRAPH_GAP)
    for p, (p_start, p_end) in enumerate(paragraphs):
        lines = _pieces(text, p_start, p_end, _LINE_GAP)
        for li, (l_start, l_end) in enumerate(lines):
            sentences = _pieces(text, l_start, l_end, _SENTENCE_GAP)
            for s, (s_start, s_end) in enumerate(sentences):
                if s < len(sentences) - 1:
                    brk = _Break.SENTENCE
                elif li < len(lines) - 1:
                    brk = _Break.LINE
                elif p < len(paragraphs) - 1:
                    brk = _Break.PARAGRAPH
                else:
                    brk = _Break.SEGMENT
                units.extend(_bounded(text, s_start, s_end, brk, segment, count, max_tokens))
    return units


def _bounded(
    text: str, start: int, end: int, brk: _Break, segment: int, count: TokenCounter, max_tokens: int
) -> list[_Unit]:
    """One unit for a span that fits; otherwise words, and characters for a word too long on its own."""
    tokens = count(text[start:end])
    if tokens <= max_tokens:
        return [_Unit(start, end, tokens, brk, segment)]
    words = _pieces(text, start, end, _WORD_GAP)
    if len(words) > 1:
        units: list[_Unit] = []
        for w, (w_start, w_end) in enumerate(words):
            last = w == len(words) - 1
            units.extend(
                _bounded(text, w_start, w_end, brk if last else _Break.WORD, segment, count, max_tokens)
            )
        return units
    return _hard_split(text, start, end, brk, segment, count, max_tokens)


def _hard_split(
    text: str, start: int, end: int, brk: _Break, segment: int, count: TokenCounter, max_tokens: int
) -> list[_Unit]:
    """Cut a single oversized token run into the longest prefixes that fit (binary search per piece)."""
    units: list[_Unit] = []
    while start < end:
        lo, hi = 1, end - start
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start : start + mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        stop = start + lo
        units.append(
            _Unit(start, stop, count(text[start:stop]), brk if stop == end else _Break.CHARACTER, segment)
        )
        start = stop
    return units


def _pack(
    units: Sequence[_Unit], text: str, count: TokenCounter, max_tokens: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """Greedy packing of units into ``[lo, hi)`` ranges that fit, carrying up to ``overlap_tokens`` over."""
    ranges: list[tuple[int, int]] = []
    lo, n = 0, len(units)
    while lo < n:
        hi, total = lo, 0
        prefix: list[int] = []
        while hi < n and (hi == lo or total + units[hi].tokens <= max_tokens):
            total += units[hi].tokens
            prefix.append(total)
            hi += 1
        if hi < n:
            hi = _best_cut(units, lo, hi, prefix, max_tokens)
        # Token counts of joined text are not always additive: the emitted span is measured as a whole.
        while hi - lo > 1 and count(text[units[lo].start : units[hi - 1].end]) > max_tokens:
            hi -= 1
        ranges.append((lo, hi))
        if hi >= n:
            break
        lo = _overlap_start(units, lo, hi, overlap_tokens, max_tokens)
    return ranges


def _best_cut(units: Sequence[_Unit], lo: int, hi: int, prefix: Sequence[int], max_tokens: int) -> int:
    """End the chunk after the strongest break that keeps it at least ``_MIN_FILL`` full (latest on ties)."""
    best = hi
    best_key = (units[hi - 1].brk, hi)
    for end in range(lo + 1, hi):
        if prefix[end - lo - 1] >= _MIN_FILL * max_tokens:
            key = (units[end - 1].brk, end)
            if key > best_key:
                best, best_key = end, key
    return best


def _overlap_start(units: Sequence[_Unit], lo: int, hi: int, overlap_tokens: int, max_tokens: int) -> int:
    """First unit of the next chunk: trailing units of this one worth at most ``overlap_tokens``.

    The carried-over units must leave room for the next new unit, or the next chunk would add nothing.
    """
    budget = min(overlap_tokens, max_tokens - units[hi].tokens)
    start, carried = hi, 0
    while start - 1 > lo and carried + units[start - 1].tokens <= budget:
        start -= 1
        carried += units[start].tokens
    return start
