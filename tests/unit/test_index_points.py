from __future__ import annotations

import math
import uuid

import pytest

from ragbot.index.base import Candidate
from ragbot.index.points import (
    PointFormatError,
    check_bot_id,
    check_collection_name,
    check_dense,
    check_sparse,
    chunk_point_id,
    chunk_to_payload,
    payload_to_chunk,
    point_id,
    sparse_from_pairs,
)
from ragbot.index.scoring import ScoredId, assemble_candidates, assemble_hits, check_fusion, engine_rrf_k
from ragbot.types import Chunk, SparseVector

pytestmark = pytest.mark.unit

CHUNK = Chunk(
    id=chunk_point_id("bot", "https://example.org/a", 2, "text"),
    bot_id="bot",
    source_id="src",
    uri="https://example.org/a",
    title="A",
    text="text",
    chunk_index=2,
    heading_path=("H1", "H2"),
    page=4,
    start_s=1.5,
    end_s=3.0,
    char_start=10,
    char_end=14,
)


def test_chunk_point_id_is_a_deterministic_uuid_that_changes_with_each_part() -> None:
    base = chunk_point_id("bot", "u", 0, "text")
    assert uuid.UUID(base).version == 5
    assert chunk_point_id("bot", "u", 0, "text") == base
    variants = {
        chunk_point_id("other", "u", 0, "text"),
        chunk_point_id("bot", "v", 0, "text"),
        chunk_point_id("bot", "u", 1, "text"),
        chunk_point_id("bot", "u", 0, "text!"),
    }
    assert base not in variants
    assert len(variants) == 4


def test_chunk_point_id_fields_cannot_bleed_into_each_other() -> None:
    assert chunk_point_id("a", "b\x1fc", 0, "t") != chunk_point_id("a\x1fb", "c", 0, "t")
    assert chunk_point_id("a", "b|0", 1, "t") != chunk_point_id("a", "b", 0, "t")


def test_point_id_keeps_uuids_and_maps_other_strings_deterministically() -> None:
    u = str(uuid.uuid4())
    assert point_id(u) == u
    assert point_id(u.upper()) == u  # canonical form
    mapped = point_id("doc-1#3")
    assert uuid.UUID(mapped)
    assert mapped == point_id("doc-1#3") != point_id("doc-1#4")
    with pytest.raises(PointFormatError):
        point_id("")


def test_payload_round_trip() -> None:
    payload = chunk_to_payload(CHUNK)
    assert payload["url"] == "https://example.org/a"
    assert payload["path"] is None
    assert payload["heading_path"] == ["H1", "H2"]
    assert payload_to_chunk(payload) == CHUNK


def test_payload_missing_a_field_names_it() -> None:
    payload = chunk_to_payload(CHUNK)
    del payload["text"]
    with pytest.raises(PointFormatError, match="'text'"):
        payload_to_chunk(payload)


def test_sparse_from_pairs_sorts_by_index() -> None:
    assert sparse_from_pairs([5, 1], [0.5, 1.0]) == SparseVector((1, 5), (1.0, 0.5))
    with pytest.raises(PointFormatError):
        sparse_from_pairs([1], [])


@pytest.mark.parametrize(
    "vector",
    [
        SparseVector((2, 1), (1.0, 1.0)),
        SparseVector((1, 1), (1.0, 1.0)),
        SparseVector((-1,), (1.0,)),
        SparseVector((1,), (math.nan,)),
        SparseVector((1, 2), (1.0,)),
    ],
)
def test_check_sparse_rejects_malformed_vectors(vector: SparseVector) -> None:
    with pytest.raises(PointFormatError):
        check_sparse(vector)


def test_check_dense() -> None:
    assert check_dense((1, 2), 2) == [1.0, 2.0]
    for bad in [(), (0.0, 0.0), (math.inf, 1.0)]:
        with pytest.raises(PointFormatError):
            check_dense(bad)
    with pytest.raises(PointFormatError, match="3 dimensions"):
        check_dense((1.0, 2.0, 3.0), 2)


def test_identifiers_are_checked() -> None:
    assert check_bot_id("b") == "b"
    with pytest.raises(PointFormatError):
        check_bot_id("")
    assert check_collection_name("ragbot_v2.1") == "ragbot_v2.1"
    for bad in ["", "../x", "a/b", ".hidden", "x" * 65]:
        with pytest.raises(PointFormatError):
            check_collection_name(bad)


def test_assemble_hits_annotates_component_scores_and_ranks() -> None:
    payload = chunk_to_payload(CHUNK)
    fused = [ScoredId("p1", 0.03, payload)]
    hits = assemble_hits(fused, [ScoredId("p0", 9.0), ScoredId("p1", 4.0)], [ScoredId("p2", 0.9)])
    assert hits[0].chunk == CHUNK
    assert (hits[0].score, hits[0].sparse_score, hits[0].sparse_rank) == (0.03, 4.0, 2)
    assert (hits[0].dense_score, hits[0].dense_rank) == (None, None)
    with pytest.raises(ValueError, match="payload"):
        assemble_hits([ScoredId("p1", 1.0)], [], [])


def test_assemble_candidates_unions_both_lists_with_exact_scores() -> None:
    def ids(chunk_id: str) -> dict[str, str]:
        return {"chunk_id": chunk_id}

    got = assemble_candidates(
        sparse=[ScoredId("p1", 3.0, ids("c1"))],
        dense=[ScoredId("p2", 0.9, ids("c2")), ScoredId("p1", 0.5, ids("c1"))],
        sparse_exact={"p2": 0.0},  # rescored: p2 shares no term with the query
        dense_exact={},
    )
    assert got == [Candidate("c1", 3.0, 0.5, 1, 2), Candidate("c2", 0.0, 0.9, None, 1)]
    rescored = assemble_candidates([ScoredId("p1", 3.0, ids("c1"))], [], {}, {"p1": 0.25})
    assert rescored == [Candidate("c1", 3.0, 0.25, 1, None)]


def test_candidates_nobody_rescored_get_the_other_lists_floor_as_a_bound() -> None:
    def ids(chunk_id: str) -> dict[str, str]:
        return {"chunk_id": chunk_id}

    got = assemble_candidates(
        sparse=[ScoredId("p1", 3.0, ids("c1")), ScoredId("p3", 1.0, ids("c3"))],
        dense=[ScoredId("p2", 0.9, ids("c2")), ScoredId("p1", 0.5, ids("c1"))],
        sparse_exact={},
        dense_exact={},
    )
    assert got == [
        Candidate("c1", 3.0, 0.5, 1, 2),
        Candidate("c3", 1.0, 0.5, 2, None, exact=False),
        Candidate("c2", 1.0, 0.9, None, 1, exact=False),
    ]
    with pytest.raises(ValueError, match="chunk id"):
        assemble_candidates([ScoredId("p1", 3.0, {})], [], {}, {"p1": 0.1})


def test_engine_rrf_k_and_fusion_names() -> None:
    assert engine_rrf_k(60) == 61
    with pytest.raises(ValueError, match="rrf_k"):
        engine_rrf_k(0)
    assert check_fusion("dbsf") == "dbsf"
    with pytest.raises(ValueError, match="fusion"):
        check_fusion("adaptive")
