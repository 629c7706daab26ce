"""Fusion rules are pure: properties that must hold for any input, checked in milliseconds."""

from __future__ import annotations

import math
import random

import pytest

from ragbot.retrieval import fusion
from ragbot.retrieval.retriever import holds_pieced_words

pytestmark = pytest.mark.unit


def _ids(pairs: list[tuple[str, float]]) -> list[str]:
    return [d for d, _ in pairs]


def _fuse(
    name: str, sparse: list[tuple[str, float]], dense: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """``fusion.fuse`` with exact scores as an index would give them: a candidate one retriever did not
    list scores below that list's last entry."""
    exact: dict[str, tuple[float, float]] = {}
    s_at, d_at = dict(sparse), dict(dense)
    s_low = min(s_at.values(), default=0.0) - 1.0
    d_low = min(d_at.values(), default=0.0) - 0.1
    for doc in {*s_at, *d_at}:
        exact[doc] = (s_at.get(doc, s_low), d_at.get(doc, d_low))
    return fusion.fuse(name, sparse, dense, exact=exact)


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_identical_lists_keep_their_order(name: str) -> None:
    ranked = [("a", 9.0), ("b", 7.5), ("c", 3.0), ("d", 1.0)]
    cosine = [("a", 0.9), ("b", 0.75), ("c", 0.3), ("d", 0.1)]
    assert _ids(_fuse(name, ranked, cosine)) == ["a", "b", "c", "d"]


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
        assert _fuse(name, sparse, dense)[0][0] == "top"


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_ties_break_by_id_and_inputs_order_does_not_matter(name: str) -> None:
    sparse = [("b", 2.0), ("a", 1.0)]
    dense = [("a", 0.8), ("b", 0.4)]
    first = _fuse(name, sparse, dense)
    assert _ids(first) == ["a", "b"]  # symmetric evidence: equal fused scores, id order decides
    assert first[0][1] == pytest.approx(first[1][1])
    assert _fuse(name, sparse, dense) == first


@pytest.mark.parametrize("name", fusion.FUSIONS)
def test_union_of_both_lists_and_empty_inputs(name: str) -> None:
    assert _fuse(name, [], []) == []
    only_dense = _fuse(name, [], [("x", 0.5), ("y", 0.2)])
    assert _ids(only_dense) == ["x", "y"]
    both = _fuse(name, [("s", 3.0)], [("d", 0.7), ("e", 0.6)])
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


def test_calibrated_fusion_needs_exact_scores() -> None:
    with pytest.raises(ValueError, match="exact"):
        fusion.fuse("zscore_calibrated", [("a", 1.0)], [("a", 0.5)])


def test_zscore_exact_places_a_missed_candidate_by_its_real_score() -> None:
    sparse = [("s1", 9.0), ("s2", 3.0)]  # mean 6, std 3
    dense = [("d1", 0.9), ("d2", 0.5), ("s1", 0.1)]
    exact = {"s1": (9.0, 0.1), "s2": (3.0, 0.85), "d1": (0.0, 0.9), "d2": (6.0, 0.5)}
    fused = dict(fusion.zscore_exact([sparse, dense], exact))
    mean_d, std_d = 0.5, (((0.4**2) * 2) / 3) ** 0.5
    assert fused["s2"] == pytest.approx(-1.0 + (0.85 - mean_d) / std_d)  # not the dense floor
    assert fused["d1"] == pytest.approx(-2.0 + (0.9 - mean_d) / std_d)  # sparse 0: two spreads below
    assert fused["d2"] == pytest.approx(0.0 + 0.0)


def test_weights_scale_each_retrievers_vote() -> None:
    sparse = [("a", 10.0), ("b", 1.0)]
    dense = [("b", 0.9), ("a", 0.1)]
    exact = {"a": (10.0, 0.1), "b": (1.0, 0.9)}
    assert _ids(fusion.zscore_exact([sparse, dense], exact, (1.5, 0.5)))[0] == "a"
    assert _ids(fusion.zscore_exact([sparse, dense], exact, (0.5, 1.5)))[0] == "b"


def test_top_z_measures_how_far_the_head_stands_out() -> None:
    flat = [1.0] * 50
    assert fusion.top_z(flat) == 0.0
    assert fusion.top_z([]) == 0.0
    peaked = [10.0] * 10 + [1.0] * 40  # head z = 2 exactly: mean 2.8, std 3.6
    assert fusion.top_z(peaked, head=10) == pytest.approx(2.0)
    assert fusion.top_z(peaked, head=3) == pytest.approx(2.0)  # the head is the first three
    assert fusion.top_z(peaked + [100.0] * 50) == pytest.approx(2.0)  # only the first 50 count
    gentle = [10.0 - 0.1 * i for i in range(50)]
    assert 0.0 < fusion.top_z(gentle) < fusion.top_z(peaked)


def test_calibrated_weights_favour_the_sharper_retriever_and_sum_to_two() -> None:
    assert fusion.calibrated_weights(1.2, 1.2) == pytest.approx((1.0, 1.0))
    w_sparse, w_dense = fusion.calibrated_weights(1.0, 1.2)  # dense top stands out more
    assert w_sparse + w_dense == pytest.approx(2.0)
    assert w_dense > 1.5 > 0.5 > w_sparse
    assert fusion.calibrated_weights(1.2, 1.0) == pytest.approx((w_dense, w_sparse))


@pytest.mark.parametrize("n_lists", [2, 3])
def test_skipping_candidates_not_worth_rescoring_never_changes_the_top_k(n_lists: int) -> None:
    rng = random.Random(11 + n_lists)
    skipped_some = 0
    ranges = [(0.0, 30.0), (-0.2, 0.9), (0.0, 12.0)][:n_lists]
    for _ in range(300):
        docs = [f"d{i}" for i in range(rng.randint(4, 40))]
        listed = [rng.sample(docs, rng.randint(2, len(docs))) for _ in range(n_lists)]
        scores = [{d: rng.uniform(lo, hi) for d in ids} for (lo, hi), ids in zip(ranges, listed, strict=True)]
        lists = [sorted(s.items(), key=lambda p: -p[1]) for s in scores]
        floors = [ranked[-1][1] for ranked in lists]
        union = {d for ids in listed for d in ids}
        # What an index would rescore: a list misses a chunk only when it scores no higher than its last.
        true = {
            d: tuple(
                s.get(d, rng.uniform(lo - 0.3, floor))
                for s, (lo, _), floor in zip(scores, ranges, floors, strict=True)
            )
            for d in union
        }
        raw = [rng.uniform(0.1, 1.9) for _ in range(n_lists)]
        weights = tuple(n_lists * w / sum(raw) for w in raw)
        top_k = rng.randint(1, 6)
        scales = tuple(rng.uniform(0.1, 10.0) for _ in range(n_lists)) if rng.random() < 0.5 else None
        worth = fusion.worth_rescoring(lists, weights, top_k, scales)
        bounded = {
            d: tuple(true[d][i] if d in scores[i] or d in worth else floors[i] for i in range(n_lists))
            for d in true
        }
        full = fusion.zscore_exact(lists, true, weights, scales)[:top_k]
        pruned = fusion.zscore_exact(lists, bounded, weights, scales)[:top_k]
        assert _ids(pruned) == _ids(full)
        assert [s for _, s in pruned] == pytest.approx([s for _, s in full])
        in_all = set.intersection(*(set(s) for s in scores))
        skipped_some += len(union - in_all) > len(worth)
    assert skipped_some > 100  # the bound does prune in most cases


def test_usual_scales_let_a_list_with_a_clear_winner_count_more_on_that_query() -> None:
    """Per-query spreads make two lists' winners equal whatever their margins; usual spreads keep the
    margins: sparse separates "a" by 9 where it usually spreads 1, dense separates "b" by 0.02 where it
    usually spreads 0.1, so "a" wins."""
    sparse = [("a", 10.0), ("b", 1.0), ("c", 1.0)]
    dense = [("b", 0.52), ("a", 0.50), ("c", 0.50)]
    exact = {"a": (10.0, 0.50), "b": (1.0, 0.52), "c": (1.0, 0.50)}
    per_query = dict(fusion.zscore_exact([sparse, dense], exact))
    assert per_query["a"] == pytest.approx(per_query["b"])
    usual = fusion.zscore_exact([sparse, dense], exact, scales=(1.0, 0.1))
    assert _ids(usual)[0] == "a"
    # An unknown spread (0: the retriever did not run yet) falls back to the query's own.
    assert dict(fusion.zscore_exact([sparse, dense], exact, scales=(0.0, 0.0))) == pytest.approx(per_query)
    with pytest.raises(ValueError, match="1 scales for 2 lists"):
        fusion.zscore_exact([sparse, dense], exact, scales=(1.0,))


def test_three_signal_weights_reduce_to_the_two_signal_sigmoid() -> None:
    """The softmax over N means is, for two, exactly the sigmoid the two-signal fusion used; and dropping a
    retriever (renormalising the others) keeps their ratio, so two lists fuse as before."""
    for g_sparse, g_dense, g_bm25 in [(1.1, 1.2, 0.9), (0.7, 0.4, 1.3), (1.0, 1.0, 1.0)]:
        sigmoid = 1.0 / (1.0 + math.exp(-fusion.CALIBRATION_TEMPERATURE * (g_sparse - g_dense)))
        two = fusion.calibrated_weights(g_sparse, g_dense)
        assert two == pytest.approx((2.0 * sigmoid, 2.0 * (1.0 - sigmoid)), rel=1e-12)
        three = fusion.calibrated_weights(g_sparse, g_dense, g_bm25)
        assert sum(three) == pytest.approx(3.0)
        assert fusion.renormalised(three, 2) == pytest.approx(two, rel=1e-12)
    w_sparse, w_dense, w_bm25 = fusion.calibrated_weights(1.0, 1.0, 1.2)  # BM25's top stands out most
    assert w_bm25 > w_sparse == pytest.approx(w_dense)


def test_fusions_take_three_lists() -> None:
    sparse = [("a", 3.0), ("b", 1.0)]
    dense = [("b", 0.9), ("a", 0.2)]
    bm25 = [("c", 9.0), ("a", 8.0), ("b", 0.5)]
    assert _ids(fusion.fuse("rrf", sparse, dense, bm25))[0] == "a"
    assert set(_ids(fusion.zscore(sparse, dense, bm25))) == {"a", "b", "c"}
    exact = {"a": (3.0, 0.2, 8.0), "b": (1.0, 0.9, 0.5), "c": (0.0, 0.1, 9.0)}
    heavy_bm25 = fusion.fuse("zscore_calibrated", sparse, dense, bm25, exact=exact, weights=(0.2, 0.2, 2.6))
    assert _ids(heavy_bm25)[0] == "c"
    with pytest.raises(ValueError, match="3 weights for 2 lists"):
        fusion.zscore_exact([sparse, dense], exact, (1.0, 1.0, 1.0))


def test_bm25_votes_only_for_words_the_neural_models_read_in_pieces() -> None:
    """A word the vocabulary splits (an invented name, a rare term) or one with a digit brings BM25 in;
    a question of whole, common words is fused by SPLADE and dense alone."""
    vocabulary = {"how", "many", "watts", "does", "the", "draw", "what", "is", "refund", "policy", "kt"}

    def pieces(word: str) -> int:
        return 1 if word in vocabulary else 3

    assert not holds_pieced_words("What is the refund policy?", pieces)
    assert holds_pieced_words("How many watts does the KT-4471 draw?", pieces)  # a model number
    assert holds_pieced_words("What is the Zorvex policy?", pieces)  # a name split into pieces
    assert not holds_pieced_words("Is it ok?", pieces)  # two-letter words are never looked up
