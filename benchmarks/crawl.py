"""Crawl + ingest throughput, end to end, on the generated fixture site served from 127.0.0.1.

Real parts only: the website connector (robots.txt, sitemaps, SSRF-checked HTTP, trafilatura), the
chunker, both packaged encoders, Qdrant Edge and SQLite. The site's robots.txt sets Crawl-delay 0.005 s,
which the crawler obeys. Model loading is timed apart; each run starts from an empty index and database.

    python benchmarks/crawl.py [--topics 8] [--articles 30] [--sections 3] [--runs 3]

Per run and as medians: pages/s for the first crawl+ingest, for a re-sync with nothing changed and for
the crawl alone (no encoding); the share of the first crawl spent inside the encoders; tokens and chunks
per page (page size decides the encoder cost); and CPU seconds per page, which stays meaningful when other
jobs share the machine (wall-clock figures do not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.site import FixtureSite

from ragbot.config import Settings
from ragbot.db.session import make_engine, make_session_factory, migrate
from ragbot.encoders import load_dense_encoder, load_sparse_encoder
from ragbot.index.edge import EdgeIndex
from ragbot.services.ingest import IngestService, connector_for


class Timed:
    """Adds up the wall time spent in ``encode_documents``; optionally counts the tokens encoded."""

    def __init__(self, inner: Any, *, count_tokens: bool = False) -> None:
        self.inner = inner
        self.count = count_tokens
        self.seconds = 0.0
        self.tokens = 0

    def encode_documents(self, texts: Sequence[str]) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.encode_documents(texts)
        finally:
            self.seconds += time.perf_counter() - started
            if self.count:
                self.tokens += sum(self.inner.count_tokens(t) for t in texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=8)
    parser.add_argument("--articles", type=int, default=30, help="articles per topic")
    parser.add_argument("--sections", type=int, default=3, help="sections per article (1-3): page length")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    settings = Settings()
    started = time.perf_counter()
    sparse, dense = load_sparse_encoder(settings), load_dense_encoder(settings)
    sparse.encode_documents(["warm up the sparse model"])
    dense.encode_documents(["warm up the dense model"])
    print(f"models loaded in {time.perf_counter() - started:.1f} s; cpus={os.cpu_count()}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    first_rates, resync_rates, crawl_rates, cpu_per_page = [], [], [], []
    for run in range(1, args.runs + 1):
        site_options = {"topics": args.topics, "articles_per_topic": args.articles, "sections": args.sections}
        with tempfile.TemporaryDirectory() as tmp, FixtureSite(**site_options) as site:
            url = f"sqlite:///{Path(tmp) / 'ragbot.db'}"
            migrate(url)
            engine = make_engine(url)
            index = EdgeIndex(Path(tmp) / "edge")
            timed_sparse, timed_dense = Timed(sparse), Timed(dense, count_tokens=True)
            service = IngestService(
                index,
                timed_sparse,
                timed_dense,
                make_session_factory(engine),
                chunk_max_tokens=settings.chunk_max_tokens,
                chunk_overlap_tokens=settings.chunk_overlap_tokens,
                batch_size=settings.encode_batch_size,
            )
            options = {"allow_private": True, "max_pages": 100_000}

            t0 = time.perf_counter()
            crawled = sum(1 for _ in connector_for(site.url("/"), settings, **options).fetch({}))
            crawl_s = time.perf_counter() - t0

            t0, cpu0 = time.perf_counter(), time.process_time()
            report = service.ingest("bench", connector_for(site.url("/"), settings, **options))
            first_s, first_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            docs = report.added + report.failed

            t0 = time.perf_counter()
            resync = service.ingest("bench", connector_for(site.url("/"), settings, **options))
            resync_s = time.perf_counter() - t0
            index.close()
            engine.dispose()

        first_rates.append(docs / first_s)
        resync_rates.append((resync.unchanged + resync.failed) / resync_s)
        crawl_rates.append(crawled / crawl_s)
        cpu_per_page.append(first_cpu / docs)
        encode_s = timed_sparse.seconds + timed_dense.seconds
        print(
            f"run {run}: {docs} pages ({report.added} indexed, {report.failed} failed), "
            f"{report.chunks / report.added:.1f} chunks, "
            f"{timed_dense.tokens / report.added:.0f} tokens per page"
        )
        print(
            f"  crawl+ingest {first_s:.2f} s = {first_rates[-1]:.1f} pages/s "
            f"(encoders {encode_s / first_s:.0%} of it: sparse {timed_sparse.seconds:.1f} s, "
            f"dense {timed_dense.seconds:.1f} s; {cpu_per_page[-1] * 1000:.0f} CPU-ms per page)"
        )
        print(f"  re-sync, nothing changed: {resync_s:.2f} s = {resync_rates[-1]:.1f} pages/s")
        print(f"  crawl only: {crawled} results in {crawl_s:.2f} s = {crawl_rates[-1]:.1f} pages/s")
    print(
        f"median over {args.runs} runs: crawl+ingest {statistics.median(first_rates):.1f} pages/s, "
        f"re-sync {statistics.median(resync_rates):.1f} pages/s, "
        f"crawl only {statistics.median(crawl_rates):.1f} pages/s, "
        f"{statistics.median(cpu_per_page) * 1000:.0f} CPU-ms per page"
    )
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
