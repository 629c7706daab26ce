"""Chunk boundaries, bounds and metadata on plain values (token counters are simple pure functions)."""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import replace

import pytest

from ragbot.chunking import chunk_document, content_hash, document_id
from ragbot.types import Chunk, Segment, SourceDocument

pytestmark = pytest.mark.unit


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    return len(text)


def wordpiece_like(text: str) -> int:
    """Not additive over joins: punctuation and every 6 letters of a word count as extra tokens."""
    return sum(1 + len(w) // 6 for w in re.findall(r"\w+|[^\w\s]", text))


def sentence(rng: random.Random, n: int) -> str:
    vocab = [
        "harbor",
        "lantern",
        "sprocket",
        "meadow",
        "copper",
        "violet",
        "orbit",
        "ledger",
        "quartz",
        "fjord",
    ]
    return " ".join(rng.choice(vocab) for _ in range(n)).capitalize() + rng.choice([".", "!", "?"])


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(3, 25)) for _ in range(sentences))


def chunk(
    doc: SourceDocument, count=words, max_tokens: int = 40, overlap: int = 8, bot: str = "b1"
) -> list[Chunk]:
    return chunk_document(doc, bot_id=bot, count_tokens=count, max_tokens=max_tokens, overlap_tokens=overlap)


def assert_invariants(doc: SourceDocument, chunks: list[Chunk], count, max_tokens: int) -> None:
    text = doc.text
    covered = [False] * len(text)
    for i, c in enumerate(chunks):
        assert c.chunk_index == i
        assert c.text == text[c.char_start : c.char_end]
        assert count(c.text) <= max_tokens, (count(c.text), c.text)
        assert c.text
        assert c.text == c.text.strip()
        for k in range(c.char_start, c.char_end):
            covered[k] = True
    # Nothing is dropped: every non-whitespace character belongs to some chunk.
    missing = [k for k, ch in enumerate(text) if not ch.isspace() and not covered[k]]
    assert not missing, text[missing[0] : missing[0] + 40]


def test_sections_keep_their_heading_path_and_never_merge() -> None:
    doc = SourceDocument(
        uri="https://acme.test/pricing",
        title="Pricing",
        segments=(
            Segment("Pricing\n\nIntro text about plans.", heading_path=("Pricing",)),
            Segment("Enterprise\n\nSingle sign-on is included.", heading_path=("Pricing", "Enterprise")),
        ),
    )
    chunks = chunk(doc)
    assert [c.heading_path for c in chunks] == [("Pricing",), ("Pricing", "Enterprise")]
    assert chunks[1].text == "Enterprise\n\nSingle sign-on is included."
    assert {c.title for c in chunks} == {"Pricing"}
    assert chunks[0].url == "https://acme.test/pricing"
    assert_invariants(doc, chunks, words, 40)


@pytest.mark.parametrize("count", [words, chars, wordpiece_like])
def test_random_documents_respect_the_bound_and_lose_nothing(count) -> None:
    rng = random.Random(7)
    for _ in range(40):
        segments = tuple(
            Segment(
                "\n\n".join(paragraph(rng, rng.randint(1, 6)) for _ in range(rng.randint(1, 4))),
                heading_path=("H", str(rng.randint(0, 2))),
            )
            for _ in range(rng.randint(1, 4))
        )
        doc = SourceDocument(uri="/docs/x.md", title="X", segments=segments)
        max_tokens = rng.choice([30, 60, 120, 400])
        chunks = chunk(doc, count=count, max_tokens=max_tokens, overlap=rng.randint(0, max_tokens // 3))
        assert_invariants(doc, chunks, count, max_tokens)


def test_long_paragraph_is_split_at_sentences_with_overlap() -> None:
    rng = random.Random(3)
    text = " ".join(sentence(rng, 6) for _ in range(30))  # 30 sentences of 6 words
    doc = SourceDocument(uri="/a.txt", title="a", segments=(Segment(text),))
    chunks = chunk(doc, max_tokens=30, overlap=8)
    assert len(chunks) > 5
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.text.endswith((".", "!", "?"))  # cut at sentence ends, not mid-sentence
        shared = prev.char_end - nxt.char_start
        assert shared > 0  # overlap carried over
        assert words(text[nxt.char_start : prev.char_end]) <= 8
    assert_invariants(doc, chunks, words, 30)


def test_zero_overlap_tiles_the_text() -> None:
    rng = random.Random(5)
    doc = SourceDocument(uri="/a.txt", title="a", segments=(Segment(paragraph(rng, 40)),))
    chunks = chunk(doc, max_tokens=50, overlap=0)
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.char_end < nxt.char_start
    assert_invariants(doc, chunks, words, 50)


def test_prefers_paragraph_breaks_over_filling_the_chunk() -> None:
    first = "One two three four five six seven eight. Nine ten eleven twelve thirteen fourteen."  # 14 words
    second = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa lambda mu."  # 12 words
    doc = SourceDocument(uri="/p.md", title="p", segments=(Segment(f"{first}\n\n{second}\n\n{first}"),))
    chunks = chunk(doc, max_tokens=20, overlap=0)
    assert chunks[0].text == first


def test_pathological_token_is_hard_split_not_truncated() -> None:
    blob = "x" * 1000
    doc = SourceDocument(uri="/blob.txt", title="blob", segments=(Segment(f"start {blob} end"),))
    chunks = chunk(doc, count=chars, max_tokens=64, overlap=0)
    assert all(len(c.text) <= 64 for c in chunks)
    assert "".join(c.text for c in chunks if "x" in c.text).count("x") == 1000
    assert_invariants(doc, chunks, chars, 64)


def test_chunks_never_span_pages() -> None:
    rng = random.Random(11)
    pages = tuple(Segment(paragraph(rng, 3), page=p) for p in (1, 2, 3))
    doc = SourceDocument(uri="/h.pdf", title="Handbook", segments=pages, mime_type="application/pdf")
    chunks = chunk(doc, max_tokens=500, overlap=10)
    assert [c.page for c in chunks] == [1, 2, 3]
    for c in chunks:
        assert c.text == pages[c.page - 1].text


def test_transcript_cues_are_packed_with_their_time_span() -> None:
    cues = tuple(
        Segment(f"Cue number {i} says something useful.", start_s=i * 4.0, end_s=i * 4.0 + 3.5)
        for i in range(20)
    )
    doc = SourceDocument(uri="/talk.vtt", title="talk", segments=cues, mime_type="text/vtt")
    chunks = chunk(doc, max_tokens=20, overlap=0)
    assert 1 < len(chunks) < 20
    for c in chunks:
        numbers = [int(n) for n in re.findall(r"Cue number (\d+)", c.text)]
        assert c.start_s == numbers[0] * 4.0
        assert c.end_s == numbers[-1] * 4.0 + 3.5
        assert not c.text.startswith("says")  # whole cues: cut at cue ends
    assert_invariants(doc, chunks, words, 20)


def test_ids_are_deterministic_and_tenant_scoped() -> None:
    doc = SourceDocument(uri="/a.md", title="a", segments=(Segment("Some text. More text."),))
    a, b = chunk(doc), chunk(doc)
    assert [c.id for c in a] == [c.id for c in b]
    other_bot = chunk(doc, bot="b2")
    assert other_bot[0].id != a[0].id
    assert other_bot[0].source_id == document_id("b2", "/a.md") != a[0].source_id
    edited = chunk(replace(doc, segments=(Segment("Some text. Changed text."),)))
    assert edited[0].id != a[0].id


def test_document_id_and_content_hash() -> None:
    assert document_id("b", "/x") == document_id("b", "/x")
    assert document_id("b", "/x") != document_id("b", "/y")
    doc = SourceDocument(uri="/x", title="x", segments=(Segment("hello"),), etag="1")
    assert content_hash(doc) == content_hash(replace(doc, etag="2", last_modified="yesterday"))
    assert content_hash(doc) != content_hash(replace(doc, segments=(Segment("hello!"),)))
    assert content_hash(doc) != content_hash(replace(doc, title="y"))


def test_empty_document_has_no_chunks() -> None:
    doc = SourceDocument(uri="/e", title="e", segments=(Segment("   \n\n  "),))
    assert chunk(doc) == []


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_limits_are_rejected(max_tokens: int, overlap: int) -> None:
    doc = SourceDocument(uri="/e", title="e", segments=(Segment("x"),))
    with pytest.raises(ValueError, match="tokens"):
        chunk(doc, max_tokens=max_tokens, overlap=overlap)
