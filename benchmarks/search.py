"""Search latency on the embedded Qdrant Edge index at realistic size (goal: hybrid p50 <= 10 ms).

Builds a shard of ``--n`` synthetic chunks shaped like real ones (SPLADE-like sparse vectors: 100-150 non-zero
weights over the 30,522-term BERT vocabulary, term frequencies Zipf-distributed; random unit 384-d dense
vectors, the worst case for HNSW), through ``EdgeIndex.upsert`` in batches, then optimises it once. Prints
indexing throughput, optimisation time, query encoding time with the packaged encoders (when
``ragbot.encoders`` provides them; search-only figures otherwise), and p50/p95 of sparse, dense and hybrid
searches: engine RRF alone, engine RRF/DBSF plus the per-retriever scores the product returns, and z-score
fusion computed client-side over the candidates' exact scores.

    .venv/bin/python benchmarks/search.py               # 200k chunks
    .venv/bin/python benchmarks/search.py --n 20000     # quicker
    .venv/bin/python benchmarks/search.py --path /tmp/bench-shard --keep   # reuse a built shard
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragbot.config import Settings
from ragbot.encoders.precision import int8_weights_available
from ragbot.index.edge import EdgeIndex
from ragbot.index.points import chunk_point_id
from ragbot.retrieval.retriever import Retriever, fuse_candidates
from ragbot.types import Chunk, EncodedChunk, SparseVector

VOCAB = 30522
BOT = "bench"
DEFAULT_QUERIES = Path(__file__).resolve().parents[2] / "shared/data/beir/msmarco-5k/queries.jsonl"
FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 10)[:700]


class SyntheticVectors:
    """Sparse vectors whose term ids follow a Zipf law (posting lists as skewed as real text) and whose
    weights look like SPLADE's log-saturated activations; dense vectors uniform on the sphere."""

    def __init__(self, seed: int, dim: int, zipf_s: float = 1.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
        weights = 1.0 / ranks**zipf_s
        self.cdf = np.cumsum(weights / weights.sum())
        self.term_of_rank = self.rng.permutation(VOCAB)  # frequent terms are spread over the id space

    def sparse(self, low: int, high: int) -> SparseVector:
        nnz = int(self.rng.integers(low, high + 1))
        draws = np.searchsorted(self.cdf, self.rng.random(nnz * 2))
        ids = np.unique(self.term_of_rank[np.minimum(draws, VOCAB - 1)])[:nnz]
        self.rng.shuffle(ids)
        ids = np.sort(ids[:nnz])
        values = np.log1p(self.rng.gamma(1.5, 0.8, size=len(ids))).astype(np.float32)
        return SparseVector(tuple(int(i) for i in ids), tuple(float(v) for v in values))

    def dense(self, n: int) -> np.ndarray:
        v = self.rng.standard_normal((n, self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def batches(total: int, size: int, synth: SyntheticVectors) -> Iterator[list[EncodedChunk]]:
    for start in range(0, total, size):
        n = min(size, total - start)
        dense = synth.dense(n)
        items = []
        for i in range(n):
            k = start + i
            uri = f"https://docs.example.org/page-{k // 8}"
            text = f"chunk {k} {FILLER}"
            chunk = Chunk(
                chunk_point_id(BOT, uri, k % 8, text),
                BOT,
                f"src-{k // 8}",
                uri,
                f"Page {k // 8}",
                text,
                k % 8,
            )
            items.append(EncodedChunk(chunk, synth.sparse(100, 150), tuple(dense[i].tolist())))
        yield items


def percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


def timed(fn: Callable[[int], object], n: int, warmup: int = 5) -> list[float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def timed_interleaved(
    fns: dict[str, Callable[[int], object]], n: int, warmup: int = 5
) -> dict[str, list[float]]:
    """Each query runs through every variant in turn, so load from other processes hits all variants alike."""
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    out: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(n):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(i)
            out[name].append(time.perf_counter() - t0)
    return out


def load_query_texts(path: Path, n: int) -> list[str]:
    texts = []
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh if line.strip()]
    if not texts:
        texts = [f"how do i configure feature {i} of the product" for i in range(50)]
    return [texts[i % len(texts)] for i in range(n)]


def load_encoders() -> tuple[object, object] | str:
    try:
        from ragbot.config import Settings
        from ragbot.encoders import load_dense_encoder, load_sparse_encoder  # type: ignore[attr-defined]
    except ImportError as exc:
        return f"ragbot.encoders has no loaders yet ({exc})"
    settings = Settings()
    try:
        return load_sparse_encoder(settings), load_dense_encoder(settings)
    except Exception as exc:
        return f"encoders failed to load: {exc}"


def load_dense_encoder_with(settings: Settings, **changes: object) -> object:
    from ragbot.encoders import load_dense_encoder

    return load_dense_encoder(settings.model_copy(update=changes))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="chunks in the shard")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000, help="chunks per upsert")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--prefetch", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument(
        "--path", type=Path, default=None, help="shard folder (default: a temp dir, removed after)"
    )
    ap.add_argument("--keep", action="store_true", help="reuse the shard at --path if it holds --n chunks")
    ap.add_argument(
        "--query-file", type=Path, default=DEFAULT_QUERIES, help="BEIR queries.jsonl for encoding"
    )
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    root = args.path or Path(tempfile.mkdtemp(prefix="ragbot-bench-"))
    synth = SyntheticVectors(args.seed, args.dim)
    index = EdgeIndex(root, "bench", background_optimize=False)
    print(f"cpus={os.cpu_count()} n={args.n} dim={args.dim} prefetch={args.prefetch} top_k={args.top_k}")
    try:
        existing = index.count(BOT)
        if args.keep and existing == args.n:
            print(f"reusing {existing} chunks at {root}")
        else:
            if existing:
                index.delete_bot(BOT)
            index.ensure_collection(args.dim)
            upsert_s = 0.0
            t_all = time.perf_counter()
            done = 0
            for items in batches(args.n, args.batch, synth):
                t0 = time.perf_counter()
                index.upsert(items)
                upsert_s += time.perf_counter() - t0
                done += len(items)
                if done % (args.batch * 20) == 0 or done == args.n:
                    print(f"  {done:>8} chunks, {time.perf_counter() - t_all:6.1f} s", flush=True)
            rate = args.n / upsert_s
            print(f"index: {rate:,.0f} chunks/s in upsert ({upsert_s:.1f} s; data generation excluded)")
            t0 = time.perf_counter()
            index.optimize()
            opt_s = time.perf_counter() - t0
            print(f"optimize: {opt_s:.1f} s  -> {args.n / (upsert_s + opt_s):,.0f} chunks/s including it")

        texts = load_query_texts(args.query_file, args.queries)
        encoders = load_encoders()
        if isinstance(encoders, str):
            print(f"query encoding: not measured, {encoders}; queries are synthetic vectors")
            q_sparse = [synth.sparse(15, 40) for _ in range(args.queries)]
            q_dense = [tuple(v.tolist()) for v in synth.dense(args.queries)]
        else:
            sparse_enc, dense_enc = encoders
            enc_s = timed(lambda i: sparse_enc.encode_query(texts[i]), args.queries)  # type: ignore[attr-defined]
            enc_d = timed(lambda i: dense_enc.encode_query(texts[i]), args.queries)  # type: ignore[attr-defined]
            q_sparse = [sparse_enc.encode_query(t) for t in texts]  # type: ignore[attr-defined]
            q_dense = [dense_enc.encode_query(t) for t in texts]  # type: ignore[attr-defined]
            nnz = statistics.median(len(q.indices) for q in q_sparse)
            (s50, s95), (d50, d95) = percentiles(enc_s), percentiles(enc_d)
            print("query encoding (ms)        p50     p95")
            print(f"  sparse (SPLADE)       {s50:6.2f}  {s95:6.2f}   nnz p50 {nnz}")
            print(f"  dense (MiniLM)        {d50:6.2f}  {d95:6.2f}")

        def fused_only(i: int) -> object:
            index.component_scores = False
            try:
                return index.hybrid_search(BOT, q_sparse[i], q_dense[i], k, pf)
            finally:
                index.component_scores = True

        k, pf = args.top_k, args.prefetch
        rows = {
            "sparse only": lambda i: index.search_sparse(BOT, q_sparse[i], pf),
            "dense only": lambda i: index.search_dense(BOT, q_dense[i], pf),
            "hybrid RRF (engine, fused only)": fused_only,
            "hybrid RRF + component scores": lambda i: index.hybrid_search(
                BOT, q_sparse[i], q_dense[i], k, pf
            ),
            "hybrid DBSF + component scores": lambda i: index.hybrid_search(
                BOT, q_sparse[i], q_dense[i], k, pf, fusion="dbsf"
            ),
            "hybrid z-score (client-side fusion)": lambda i: index.chunks(
                BOT,
                [
                    c.chunk_id
                    for c, _ in fuse_candidates(
                        "zscore", index.hybrid_candidates(BOT, q_sparse[i], q_dense[i], pf), rrf_k=60
                    )[:k]
                ],
            ),
            "sparse_vectors (explanations)": lambda i: index.sparse_vectors(
                BOT, [h.chunk.id for h in index.search_dense(BOT, q_dense[i], k)]
            ),
        }
        samples = timed_interleaved(rows, args.queries)
        print(f"search over {args.queries} queries (ms)            p50     p95")
        for name, times in samples.items():
            p50, p95 = percentiles(times)
            print(f"  {name:<38} {p50:6.2f}  {p95:6.2f}")
        if not isinstance(encoders, str):
            settings = Settings()
            configured = encoders[1].query_precision  # type: ignore[attr-defined]
            dense_variants = {f"{configured} dense queries": encoders[1]}
            if configured != "int8" and int8_weights_available(torch.device("cpu")):
                dense_variants["int8 dense queries"] = load_dense_encoder_with(
                    settings, dense_query_precision="int8"
                )
            variants: dict[str, Callable[[int], object]] = {}
            for explain_terms in (0, 8):
                for dense_label, dense_enc in dense_variants.items():
                    retriever = Retriever(
                        encoders[0],  # type: ignore[arg-type]
                        dense_enc,  # type: ignore[arg-type]
                        index,
                        prefetch_k=pf,
                        fusion=settings.fusion,
                        rrf_k=settings.rrf_k,
                        explain_terms=explain_terms,
                    )
                    label = f"retrieve(), {dense_label}" + (" + explanations" if explain_terms else "")
                    variants[label] = lambda i, r=retriever: r.retrieve(BOT, texts[i], k)
            print(f"end to end: encode both + hybrid {settings.fusion} + fetch (ms)   p50     p95")
            for name, times in timed_interleaved(variants, args.queries).items():
                p50, p95 = percentiles(times)
                print(f"  {name:<52} {p50:6.2f}  {p95:6.2f}")
    finally:
        index.close()
        if args.path is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
