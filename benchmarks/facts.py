"""Does ``ask`` cite the file that holds the fact? Ingest N one-fact files, ask about each, and print the
share of answers whose top citation (and top retrieved passage) is the right file, plus ingest docs/s and
ask latency (median, p95).

    .venv/bin/python benchmarks/facts.py --n 30 --seed 7          # embedded defaults (local LLM)
    RAGBOT_LLM_MODEL=openai/gpt-4o-mini .venv/bin/python benchmarks/facts.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.facts import make_facts, write_facts

from ragbot.config import Settings
from ragbot.quiet import quiet_third_party
from ragbot.runtime import Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    quiet_third_party()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "facts"
        facts = make_facts(args.n, args.seed)
        write_facts(folder, facts)
        runtime = Runtime(Settings(data_dir=Path(tmp) / "data"))
        from connectors.files import FileConnector

        _ = runtime.sparse_encoder, runtime.dense_encoder, runtime.index
        t0 = time.perf_counter()
        report = runtime.ingest_service.ingest(
            "facts", FileConnector(str(folder), max_bytes=runtime.settings.max_upload_bytes)
        )
        ingest_s = time.perf_counter() - t0
        print(f"ingest: {report.added} docs, {report.chunks} chunks in {ingest_s:.1f} s "
              f"= {report.added / ingest_s:.1f} docs/s")  # fmt: skip

        cited_ok = retrieved_ok = answered = 0
        latencies: list[float] = []
        for fact in facts:
            t = time.perf_counter()
            result = runtime.chat_service.ask("facts", fact.question)
            latencies.append(time.perf_counter() - t)
            answered += bool(result.answer)
            top = result.citations[0]["path"] if result.citations else None
            cited_ok += bool(top and top.endswith(fact.filename))
            hits = runtime.retriever.retrieve("facts", fact.question, 1)
            retrieved_ok += bool(hits and hits[0].chunk.uri.endswith(fact.filename))
        runtime.close()

    n = len(facts)
    latencies.sort()
    print(f"questions: {n}, answered: {answered}")
    print(f"top citation is the fact's file: {cited_ok}/{n} = {cited_ok / n:.0%}")
    print(f"top retrieved passage is the fact's file: {retrieved_ok}/{n} = {retrieved_ok / n:.0%}")
    print(f"ask latency: median {statistics.median(latencies):.2f} s, "
          f"p95 {latencies[min(n - 1, int(0.95 * n))]:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
