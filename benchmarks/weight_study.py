"""Which label-free statistic picks three-signal fusion weights that never lose to the best single retriever?

Reuses ``fusion_study.py``'s cached encodings (run that first on the same folders). For every query the
union of the three top lists is scored exactly by SPLADE, dense and BM25, each standardised by its own top
list (the product's ``zscore_exact``); then every weight triple of a grid is replayed at once, which shows
the best weights labels would pick (the ceiling) and where each label-free statistic lands.

    .venv/bin/python benchmarks/weight_study.py ../shared/data/beir/msmarco-5k /tmp/beir/*
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fusion_study as fs

from ragbot.evaluation.beir import load_beir
from ragbot.evaluation.metrics import ndcg_at
from ragbot.retrieval import fusion

LISTS = ("sparse", "dense", "bm25")


def _grid() -> np.ndarray:
    steps = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
    rows = {
        tuple(np.round(np.array(w) / max(w), 4)) for w in itertools.product(steps, repeat=3) if max(w) > 0
    }
    return np.array(sorted(rows))


class Prepared:
    """Per query: the union's exact scores and standardised ones (n x 3) and gains, for fast replays."""

    def __init__(self, qviews: Sequence[fs.QueryView], qrels: dict[str, dict[str, int]], qids: list[str]):
        self.texts = [v.text for v in qviews]
        self.exact: list[np.ndarray] = []
        self.z: list[np.ndarray] = []
        self.ids: list[list[str]] = []
        self.qrels = [qrels[q] for q in qids]
        self.stats: dict[str, list[np.ndarray]] = {name: [] for name in LISTS}
        for v in qviews:
            lists = [v.sparse, v.dense, v.bm25]
            union = sorted({d for ranked in lists for d, _ in ranked})
            rows = v.doc_rows(union)
            exact = np.array(
                [
                    [
                        float(v.scores.sparse[v.qi, r]),
                        float(v.scores.dense[v.qi, r]),
                        float(v.scores.bm25[v.qi, r]),
                    ]
                    for r in rows
                ]
            )
            self.exact.append(exact)
            z = np.zeros_like(exact)
            for c, ranked in enumerate(lists):
                xs = np.array([x for _, x in ranked])
                sd = xs.std()
                z[:, c] = (exact[:, c] - xs.mean()) / sd if sd > 0 else 0.0
                self.stats[LISTS[c]].append(xs)
            self.z.append(z)
            self.ids.append(union)

    def ndcg(self, weights: np.ndarray) -> np.ndarray:
        """Mean nDCG@10 per weight row."""
        total = np.zeros(len(weights))
        for z, ids, rel in zip(self.z, self.ids, self.qrels, strict=True):
            fused = z @ weights.T  # n x G; ids are sorted, so a stable sort breaks ties by id
            order = np.argsort(-fused, axis=0, kind="stable")[:10]
            for g in range(len(weights)):
                total[g] += ndcg_at([ids[i] for i in order[:, g]], rel, 10)
        return total / len(self.z)

    def ndcg_per_query(self, weights: np.ndarray, scales: np.ndarray | None = None) -> float:
        """Mean nDCG@10 with one weight row per query; ``scales`` (one per retriever) divide the exact
        scores in place of each query's own spread, as ``fusion.zscore_exact`` does with learned scales."""
        total = 0.0
        for q, (ids, rel) in enumerate(zip(self.ids, self.qrels, strict=True)):
            z = self.z[q] if scales is None else self.exact[q] / scales
            order = np.argsort(-(z @ weights[q]), kind="stable")[:10]
            total += ndcg_at([ids[i] for i in order], rel, 10)
        return total / len(self.z)

    def usual_scales(self, depth: int = fusion.SCALE_DEPTH) -> np.ndarray:
        """Each retriever's spread over the first ``depth`` scores of every query's list (the product's
        ``Totals.scales``)."""
        return np.array([np.concatenate([xs[:depth] for xs in self.stats[c]]).std() for c in LISTS])


def fourth_study(prep: Prepared, count_tokens: Callable[[str], int], best: float) -> None:
    """Session 8: usual spreads instead of each query's, and BM25 only for questions with pieced words."""
    from ragbot.retrieval.retriever import holds_pieced_words

    stat = top_z_stat(fusion.CALIBRATION_HEAD, fusion.CALIBRATION_DEPTH)
    means = [float(np.mean([stat(xs) for xs in prep.stats[c]])) for c in LISTS]
    w = product_weights(means, fusion.CALIBRATION_TEMPERATURE)
    n = len(prep.texts)
    pieced = np.array([holds_pieced_words(t, count_tokens) for t in prep.texts])
    always = np.tile(w, (n, 1))
    gated = always.copy()
    gated[~pieced, 2] = 0.0
    scales = prep.usual_scales()
    print(f"  fourth study: weights {np.round(w, 2)}, {pieced.sum()}/{n} questions with pieced words")
    for label, weights, sc in (
        ("per-query spreads, BM25 always (session 6)", always, None),
        ("usual spreads, BM25 always", always, scales),
        ("per-query spreads, BM25 for pieced words", gated, None),
        ("usual spreads, BM25 for pieced words (product)", gated, scales),
    ):
        score = prep.ndcg_per_query(weights, sc)
        print(f"    {label}: {score:.4f} ({score - best:+.4f})")


Stat = Callable[[np.ndarray], float]


def top_z_stat(head: int, depth: int) -> Stat:
    return lambda xs: fusion.top_z(list(xs), head=head, depth=depth)


def product_weights(means: Sequence[float], temperature: float = 20.0) -> np.ndarray:
    g_s, g_d, g_b = means
    return np.array(fusion.capped_weights(g_s, g_d, g_b, temperature=temperature))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--prefetch", type=int, default=50)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ragbot-fusion-cache"))
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    grid = _grid()
    stats: dict[str, Stat] = {
        "top_z h10 d50 (product)": top_z_stat(10, 50),
        "top_z h1 d10": top_z_stat(1, 10),
        "top_z h1 d50": top_z_stat(1, 50),
        "top_z h3 d50": top_z_stat(3, 50),
        "top_z h5 d20": top_z_stat(5, 20),
    }
    encoders: list[fs._Encoders] = []

    def encoders_once() -> fs._Encoders:
        if not encoders:
            encoders.append(fs._Encoders(args.max_length, 32))
        return encoders[0]

    for folder in args.datasets:
        ds = load_beir(folder)
        scores = fs.encode_dataset(ds, args.cache, encoders_once, args.max_length)
        qviews = fs.views(scores, args.prefetch)
        prep = Prepared(qviews, ds.qrels, scores.query_ids)
        singles = prep.ndcg(np.eye(3))
        best = float(singles.max())
        grid_scores = prep.ndcg(grid)
        top = np.argsort(-grid_scores)[:5]
        print(f"\n## {ds.name}: sparse {singles[0]:.4f} dense {singles[1]:.4f} bm25 {singles[2]:.4f}")
        print(f"  equal weights: {prep.ndcg(np.ones((1, 3)))[0]:.4f}")
        for g in top:
            print(f"  best grid {grid[g]} -> {grid_scores[g]:.4f} ({grid_scores[g] - best:+.4f})")
        share = float((grid_scores >= best - 1e-9).mean())
        print(f"  grid rows >= best single: {share:.0%}")
        fourth_study(prep, encoders_once().count_tokens, best)
        for name, stat in stats.items():
            means = [float(np.mean([stat(xs) for xs in prep.stats[c]])) for c in LISTS]
            for t in (10.0, 20.0):
                w = product_weights(means, t)
                score = prep.ndcg(w[None, :])[0]
                print(
                    f"  {name} t={t:g}: means {np.round(means, 3)} w {np.round(w, 2)} -> {score:.4f} "
                    f"({score - best:+.4f})"
                )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
