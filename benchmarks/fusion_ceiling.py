"""How high can fusing SPLADE and dense go on one dataset if its own labels pick the parameters?

Every figure printed here is chosen *with the test qrels*, so none is a rule the product could ship: each is
an upper bound for its family of rules. If a family's bound sits below a goal, no label-free rule of that
family reaches the goal on this data, however clever its parameter choice. Families:

- fixed-weight z-score fusion of the exact sparse and dense scores (the product's rule is one member),
  over the top-``prefetch`` union and over the whole corpus (is the candidate list the cap?);
- weighted RRF over a grid of k;
- BM25 as a third z-scored signal, weights on a simplex grid;
- pseudo-relevance feedback (dense Rocchio, SPLADE RM3, both) from the fused top documents, then z-fusion;
- a per-query oracle that picks the best fixed weight for every query separately (not a family one can
  implement: it is how much per-query adaptivity could add).

Reuses the cached vectors of ``fusion_study.py``:

    .venv/bin/python benchmarks/fusion_ceiling.py ../shared/data/beir/msmarco-5k [--prefetch 50]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusion_study import Scores, _Encoders, encode_dataset

from ragbot.evaluation.beir import load_beir
from ragbot.evaluation.metrics import ndcg_at

WEIGHTS = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # sparse share; dense gets 1 - w


def _z(values: np.ndarray, top: int) -> np.ndarray:
    """Standardise a whole score row by the statistics of its own top ``top`` (what a retriever sees)."""
    ref = np.sort(values)[::-1][:top]
    sd = float(ref.std())
    return (values - float(ref.mean())) / (sd if sd > 0 else 1.0)


def _ndcg(order: Iterable[int], doc_ids: list[str], judged: dict[str, int]) -> float:
    return ndcg_at([doc_ids[i] for i in order], judged, 10)


def _top10(score: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    if allowed is not None:
        masked = np.full_like(score, -np.inf)
        masked[allowed] = score[allowed]
        score = masked
    part = np.argpartition(-score, 9)[:10]
    return part[np.argsort(-score[part], kind="stable")]


class Ceiling:
    def __init__(self, scores: Scores, qrels: dict[str, dict[str, int]], prefetch: int) -> None:
        self.s, self.qrels, self.p = scores, qrels, prefetch
        self.judged = [qi for qi, q in enumerate(scores.query_ids) if qrels.get(q)]
        self.zs = [_z(scores.sparse[qi], prefetch) for qi in range(len(scores.query_ids))]
        self.zd = [_z(scores.dense[qi], prefetch) for qi in range(len(scores.query_ids))]
        self.zb = [_z(scores.bm25[qi], prefetch) for qi in range(len(scores.query_ids))]
        self.union = [
            np.union1d(
                np.argpartition(-scores.sparse[qi], prefetch - 1)[:prefetch],
                np.argpartition(-scores.dense[qi], prefetch - 1)[:prefetch],
            )
            for qi in range(len(scores.query_ids))
        ]

    def per_query(self, qi: int, score: np.ndarray, allowed: np.ndarray | None) -> float:
        return _ndcg(_top10(score, allowed), self.s.doc_ids, self.qrels[self.s.query_ids[qi]])

    def mean(self, fn: object) -> float:
        return float(np.mean([fn(qi) for qi in self.judged]))  # type: ignore[operator]

    def single(self, which: str) -> float:
        rows = {"sparse": self.s.sparse, "dense": self.s.dense, "bm25": self.s.bm25}[which]
        return self.mean(lambda qi: self.per_query(qi, rows[qi], None))

    def z_weight(self, w: float, whole_corpus: bool) -> float:
        return self.mean(
            lambda qi: self.per_query(
                qi, w * self.zs[qi] + (1 - w) * self.zd[qi], None if whole_corpus else self.union[qi]
            )
        )

    def rrf(self, k: int, w: float) -> float:
        def one(qi: int) -> float:
            fused = np.zeros(len(self.s.doc_ids))
            for row, weight in ((self.s.sparse[qi], w), (self.s.dense[qi], 1 - w)):
                top = np.argsort(-row, kind="stable")[: self.p]
                fused[top] += weight / (k + np.arange(1, len(top) + 1))
            return self.per_query(qi, fused, self.union[qi])

        return self.mean(one)

    def three(self, ws: float, wd: float, wb: float) -> float:
        def one(qi: int) -> float:
            bm_top = np.argpartition(-self.s.bm25[qi], self.p - 1)[: self.p]
            allowed = np.union1d(self.union[qi], bm_top)
            return self.per_query(qi, ws * self.zs[qi] + wd * self.zd[qi] + wb * self.zb[qi], allowed)

        return self.mean(one)

    def prf(self, w: float, fb_docs: int, dense_beta: float, sparse_lambda: float) -> float:
        s = self.s

        def one(qi: int) -> float:
            base = _top10(w * self.zs[qi] + (1 - w) * self.zd[qi], self.union[qi])[:fb_docs]
            d_row, s_row = s.dense[qi], s.sparse[qi]
            if dense_beta:
                d_row = s.doc_dense @ (s.query_dense[qi] + dense_beta * s.doc_dense[base].mean(0))
            if sparse_lambda:
                docs = s.doc_sparse[base].astype(np.float64)
                docs = sp.diags(1 / np.maximum(np.asarray(docs.sum(1)).ravel(), 1e-9)) @ docs
                q = s.query_sparse[qi].toarray().ravel().astype(np.float64)
                q2 = (1 - sparse_lambda) * q / max(q.sum(), 1e-9) + sparse_lambda * np.asarray(
                    docs.mean(0)
                ).ravel()
                s_row = np.asarray(s.doc_sparse @ q2).ravel()
            allowed = np.union1d(
                np.argpartition(-s_row, self.p - 1)[: self.p], np.argpartition(-d_row, self.p - 1)[: self.p]
            )
            return self.per_query(qi, w * _z(s_row, self.p) + (1 - w) * _z(d_row, self.p), allowed)

        return self.mean(one)

    def oracle(self) -> float:
        return self.mean(
            lambda qi: max(
                self.per_query(qi, w * self.zs[qi] + (1 - w) * self.zd[qi], self.union[qi]) for w in WEIGHTS
            )
        )


def best(results: dict[str, float]) -> tuple[str, float]:
    name = max(results, key=lambda k: results[k])
    return name, results[name]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--prefetch", type=int, default=50)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ragbot-fusion-cache"))
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    ds = load_beir(args.dataset)
    scores = encode_dataset(ds, args.cache, lambda: _Encoders(args.max_length, 32), args.max_length)
    c = Ceiling(scores, ds.qrels, args.prefetch)
    print(f"{ds.name}: {len(c.judged)} judged queries, prefetch {args.prefetch}; nDCG@10, exponential gains")
    print("parameters chosen WITH the test labels: upper bounds per family, not shippable rules\n")
    rows: list[tuple[str, str, float]] = []
    for which in ("bm25", "sparse", "dense"):
        rows.append((f"{which} alone", "", c.single(which)))
    rows.append(("z-score sum, equal weights (product before calibration)", "w=0.5", c.z_weight(0.5, False)))
    for whole in (False, True):
        label = "z-score, best fixed weight, " + ("whole corpus" if whole else "top-list union")
        name, value = best({f"w_sparse={w}": c.z_weight(float(w), whole) for w in WEIGHTS})
        rows.append((label, name, value))
    grid = {
        f"k={k} w_sparse={w}": c.rrf(k, float(w))
        for k in (1, 2, 5, 10, 20, 40, 60, 100)
        for w in WEIGHTS[::2]
    }
    rows.append(("weighted RRF, best k and weight", *best(grid)))
    simplex = [
        (a / 10, b / 10, (10 - a - b) / 10) for a in range(11) for b in range(11 - a) if 10 - a - b >= 0
    ]
    rows.append(
        (
            "z-score + BM25 third signal, best weights",
            *best({f"s={ws} d={wd} bm25={wb}": c.three(ws, wd, wb) for ws, wd, wb in simplex}),
        )
    )
    prf_weights = (0.3, 0.4, 0.5, 0.6, 0.7)
    for label, betas, lambdas in (
        ("dense PRF (Rocchio) + z-score, best", (0.25, 0.5, 1.0, 2.0), (0.0,)),
        ("SPLADE RM3 + z-score, best", (0.0,), (0.2, 0.3, 0.5, 0.7)),
        ("dense PRF + SPLADE RM3 + z-score, best", (0.5, 1.0), (0.3, 0.5)),
    ):
        grid = {
            f"w_sparse={w} fb={k} beta={b} lambda={lam}": c.prf(w, k, b, lam)
            for w, k, b, lam in itertools.product(prf_weights, (3, 5, 10), betas, lambdas)
        }
        rows.append((label, *best(grid)))
    rows.append(("per-query oracle weight (labels per query; not a rule)", "", c.oracle()))
    width = max(len(r[0]) for r in rows)
    for label, params, value in rows:
        print(f"{label:<{width}}  {value:.4f}  {params}")


if __name__ == "__main__":
    main()
