"""Encoder throughput and latency, side by side on the same texts in one run.

Baseline: the textbook Hugging Face SPLADE (full fp32 logits for every padded position, then relu, log1p,
the mask and a max), batches in input order. Against it: ``SpladeEncoder`` (length-sorted batches, bf16
screening, exact fp32 on surviving terms), its largest difference from the baseline, the dense encoder,
and single-query latency for both. Figures are medians over ``--repeats`` runs.

    python benchmarks/encode.py                 # 256 MS MARCO passages if ../shared has them
    python benchmarks/encode.py --n 64 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from ragbot.config import Settings
from ragbot.encoders import apply_torch_threads
from ragbot.encoders.dense import TransformerDenseEncoder
from ragbot.encoders.packaged import resolve_model_path
from ragbot.encoders.precision import int8_weights_available
from ragbot.encoders.sparse import SpladeEncoder, splade_max_pool

MSMARCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir" / "msmarco-5k"


def load_texts(n: int, seed: int) -> tuple[list[str], list[str], str]:
    """Passages and queries from MS MARCO when present, else seeded synthetic text of similar lengths."""
    corpus, queries = MSMARCO / "corpus.jsonl", MSMARCO / "queries.jsonl"
    if corpus.is_file() and queries.is_file():
        with corpus.open(encoding="utf-8") as f:
            docs = [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]
        with queries.open(encoding="utf-8") as f:
            qs = [json.loads(line)["text"] for line in f]
        return docs, qs, f"MS MARCO ({corpus})"
    rng = random.Random(seed)
    words = [
        "retrieval",
        "sparse",
        "dense",
        "vector",
        "index",
        "query",
        "passage",
        "model",
        "token",
        "weight",
        "score",
        "search",
    ]
    docs = [" ".join(rng.choices(words, k=rng.randint(20, 120))) for _ in range(n)]
    qs = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(50)]
    return docs, qs, "synthetic text (MS MARCO not found)"


def naive_splade(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int
) -> torch.Tensor:
    """The textbook implementation: full logits for every padded position, then pool."""
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                max_length=max_length,
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            logits = model(**batch).logits
            rows.append(splade_max_pool(logits, batch["attention_mask"]))
    return torch.cat(rows)


def median_rate(run: Callable[[], object], items: int, repeats: int) -> tuple[float, float, object]:
    """Median items/s by the wall clock and per CPU-second of this process (steadier on a shared box)."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        result = run()
        wall.append(items / (time.perf_counter() - wall_start))
        cpu.append(items / max(time.process_time() - cpu_start, 1e-9))
    return statistics.median(wall), statistics.median(cpu), result


def latencies_ms(run: Callable[[str], object], queries: Sequence[str], repeats: int) -> tuple[float, float]:
    for query in queries[:5]:
        run(query)
    samples = []
    for _ in range(repeats):
        for query in queries:
            start = time.perf_counter()
            run(query)
            samples.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[94]


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256, help="passages to encode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=settings.torch_threads or 2)
    parser.add_argument("--batch-size", type=int, default=settings.encode_batch_size)
    parser.add_argument("--max-length", type=int, default=settings.sparse_max_length)
    parser.add_argument("--sparse-model", default=settings.sparse_model)
    parser.add_argument("--dense-model", default=settings.dense_model)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    apply_torch_threads(args.threads)
    docs, queries, source = load_texts(args.n, args.seed)
    print(f"texts: {len(docs)} passages, {len(queries)} queries from {source}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"max_length {args.max_length}, {args.repeats} repeats (medians)\n"
    )

    sparse_path = resolve_model_path(args.sparse_model)
    tokenizer = AutoTokenizer.from_pretrained(sparse_path)
    mlm = AutoModelForMaskedLM.from_pretrained(sparse_path, dtype=torch.float32).eval()
    ours = SpladeEncoder(args.sparse_model, max_length=args.max_length, batch_size=args.batch_size)
    dense = TransformerDenseEncoder(
        args.dense_model, max_length=settings.dense_max_length, batch_size=args.batch_size, precision="fp32"
    )
    dense_fast = TransformerDenseEncoder(
        args.dense_model,
        max_length=settings.dense_max_length,
        batch_size=args.batch_size,
        precision=settings.dense_precision,
        query_precision=settings.dense_query_precision,
    )
    # Queries on int8 weights (opt-in), to show what they would buy side by side.
    dense_int8_queries = (
        TransformerDenseEncoder(
            args.dense_model,
            max_length=settings.dense_max_length,
            batch_size=args.batch_size,
            precision=dense_fast.precision,
            query_precision="int8",
        )
        if dense_fast.query_precision != "int8" and int8_weights_available(torch.device("cpu"))
        else None
    )
    lengths = [len(ids) for ids in tokenizer(docs, truncation=True, max_length=args.max_length)["input_ids"]]
    print(
        f"tokens per passage: mean {statistics.mean(lengths):.0f}, max {max(lengths)}; "
        f"fast SPLADE head in use: {ours.uses_fast_head}\n"
    )

    warmup = docs[: args.batch_size]  # first calls pay one-off kernel setup; time the steady state
    naive_splade(mlm, tokenizer, warmup, args.max_length, args.batch_size)
    ours.encode_documents(warmup)
    dense.encode_documents(warmup)
    dense_fast.encode_documents(warmup)
    naive_rate, naive_cpu, naive_out = median_rate(
        lambda: naive_splade(mlm, tokenizer, docs, args.max_length, args.batch_size), len(docs), args.repeats
    )
    ours_rate, ours_cpu, ours_out = median_rate(lambda: ours.encode_documents(docs), len(docs), args.repeats)
    assert isinstance(naive_out, torch.Tensor)
    assert isinstance(ours_out, list)
    ours_dense = torch.zeros_like(naive_out)
    for row, vector in enumerate(ours_out):
        ours_dense[row, list(vector.indices)] = torch.tensor(vector.values, dtype=ours_dense.dtype)
    max_diff = float((ours_dense - naive_out).abs().max())
    same_terms = bool(torch.equal(ours_dense > 0, naive_out > 0))
    terms = statistics.mean(len(v.indices) for v in ours_out)
    dense_rate, dense_cpu, dense_out = median_rate(
        lambda: dense.encode_documents(docs), len(docs), args.repeats
    )
    fast_rate, fast_cpu, fast_out = median_rate(
        lambda: dense_fast.encode_documents(docs), len(docs), args.repeats
    )
    assert isinstance(dense_out, list)
    assert isinstance(fast_out, list)
    min_cos = float((torch.tensor(dense_out) * torch.tensor(fast_out)).sum(dim=1).min())
    sparse_p50, sparse_p95 = latencies_ms(ours.encode_query, queries, args.repeats)
    dense_p50, dense_p95 = latencies_ms(dense.encode_query, queries, args.repeats)
    fast_p50, fast_p95 = latencies_ms(dense_fast.encode_query, queries, args.repeats)
    int8_p50, int8_p95 = (
        latencies_ms(dense_int8_queries.encode_query, queries, args.repeats)
        if dense_int8_queries is not None
        else (fast_p50, fast_p95)
    )
    int8_model = dense_int8_queries or dense_fast
    int8_cos = min(
        float(torch.tensor(dense.encode_query(q)) @ torch.tensor(int8_model.encode_query(q))) for q in queries
    )
    both_p50, both_p95 = latencies_ms(
        lambda q: (ours.encode_query(q), dense_fast.encode_query(q)), queries, args.repeats
    )

    print(f"{'':<34}{'docs/s':>10}{'docs/cpu-s':>12}")
    print(f"{'SPLADE naive HF (full logits)':<34}{naive_rate:>10.1f}{naive_cpu:>12.1f}")
    print(
        f"{'SPLADE ragbot SpladeEncoder':<34}{ours_rate:>10.1f}{ours_cpu:>12.1f}   "
        f"x{ours_rate / naive_rate:.1f} wall, x{ours_cpu / naive_cpu:.1f} cpu vs naive"
    )
    print(
        f"{'  max |ours - naive|':<34}{max_diff:>10.2e}   "
        f"same nonzero terms: {same_terms}, {terms:.0f} terms/passage"
    )
    dense_label = "dense TransformerDenseEncoder fp32"
    print(f"{dense_label:<34}{dense_rate:>10.1f}{dense_cpu:>12.1f}   dim {dense.dim}")
    print(
        f"{f'dense, precision={settings.dense_precision}':<34}{fast_rate:>10.1f}{fast_cpu:>12.1f}   "
        f"x{fast_rate / dense_rate:.1f} wall vs fp32, runs {dense_fast.precision}, "
        f"min cosine to fp32 {min_cos:.6f}"
    )
    print(f"{'query latency SPLADE':<34}{sparse_p50:>10.2f} ms p50 {sparse_p95:8.2f} ms p95")
    print(f"{'query latency dense fp32':<34}{dense_p50:>10.2f} ms p50 {dense_p95:8.2f} ms p95")
    fast_label = f"query latency dense {dense_fast.query_precision}"
    print(f"{fast_label:<34}{fast_p50:>10.2f} ms p50 {fast_p95:8.2f} ms p95")
    if dense_int8_queries is not None:
        print(
            f"{'query latency dense int8 (opt-in)':<34}{int8_p50:>10.2f} ms p50 {int8_p95:8.2f} ms p95   "
            f"x{fast_p50 / int8_p50:.2f} vs {dense_fast.query_precision}, x{dense_p50 / int8_p50:.2f} vs "
            f"fp32, min query cosine to fp32 {int8_cos:.5f}"
        )
    print(f"{'query latency both (product)':<34}{both_p50:>10.2f} ms p50 {both_p95:8.2f} ms p95")


if __name__ == "__main__":
    main()
