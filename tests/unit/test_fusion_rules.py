"""Fusion rules are pure: properties that must hold for any input, checked in milliseconds."""

from __future__ import annotations

import random

import pytest

from ragbot.retrieval import fusion

pytestmark = pytest.mark.unit


def _ids(pairs: list[tuple[str, float]]) -> list[str]:
    return [d for d, _ in pairs]


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_identical_lists_keep_their_order(name: str) -> None:
    ranked = [("a", 9.0), ("b", 7.5), ("c", 3.0), ("d", 1.0)]
    cosine = [("a", 0.9), ("b", 0.75), ("c", 0.3), ("d", 0.1)]
    assert _ids(fusion.fuse(name, ranked, cosine)) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_a_document_first_in_both_lists_ranks_first(name: str) -> None:
    rng = random.Random(7)
    for _ in range(200):
        others = [f"d{i}" for i in range(rng.randint(1, 30))]
        s = ["top", *rng.sample(others, len(others))]
        d = ["top", *rng.sample(others, len(others))]
        sparse = [(doc, 20.0 - i * rng.random()) for i, doc in enumerate(s)]
        dense = [(doc, 0.9 - i * 0.01) for i, doc in enumerate(d)]
        sparse.sort(key=lambda p: -p[1])
        if sparse[0][0] != "top":
            continue
        assert fusion.fuse(name, sparse, dense)[0][0] == "top"


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_ties_break_by_id_and_inputs_order_does_not_matter(name: str) -> None:
    sparse = [("b", 2.0), ("a", 1.0)]
    dense = [("a", 0.8), ("b", 0.4)]
    first = fusion.fuse(name, sparse, dense)
    assert _ids(first) == ["a", "b"]  # symmetric evidence: equal fused scores, id order decides
    assert first[0][1] == pytest.approx(first[1][1])
    assert fusion.fuse(name, sparse, dense) == first


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_union_of_both_lists_and_empty_inputs(name: str) -> None:
    assert fusion.fuse(name, [], []) == []
    only_dense = fusion.fuse(name, [], [("x", 0.5), ("y", 0.2)])
    assert _ids(only_dense) == ["x", "y"]
    both = fusion.fuse(name, [("s", 3.0)], [("d", 0.7), ("e", 0.6)])
    assert set(_ids(both)) == {"s", "d", "e"}


def test_zscore_keeps_score_gaps_that_ranks_lose() -> None:
    # sparse is sure of "a" (a wide gap); dense barely prefers "b" over "a": z-scores keep "a" first,
    # while RRF sees two first places and lets the id order decide.
    sparse = [("a", 30.0), ("b", 5.0), ("c", 4.0), ("d", 3.0)]
    dense = [("b", 0.61), ("a", 0.60), ("c", 0.30), ("d", 0.20)]
    assert _ids(fusion.zscore(sparse, dense))[0] == "a"
    assert fusion.rrf([_ids(sparse), _ids(dense)])["a"] == pytest.approx(
        fusion.rrf([_ids(sparse), _ids(dense)])["b"]
    )


def test_zscore_gives_missing_candidates_the_lists_floor() -> None:
    sparse = [("s1", 9.0), ("s2", 3.0)]  # z: +1, -1
    dense = [("d1", 0.9), ("d2", 0.5), ("s1", 0.1)]
    fused = dict(fusion.zscore(sparse, dense))
    z_d = {"d1": 1.2247448713915887, "d2": 0.0, "s1": -1.2247448713915887}
    assert fused["d1"] == pytest.approx(z_d["d1"] - 1.0)  # sparse floor is s2's z
    assert fused["s2"] == pytest.approx(-1.0 + z_d["s1"])  # dense floor is its lowest z
    assert fused["s1"] == pytest.approx(1.0 + z_d["s1"])


def test_zscore_is_invariant_to_each_retrievers_scale_and_offset() -> None:
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(40)]
    sparse = sorted(((d, rng.uniform(0, 30)) for d in rng.sample(docs, 20)), key=lambda p: -p[1])
    dense = sorted(((d, rng.uniform(-1, 1)) for d in rng.sample(docs, 20)), key=lambda p: -p[1])
    rescaled = [(d, 5.0 * s + 100.0) for d, s in sparse]
    base = fusion.zscore(sparse, dense)
    moved = fusion.zscore(rescaled, dense)
    assert _ids(base) == _ids(moved)
    assert [s for _, s in base] == pytest.approx([s for _, s in moved])


def test_rrf_matches_the_textbook_formula() -> None:
    fused = fusion.rrf([["a", "b"], ["b", "c"]], k=60)
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusion 'magic'"):
        fusion.fuse("magic", [], [])
