"""Crawl + ingest throughput, end to end, on the generated fixture site served from 127.0.0.1.

Real parts only: the website connector (robots.txt, sitemaps, SSRF-checked HTTP, trafilatura), the
chunker, both packaged encoders, Qdrant Edge and SQLite. The site's robots.txt sets Crawl-delay 0.005 s,
which the crawler obeys. Model loading is timed apart; each run starts from an empty index and database.

    python benchmarks/crawl.py [--topics 8] [--articles 30] [--runs 3]

Prints per run and the median: documents, chunks, seconds and pages/s for the first crawl, for a re-sync
with nothing changed, and for the crawl alone (no encoding), to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.site import FixtureSite

from ragbot.config import Settings
from ragbot.db.session import make_engine, make_session_factory, migrate
from ragbot.encoders import load_dense_encoder, load_sparse_encoder
from ragbot.index.edge import EdgeIndex
from ragbot.services.ingest import IngestService, connector_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=8)
    parser.add_argument("--articles", type=int, default=30, help="articles per topic")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    settings = Settings()
    started = time.perf_counter()
    sparse, dense = load_sparse_encoder(settings), load_dense_encoder(settings)
    sparse.encode_documents(["warm up the sparse model"])
    dense.encode_documents(["warm up the dense model"])
    print(f"models loaded in {time.perf_counter() - started:.1f} s; cpus={os.cpu_count()}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    first_rates, resync_rates, crawl_rates = [], [], []
    for run in range(1, args.runs + 1):
        with (
            tempfile.TemporaryDirectory() as tmp,
            FixtureSite(topics=args.topics, articles_per_topic=args.articles) as site,
        ):
            url = f"sqlite:///{Path(tmp) / 'ragbot.db'}"
            migrate(url)
            engine = make_engine(url)
            index = EdgeIndex(Path(tmp) / "edge")
            service = IngestService(
                index,
                sparse,
                dense,
                make_session_factory(engine),
                chunk_max_tokens=settings.chunk_max_tokens,
                chunk_overlap_tokens=settings.chunk_overlap_tokens,
                batch_size=settings.encode_batch_size,
            )
            options = {"allow_private": True, "max_pages": 100_000}

            t0 = time.perf_counter()
            crawled = sum(1 for _ in connector_for(site.url("/"), settings, **options).fetch({}))
            crawl_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            report = service.ingest("bench", connector_for(site.url("/"), settings, **options))
            first_s = time.perf_counter() - t0
            docs = report.added + report.failed

            t0 = time.perf_counter()
            resync = service.ingest("bench", connector_for(site.url("/"), settings, **options))
            resync_s = time.perf_counter() - t0
            index.close()
            engine.dispose()

        first_rates.append(docs / first_s)
        resync_rates.append((resync.unchanged + resync.failed) / resync_s)
        crawl_rates.append(crawled / crawl_s)
        print(
            f"run {run}: crawl+ingest {docs} docs ({report.added} indexed, {report.failed} failed), "
            f"{report.chunks} chunks in {first_s:.2f} s = {first_rates[-1]:.1f} pages/s | "
            f"re-sync {resync.unchanged} unchanged in {resync_s:.2f} s = {resync_rates[-1]:.1f} pages/s | "
            f"crawl only {crawled} results in {crawl_s:.2f} s = {crawl_rates[-1]:.1f} pages/s"
        )
    print(
        f"median over {args.runs} runs: crawl+ingest {statistics.median(first_rates):.1f} pages/s, "
        f"re-sync {statistics.median(resync_rates):.1f} pages/s, "
        f"crawl only {statistics.median(crawl_rates):.1f} pages/s"
    )
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
