"""``ragbot eval``: index a BEIR corpus through the product's own ingest, index and retriever, then score it.

Nothing here is a parallel toy pipeline: corpus rows become ``SourceDocument``s that the real
``IngestService`` chunks, encodes and writes into a fresh Qdrant Edge shard and SQLite file in a temporary
folder, and queries go through ``Retriever.retrieve_mode``. Chunk hits map back to corpus ids by their best
chunk (max over chunks). Every mode in ``MODES`` is the product's own retriever (``bm25`` is its BM25 on the
index); ``bm25s`` (not run by default) is an external reference: bm25s with English Snowball stemming and
stop words over the same documents.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from connectors.base import Fetched, FetchResult, KnownDocument
from ragbot.config import Settings
from ragbot.evaluation.beir import BeirDataset, CorpusDoc, load_beir
from ragbot.evaluation.metrics import METRIC_NAMES, RECALL_AT, mean_metrics
from ragbot.types import Segment, SourceDocument

if TYPE_CHECKING:
    from ragbot.retrieval.retriever import RetrievalMode, Retriever
    from ragbot.runtime import Runtime

log = logging.getLogger(__name__)

#: The product's retrievers, run by default.
MODES = ("bm25", "sparse", "dense", "hybrid")
#: Reference baselines outside the product, run when asked for.
REFERENCE_MODES = ("bm25s",)
ALL_MODES = MODES + REFERENCE_MODES
#: The depth the ranking metrics read (nDCG@10, MRR@10).
SERVED_AT = 10
EVAL_BOT = "beir-eval"


class EvaluationError(RuntimeError):
    """The corpus could not be indexed completely, so no figure would be trustworthy."""


@dataclass(frozen=True, slots=True)
class BeirConnector:
    """Yields one ``SourceDocument`` per corpus row; the title leads the text, as BEIR baselines encode it.

    Rows with neither title nor text are skipped: they cannot be retrieved by any mode, and the ingest
    service would otherwise report them as failures, which abort an evaluation.
    """

    dataset: BeirDataset
    kind: str = "beir"

    @property
    def scope(self) -> str:
        return f"beir://{self.dataset.name}"

    @property
    def expected_total(self) -> int | None:
        return sum(1 for doc in self.dataset.corpus if (doc.title + doc.text).strip())

    def uri(self, doc: CorpusDoc) -> str:
        return f"{self.scope}/{doc.id}"

    def fetch(self, known: Mapping[str, KnownDocument]) -> Iterator[FetchResult]:
        for doc in self.dataset.corpus:
            text = f"{doc.title}\n{doc.text}" if doc.title else doc.text
            if not text.strip():
                continue
            yield Fetched(SourceDocument(uri=self.uri(doc), title=doc.title, segments=(Segment(text=text),)))


def evaluate(
    path: Path,
    *,
    modes: Sequence[str] = MODES,
    settings: Settings,
    progress: Callable[[Any], None] | None = None,
    split: str = "test",
) -> dict[str, dict[str, float]]:
    """``{mode: {"ndcg@10": x, "recall@100": y, "mrr@10": z}}`` for each requested mode, in order.

    ``progress`` receives the ingest service's progress events while the corpus is indexed; ``split``
    names the qrels file (``qrels/<split>.tsv``).
    """
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown or not modes:
        raise ValueError(
            f"unknown evaluation mode(s) {unknown or modes!r}: choose from {', '.join(ALL_MODES)}"
        )
    dataset = load_beir(Path(path), split=split)
    results: dict[str, dict[str, float]] = {}
    product_modes = [m for m in modes if m in MODES]
    runs: dict[str, dict[str, list[str]]] = {}
    if product_modes:
        runs.update(_product_runs(dataset, product_modes, settings, progress))
    if "bm25s" in modes:
        runs["bm25s"] = bm25_runs(dataset, depth=RECALL_AT)
    for mode in modes:
        results[mode] = mean_metrics(runs[mode], dataset.qrels)
    return results


def _product_runs(
    dataset: BeirDataset, modes: Sequence[str], settings: Settings, progress: Callable[[Any], None] | None
) -> dict[str, dict[str, list[str]]]:
    from ragbot.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="ragbot-eval-") as tmp:
        # A private data_dir gives a fresh embedded shard and SQLite file; the user's index is never touched.
        connector = BeirConnector(dataset)
        runtime = Runtime(
            settings.model_copy(update={"data_dir": Path(tmp), "database_url": None, "qdrant_url": None})
        )
        try:
            started = time.monotonic()
            report = runtime.ingest_service.ingest(EVAL_BOT, connector, kind="beir", progress=progress)
            if report.failed:
                reasons = "; ".join(f"{f.get('uri')}: {f.get('reason')}" for f in report.failures[:3])
                raise EvaluationError(
                    f"{report.failed} of {len(dataset.corpus)} documents failed to index: {reasons}"
                )
            log.info(
                "indexed %d documents as %d chunks in %.1fs",
                report.added,
                report.chunks,
                time.monotonic() - started,
            )
            if "bm25" in modes and not settings.lexical_retriever:
                raise EvaluationError("the bm25 mode needs RAGBOT_LEXICAL_RETRIEVER=true")
            # Hits are chunks: ask for enough of them to fill the top 100 documents.
            per_doc = max(1, math.ceil(report.chunks / len(dataset.corpus)))
            doc_of = {connector.uri(doc): doc.id for doc in dataset.corpus}
            retriever = _eval_retriever(runtime, settings)
            if "hybrid" in modes:
                # What a deployed bot has learned after answering these questions (the queries, no labels).
                for query in dataset.queries.values():
                    retriever.retrieve_mode(EVAL_BOT, query, 1, "hybrid")
                w_sparse, w_dense, w_bm25 = retriever.calibration.weights(EVAL_BOT)
                scales = retriever.calibration.scales(EVAL_BOT)
                log.info(
                    "fusion %s: weights sparse %.2f, dense %.2f, bm25 %.2f, scales %s after %d queries",
                    settings.fusion,
                    w_sparse,
                    w_dense,
                    w_bm25,
                    "none" if scales is None else "/".join(f"{x:.4g}" for x in scales),
                    retriever.calibration.queries(EVAL_BOT),
                )
            return {mode: _runs(retriever, dataset, mode, per_doc, doc_of) for mode in modes}
        finally:
            runtime.close()


def _eval_retriever(runtime: Runtime, settings: Settings) -> Retriever:
    """The product's retriever with a calibration of its own, minus explanations (no metric reads them)."""
    from ragbot.retrieval.calibration import FusionCalibration

    calibration = FusionCalibration(min_queries=settings.fusion_calibration_queries)
    return runtime.build_retriever(calibration, explain_terms=0)


def _runs(
    retriever: Retriever, dataset: BeirDataset, mode: str, per_doc: int, doc_of: Mapping[str, str]
) -> dict[str, list[str]]:
    """Each query's document ranking, 100 deep.

    A hybrid ranking depends on how deep each retriever's list is (the fusion standardises scores over
    them), so its first 10 come from the request the product serves (``prefetch_k`` candidates each) and
    only ranks 11-100 from a deep request: nDCG@10 and MRR@10 measure what users get, Recall@100 the depth.
    """
    runs: dict[str, list[str]] = {}
    retrieval_mode = cast("RetrievalMode", mode)
    for qid, query in dataset.queries.items():
        hits = retriever.retrieve_mode(EVAL_BOT, query, RECALL_AT * per_doc, retrieval_mode)
        ranked: Iterator[str] = (doc_of[h.chunk.uri] for h in hits)
        if mode == "hybrid":
            served = retriever.retrieve_mode(EVAL_BOT, query, SERVED_AT * per_doc, retrieval_mode)
            head = best_chunk_per_doc([doc_of[h.chunk.uri] for h in served], SERVED_AT)
            ranked = itertools.chain(head, ranked)
        runs[qid] = best_chunk_per_doc(ranked, RECALL_AT)
    return runs


def best_chunk_per_doc(ranked_doc_ids: Iterator[str] | Sequence[str], limit: int) -> list[str]:
    """Collapse a chunk ranking to documents: a document ranks where its best chunk does."""
    seen: dict[str, None] = {}
    for doc_id in ranked_doc_ids:
        seen.setdefault(doc_id)
        if len(seen) >= limit:
            break
    return list(seen)


def bm25_runs(dataset: BeirDataset, depth: int) -> dict[str, list[str]]:
    """The ``bm25s`` reference: Okapi BM25 (bm25s, Snowball English stemmer, English stop words) over
    title + text, outside the product."""
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on itself at import
    stemmer = Stemmer.Stemmer("english")
    texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in dataset.corpus]
    model = bm25s.BM25()
    model.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    qids = list(dataset.queries)
    queries = [dataset.queries[q] for q in qids]
    tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)
    k = min(depth, len(texts))
    ids, scores = model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    runs: dict[str, list[str]] = {}
    for row, qid in enumerate(qids):
        runs[qid] = [dataset.corpus[int(i)].id for i, s in zip(ids[row], scores[row], strict=True) if s > 0]
    return runs


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width table: one row per mode, one column per metric."""
    header = f"{'mode':<8}" + "".join(f"{name:>12}" for name in METRIC_NAMES)
    lines = [header, "-" * len(header)]
    for mode, metrics in results.items():
        lines.append(
            f"{mode:<8}" + "".join(f"{metrics.get(name, float('nan')):>12.4f}" for name in METRIC_NAMES)
        )
    return "\n".join(lines)
