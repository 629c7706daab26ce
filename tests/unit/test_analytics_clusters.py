"""Grouping questions by meaning and ranking content gaps, on synthetic vectors whose similarities are
known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragbot.analytics.clusters import (
    DISTANCE_THRESHOLD,
    GAP_MIN_FAILED,
    GAP_MIN_FAILURE_RATE,
    cluster_vectors,
    group,
)

pytestmark = pytest.mark.unit


def _pair(cosine: float, dim: int = 8) -> list[list[float]]:
    """Two unit vectors at exactly ``cosine`` to each other."""
    angle = math.acos(cosine)
    a = [1.0] + [0.0] * (dim - 1)
    b = [math.cos(angle), math.sin(angle)] + [0.0] * (dim - 2)
    return [a, b]


def _topics(sizes: list[int], *, noise: float = 0.25, dim: int = 64, seed: int = 3) -> np.ndarray:
    """Questions around orthogonal topic directions (cosine within a topic ~0.95, across ~0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic, size in enumerate(sizes):
        centre = np.zeros(dim)
        centre[topic] = 1.0
        for _ in range(size):
            rows.append(centre + rng.normal(0, noise / math.sqrt(dim), dim))
    return np.asarray(rows)


def test_topics_are_found_largest_first_and_every_question_lands_once() -> None:
    vectors = _topics([3, 6, 4])
    clusters = cluster_vectors(vectors)
    assert [c.size for c in clusters] == [6, 4, 3]
    assert sorted(clusters[0].members) == list(range(3, 9))
    assert sorted(clusters[1].members) == list(range(9, 13))
    assert sorted(clusters[2].members) == [0, 1, 2]
    every = sorted(i for c in clusters for i in c.members)
    assert every == list(range(13))


def test_the_representative_is_the_question_closest_to_the_centroid() -> None:
    """Five questions fanned out in a plane at 30, 0, 20, 40 and 10 degrees: their centroid points at 20."""
    angles = [30, 0, 20, 40, 10]
    vectors = [[math.cos(math.radians(a)), math.sin(math.radians(a)), 0.0] for a in angles]
    [cluster] = cluster_vectors(vectors)
    assert cluster.representative == 2
    assert cluster.similarity[0] == pytest.approx(1.0)
    assert cluster.similarity == tuple(sorted(cluster.similarity, reverse=True))
    # 10 and 30 degrees tie, as do 0 and 40: the earlier question goes first
    assert cluster.members == (2, 0, 4, 1, 3)


def test_an_unlike_question_is_a_group_of_its_own() -> None:
    vectors = _topics([5]).tolist()
    lone = [0.0] * 64
    lone[40] = 1.0
    clusters = cluster_vectors([*vectors, lone])
    assert [c.size for c in clusters] == [5, 1]
    assert clusters[1].members == (5,)


@pytest.mark.parametrize(
    ("cosine", "merged"),
    [(1 - DISTANCE_THRESHOLD + 0.05, True), (1 - DISTANCE_THRESHOLD - 0.05, False)],
)
def test_the_threshold_is_a_cosine_distance(cosine: float, merged: bool) -> None:
    clusters = cluster_vectors(_pair(cosine))
    assert len(clusters) == (1 if merged else 2)


def test_average_linkage_does_not_chain_topics_through_a_bridge() -> None:
    """A at 0 degrees, B at 120 and a bridge at 60: each end is close enough to the bridge, so single
    linkage would join all three; average linkage keeps the far end apart (mean similarity 0)."""
    a, bridge, b = ([math.cos(math.radians(d)), math.sin(math.radians(d))] for d in (0, 60, 120))
    clusters = cluster_vectors([a, bridge, b])  # cos(a, bridge) = cos(bridge, b) = 0.5, cos(a, b) = -0.5
    assert sorted(c.size for c in clusters) == [1, 2]


def test_scale_does_not_matter_only_direction() -> None:
    vectors = _topics([4, 4])
    scaled = vectors * np.array([[1.0], [10.0], [0.1], [3.0], [1.0], [7.0], [0.5], [2.0]])
    assert [sorted(c.members) for c in cluster_vectors(vectors)] == [
        sorted(c.members) for c in cluster_vectors(scaled)
    ]


def test_empty_and_single_inputs() -> None:
    assert cluster_vectors([]) == []
    [only] = cluster_vectors([[0.2, 0.4]])
    assert only.members == (0,) and only.similarity == (1.0,)


def test_zero_or_non_finite_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        cluster_vectors([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="non-zero"):
        cluster_vectors([[1.0, float("nan")], [0.0, 1.0]])
    with pytest.raises(ValueError, match="threshold"):
        cluster_vectors([[1.0, 0.0]], distance_threshold=0)


def _around(
    direction: np.ndarray, count: int, rng: np.random.Generator, noise: float = 0.05
) -> list[np.ndarray]:
    return [direction + rng.normal(0, noise, direction.shape) for _ in range(count)]


def _axis(i: int, dim: int = 32) -> np.ndarray:
    v = np.zeros(dim)
    v[i] = 1.0
    return v


def test_gaps_rank_by_volume_times_failure_rate() -> None:
    rng = np.random.default_rng(5)
    vectors = (
        _around(_axis(0), 6, rng)  # 0-5: 4 of 6 failed -> score 4, rate 0.67
        + _around(_axis(1), 4, rng)  # 6-9: 4 of 4 failed -> score 4, rate 1
        + _around(_axis(2), 5, rng)  # 10-14: answered, one stray failure -> no gap
        + _around(_axis(3), 3, rng)  # 15-17: 2 of 3 failed -> score 2
    )
    failed = [i in {0, 1, 2, 3, 6, 7, 8, 9, 12, 15, 16} for i in range(len(vectors))]
    gaps = group(vectors).gaps(failed)
    assert [sorted(g.cluster.members) for g in gaps] == [[6, 7, 8, 9], list(range(6)), [15, 16, 17]]
    assert [g.score for g in gaps] == pytest.approx([4.0, 4.0, 2.0])
    assert [g.failed for g in gaps] == [4, 4, 2]
    assert gaps[0].failure_rate == 1.0 and gaps[1].failure_rate == pytest.approx(4 / 6)
    assert all(g.score == pytest.approx(g.cluster.size * g.failure_rate) for g in gaps)


def test_a_failing_branch_inside_an_answered_group_is_found() -> None:
    """Eight answered questions and four failed ones on a neighbouring subject (cosine 0.5): the cut
    keeps them in one group (a third of it failed), the gap is the failed branch inside it."""
    rng = np.random.default_rng(11)
    near = 0.5 * _axis(0) + math.sqrt(0.75) * _axis(1)
    vectors = _around(_axis(0), 8, rng, 0.02) + _around(near, 4, rng, 0.02)
    failed = [i >= 8 for i in range(12)]
    grouping = group(vectors)
    assert [c.size for c in grouping.clusters()] == [12]
    [gap] = grouping.gaps(failed)
    assert sorted(gap.cluster.members) == [8, 9, 10, 11]
    assert gap.failure_rate == 1.0 and gap.score == 4.0
    # top questions show the failing branch apart, so it is not hidden in the answered group
    assert [sorted(c.members) for c in grouping.clusters(apart=[gap])] == [list(range(8)), [8, 9, 10, 11]]


def test_a_mostly_answered_topic_with_stray_failures_is_no_gap() -> None:
    rng = np.random.default_rng(7)
    vectors = _around(_axis(0), 10, rng) + _around(_axis(1), 6, rng)
    failed = [i in {3, 12} for i in range(16)]  # one stray failure in each topic
    assert group(vectors).gaps(failed) == []
    assert GAP_MIN_FAILED == 2 and GAP_MIN_FAILURE_RATE == 0.5
    loose = group(vectors).gaps(failed, min_failed=1, min_failure_rate=0.05)
    assert {g.cluster.size for g in loose} == {10, 6}


def test_gaps_need_one_outcome_per_vector_and_some_failures() -> None:
    grouping = group([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert grouping.gaps([False, False, False]) == []
    with pytest.raises(ValueError, match="outcomes"):
        grouping.gaps([True])
    assert group([]).gaps([]) == [] and group([]).clusters() == []
    assert group([[1.0, 2.0]]).gaps([True]) == []  # one failed ask is no gap


def test_a_large_window_needs_no_recursion() -> None:
    """The tree is walked with explicit stacks: thousands of questions do not hit Python's recursion
    limit, whatever the tree's shape."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(1500, 8))
    failed = [bool(i % 2) for i in range(1500)]
    grouping = group(vectors)
    assert sum(c.size for c in grouping.clusters()) == 1500
    assert all(g.failure_rate >= 0.5 for g in grouping.gaps(failed))
