"""Questions grouped by meaning, and which groups are content gaps. Pure: vectors and outcomes in, groups
out; nothing here knows about the database or the encoder.

Grouping is scikit-learn's agglomerative clustering, cosine distance, average linkage, cut at a fixed
distance (``DISTANCE_THRESHOLD``) rather than a fixed number of clusters: traffic decides how many topics
there are. Average linkage merges two groups only when their questions are, on average, similar enough,
so one borderline question cannot chain two topics together the way single linkage would.

Why 0.8 (merge while the mean cosine similarity between two groups is at least 0.2), for the packaged
all-MiniLM-L6-v2: it is where grouping best recovers topics on held-out data, not on any test fixture.
The held-out data: question sets of two made-up products in other domains (a meal-kit delivery service
and a coworking space; 6 topics each, 5-6 differently worded questions per topic) mixed with 30 unrelated
questions (MS MARCO TREC DL 2019 queries, ``shared/data/beir``); score: adjusted Rand index against the
topic labels, unrelated questions counted as groups of one.

* Pair similarities: same topic, median 0.26-0.33 (p90 0.46-0.58); other topic of the same product,
  median 0.08-0.12 (p90 0.24-0.28); unrelated questions, median 0.02 (p90 0.12, max 0.35). This encoder
  puts differently worded questions on one topic far below its duplicate-question level (~0.75, where
  sentence-transformers mines duplicates with it), so a paraphrase-level cut splits every topic.
* Adjusted Rand index by distance threshold (meal kits / coworking): 0.5: 0.24 / 0.05; 0.7: 0.42 / 0.25;
  0.8: 0.53 / 0.38; 0.85: 0.50 / 0.36; 0.9: 0.31 / 0.30. HDBSCAN (min_cluster_size 2, 3, 5) did worse:
  at best 0.38 / 0.18.

A first choice, 0.5 (midway between the unrelated ceiling and the duplicate level), left topics in
pieces; 0.8 replaced it after the held-out measurement above. Another dense model has other typical
similarities: recalibrate with the model, as ``RAGBOT_MIN_RELEVANCE`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DISTANCE_THRESHOLD",
    "GAP_MIN_FAILED",
    "GAP_MIN_FAILURE_RATE",
    "Cluster",
    "Gap",
    "Grouping",
    "cluster_vectors",
    "group",
]

#: Cosine distance (1 - similarity) at which agglomerative clustering stops merging (see above).
DISTANCE_THRESHOLD = 0.8
#: A group is a content gap when the bot failed at least this share of its questions: a topic the
#: content does not cover fails most of the time, whereas a covered one with a stray thumbs-down does not.
GAP_MIN_FAILURE_RATE = 0.5
#: ...and at least this many of them: one failed ask is an anecdote, not a topic (it stays visible in the
#: top questions and the feedback export).
GAP_MIN_FAILED = 2

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Cluster:
    """Indices into the clustered vectors, the one closest to the group's centroid first
    (``representative``); ``similarity`` is each member's cosine to that centroid, in the same order."""

    members: tuple[int, ...]
    similarity: tuple[float, ...]

    @property
    def representative(self) -> int:
        return self.members[0]

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True)
class Gap:
    """A group ranked as a content gap: ``score`` = volume x failure rate (= its failed asks)."""

    cluster: Cluster
    failed: int
    failure_rate: float
    score: float


def _unit_rows(vectors: Sequence[Sequence[float]] | Matrix) -> Matrix:
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("vectors must be finite and non-zero (cosine is undefined otherwise)")
    unit: Matrix = matrix / norms
    return unit


def _cluster(unit: Matrix, idx: Sequence[int]) -> Cluster:
    """The members ordered by cosine to their centroid, the closest (the representative) first."""
    rows = np.asarray(sorted(idx), dtype=np.int64)
    centroid = unit[rows].mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    if norm > 0:
        centroid /= norm
    sims = [round(float(x), 9) for x in unit[rows] @ centroid]  # rounded: float noise is no tie-break
    # closest to the centroid first; equal similarity keeps the earlier question first
    order = sorted(range(len(rows)), key=lambda k: (-sims[k], int(rows[k])))
    return Cluster(
        members=tuple(int(rows[k]) for k in order), similarity=tuple(round(sims[k], 6) for k in order)
    )


class Grouping:
    """The average-linkage tree of a set of vectors, and the groups read from it.

    ``clusters()``: the tree cut at the threshold, every vector in exactly one group (top questions).
    ``gaps(failed)``: within each of those groups, the largest sub-groups of the tree that mostly failed.
    A topic the content lacks sits in the tree as a branch of failed questions, but the loose cut that
    keeps a topic's rewordings together can also hang that branch beside well-answered questions of the
    same product; searching the branches below the cut finds it without a second, tighter threshold. A
    stray failure inside an answered topic never forms such a branch on its own (``GAP_MIN_FAILED``).
    """

    def __init__(self, unit: Matrix, labels: Sequence[int], children: Matrix, distances: Matrix) -> None:
        self._unit = unit
        self._labels = [int(x) for x in labels]
        self._children = [(int(a), int(b)) for a, b in children]
        self._distances = [float(x) for x in distances]

    @property
    def size(self) -> int:
        return len(self._labels)

    def clusters(self, apart: Sequence[Gap] = ()) -> list[Cluster]:
        """The groups of the cut, largest first (ties: earliest member first). ``apart``: gaps to show as
        groups of their own, the rest of the group they sat in staying together, so a topic that fails
        is never hidden inside a larger, answered one (top questions and gaps then agree)."""
        labels = list(self._labels)
        fresh = max(labels, default=-1) + 1
        for gap in apart:
            for i in gap.cluster.members:
                labels[i] = fresh
            fresh += 1
        by_label: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            by_label.setdefault(label, []).append(i)
        clusters = [_cluster(self._unit, idx) for idx in by_label.values()]
        clusters.sort(key=lambda c: (-c.size, min(c.members)))
        return clusters

    def gaps(
        self,
        failed: Sequence[bool],
        *,
        min_failure_rate: float = GAP_MIN_FAILURE_RATE,
        min_failed: int = GAP_MIN_FAILED,
    ) -> list[Gap]:
        """The content gaps, worst first: the largest branches of the tree, below the cut, in which at
        least ``min_failed`` questions and ``min_failure_rate`` of all failed. Score = volume x failure
        rate (the number of failed asks: what writing the missing page would fix); ties go to the
        higher failure rate, then the larger group."""
        n = self.size
        if len(failed) != n:
            raise ValueError(f"{len(failed)} outcomes for {n} vectors")
        size = [1] * n + [0] * len(self._children)
        fails = [int(bool(f)) for f in failed] + [0] * len(self._children)
        for k, (a, b) in enumerate(self._children):  # children always come before their parent
            size[n + k] = size[a] + size[b]
            fails[n + k] = fails[a] + fails[b]

        def qualifies(node: int) -> bool:
            return fails[node] >= min_failed and fails[node] >= min_failure_rate * size[node]

        found = []
        stack = self._roots()
        while stack:
            node = stack.pop()
            if qualifies(node):
                found.append(node)
            elif node >= n:
                stack.extend(self._children[node - n])
        gaps = []
        for node in found:
            cluster = _cluster(self._unit, self._leaves(node))
            rate = fails[node] / size[node]
            gaps.append(Gap(cluster=cluster, failed=fails[node], failure_rate=rate, score=size[node] * rate))
        gaps.sort(key=lambda g: (-g.score, -g.failure_rate, -g.cluster.size, min(g.cluster.members)))
        return gaps

    def _roots(self) -> list[int]:
        """The tree's nodes that are the cut's groups (single vectors included): a node is inside a
        group when all its leaves carry that group's label."""
        n = self.size
        label = self._labels + [-1] * len(self._children)
        parent: dict[int, int] = {}
        for k, (a, b) in enumerate(self._children):  # children always come before their parent
            if label[a] == label[b] != -1:
                label[n + k] = label[a]
            parent[a] = parent[b] = n + k
        return [
            node
            for node in range(len(label))
            if label[node] != -1 and (node not in parent or label[parent[node]] == -1)
        ]

    def _leaves(self, node: int) -> list[int]:
        n = self.size
        out, stack = [], [node]
        while stack:
            at = stack.pop()
            if at < n:
                out.append(at)
            else:
                stack.extend(self._children[at - n])
        return out


def group(
    vectors: Sequence[Sequence[float]] | Matrix, *, distance_threshold: float = DISTANCE_THRESHOLD
) -> Grouping:
    """Build the average-linkage tree of ``vectors`` (cosine) and cut it at ``distance_threshold``."""
    if not 0.0 < distance_threshold <= 2.0:
        raise ValueError("distance_threshold must be in (0, 2]")
    if len(vectors) == 0:
        empty = np.zeros((0, 2))
        return Grouping(empty, [], empty, np.zeros(0))
    unit = _unit_rows(vectors)
    if len(unit) == 1:
        return Grouping(unit, [0], np.zeros((0, 2)), np.zeros(0))
    from sklearn.cluster import AgglomerativeClustering  # imported on use: it is slow to load

    model = AgglomerativeClustering(
        n_clusters=None,
        metric="cosine",
        linkage="average",
        distance_threshold=distance_threshold,
        compute_full_tree=True,
    ).fit(unit)
    return Grouping(unit, model.labels_, model.children_, model.distances_)


def cluster_vectors(
    vectors: Sequence[Sequence[float]] | Matrix, *, distance_threshold: float = DISTANCE_THRESHOLD
) -> list[Cluster]:
    """Group ``vectors`` by cosine similarity; largest groups first (ties: earliest member first).

    Every vector ends in exactly one group; a question like no other is a group of one."""
    return group(vectors, distance_threshold=distance_threshold).clusters()
