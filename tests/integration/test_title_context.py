"""Chunks are encoded with their page title and section headings in front, so a later chunk of "Refund
policy" still matches "refund"; ids, re-sync hashes and explanations are unchanged by it. And a collection
from before BM25 keeps working until ``reindex`` rebuilds it from its own payloads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fixtures.retrieval_stack import Documents, open_stack

from ragbot.types import Segment, SourceDocument

pytestmark = pytest.mark.integration

REFUND = SourceDocument(
    uri="https://shop.example/refund-policy",
    title="Refund policy",
    segments=(
        Segment(
            "Refunds are paid within 14 days to the card you paid with.", heading_path=("Refund policy",)
        ),
        Segment("Items must be unused and sent back in their original box.", heading_path=("Conditions",)),
        Segment(
            "The customer pays the postage for sending parcels back to our warehouse.",
            heading_path=("Postage",),
        ),
    ),
)
OTHERS = [
    SourceDocument(
        uri="https://shop.example/delivery",
        title="Delivery",
        segments=(
            Segment("Parcels leave our warehouse the next working day; postage is free over 50 euros."),
        ),
    ),
    SourceDocument(
        uri="https://shop.example/warranty",
        title="Warranty",
        segments=(Segment("Every appliance has a two-year warranty covering manufacturing faults."),),
    ),
    SourceDocument(
        uri="https://shop.example/accounts",
        title="Your account",
        segments=(Segment("Change your password and your delivery address in the account settings."),),
    ),
]


def test_a_later_chunk_matches_its_page_title(
    tmp_path: Path, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    stack = open_stack(tmp_path, real_sparse_encoder, real_dense_encoder)
    try:
        report = stack.service.ingest("shop", Documents([REFUND, *OTHERS]))
        assert report.chunks == 6  # three sections of the refund page, one chunk per other page
        postage = next(t for t in stack.sparse.texts if "postage for sending" in t)
        assert postage.startswith("Refund policy / Postage\n")  # what the encoders saw
        assert not any(t.startswith("Refund policy / Refund policy") for t in stack.sparse.texts)  # no repeat
        hits = stack.retriever.retrieve("shop", "refund", 3)
        assert {h.chunk.uri for h in hits} == {REFUND.uri}
        last = next(h for h in hits if "postage for sending" in h.chunk.text)
        assert "refund" not in last.chunk.text.lower()  # the stored text is the chunk's own
        assert all(h.matched_terms for h in hits)  # explanations still list terms
        # Unchanged content: nothing is re-encoded. A new title: the page is re-encoded with it.
        stack.sparse.texts.clear()
        stack.dense.texts.clear()
        again = stack.service.ingest("shop", Documents([REFUND, *OTHERS]))
        assert (again.unchanged, again.chunks, stack.sparse.texts, stack.dense.texts) == (4, 0, [], [])
        retitled = dataclasses.replace(REFUND, title="Returns policy")
        moved = stack.service.ingest("shop", Documents([retitled, *OTHERS]))
        assert (moved.updated, moved.chunks) == (1, 3)
        assert any(t.startswith("Returns policy / Postage\n") for t in stack.sparse.texts)
    finally:
        stack.close()


def test_a_collection_from_before_bm25_is_rebuilt_from_its_payloads(
    tmp_path: Path, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    old = open_stack(tmp_path, real_sparse_encoder, real_dense_encoder, lexical=False, title_context=False)
    old.service.ingest("shop", Documents([REFUND, *OTHERS]))
    old.service.ingest("other-bot", Documents(OTHERS[:1]))
    old.close()
    new = open_stack(tmp_path, real_sparse_encoder, real_dense_encoder)
    try:
        assert not new.index.has_bm25()
        assert new.retriever.retrieve("shop", "warranty", 1)[0].chunk.uri.endswith("/warranty")  # two signals
        assert new.retriever.retrieve_mode("shop", "warranty", 1, "bm25") == []
        report = new.service.reindex(keep_neural=True)  # BM25 from the stored text; no model runs
        assert (report.rebuilt, report.chunks, report.reencoded, report.bots) == (
            True,
            7,
            0,
            {"shop", "other-bot"},
        )
        assert new.sparse.texts == [] and new.dense.texts == []
        assert new.index.has_bm25()
        assert (new.index.count("shop"), new.index.count("other-bot")) == (6, 1)
        [hit] = new.retriever.retrieve_mode("shop", "refund", 1, "bm25")
        assert hit.chunk.uri == REFUND.uri
        # A full re-encode of one bot, in place: titles now lead every chunk it encodes.
        full = new.service.reindex("shop")
        assert (full.rebuilt, full.chunks, full.reencoded, full.bots) == (False, 6, 6, {"shop"})
        assert any(t.startswith("Refund policy / Postage\n") for t in new.sparse.texts)
        # The SQL bookkeeping is untouched: a re-sync of unchanged content encodes nothing.
        new.sparse.texts.clear()
        assert new.service.ingest("shop", Documents([REFUND, *OTHERS])).unchanged == 4
        assert new.sparse.texts == []
    finally:
        new.close()
