"""ragbot's retriever inside real langchain-core runnable chains, over a real ingest of the sample docs
(SQLite, Qdrant Edge, the packaged encoders; the deployment of ``test_search_api.py``)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from integration.test_search_api import SAMPLE, World, world
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from ragbot.integrations.langchain import RagbotRetriever

__all__ = ["world"]  # the shared deployment fixture, imported for pytest

pytestmark = pytest.mark.integration

QUESTION = "How does SPLADE expand a passage?"


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(
        f"[{d.metadata['rank']}] {d.metadata['title']} ({d.metadata['source']})\n{d.page_content}"
        for d in docs
    )


class Recorder(BaseCallbackHandler):
    """Keeps what LangChain's tracing sees of each retriever run."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.results: list[list[Document]] = []

    def on_retriever_start(
        self, serialized: dict[str, Any], query: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.queries.append(query)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.results.append(list(documents))


def retriever_of(world: World, k: int = 3) -> RagbotRetriever:
    return RagbotRetriever.from_runtime(world.runtime, bot_id=world.bot_a["id"], k=k)


def test_documents_carry_the_chunk_text_and_citation_metadata(world: World) -> None:
    docs = retriever_of(world).invoke(QUESTION)
    assert len(docs) == 3
    top = docs[0]
    meta = top.metadata
    assert meta["source"].endswith("splade.md") and meta["path"] == meta["source"] and meta["url"] is None
    assert meta["title"] and meta["chunk_id"] == top.id and meta["source_id"]
    assert meta["bot_id"] == world.bot_a["id"]
    assert [d.metadata["rank"] for d in docs] == [1, 2, 3]
    assert set(meta["scores"]) == {"hybrid", "sparse", "dense", "bm25"}
    assert meta["score"] == meta["scores"]["hybrid"] > 0
    assert [d.metadata["score"] for d in docs] == sorted((d.metadata["score"] for d in docs), reverse=True)
    assert meta["matched_terms"] and {"term", "contribution", "in_text"} <= set(meta["matched_terms"][0])
    assert {"page", "start_s", "end_s", "heading_path", "snippet", "highlights"} <= set(meta)
    lit = {top.page_content[s:e].lower() for s, e in meta["highlights"]}
    assert "splade" in lit, lit
    assert all(str(SAMPLE) in d.metadata["source"] for d in docs)


def test_it_runs_inside_runnable_chains_sync_async_and_batched(world: World) -> None:
    retriever = retriever_of(world)
    chain = retriever | RunnableLambda(format_docs)
    text = asyncio.run(chain.ainvoke(QUESTION))
    assert text.startswith("[1] ") and "splade.md" in text.split("\n", 1)[0]

    prompt = ChatPromptTemplate.from_template(
        "Answer from these passages:\n{context}\n\nQuestion: {question}"
    )
    rag = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt
    rendered = rag.invoke(QUESTION).to_string()
    assert "Question: " + QUESTION in rendered and "splade.md" in rendered

    recorder = Recorder()
    batched = retriever.batch(
        [QUESTION, "How do I install ragbot?"], config={"callbacks": [recorder], "max_concurrency": 2}
    )
    assert [len(docs) for docs in batched] == [3, 3]
    assert batched[0][0].metadata["source"].endswith("splade.md")
    assert batched[1][0].metadata["source"].endswith("installation.md")
    assert sorted(recorder.queries) == sorted([QUESTION, "How do I install ragbot?"])
    assert sorted(len(r) for r in recorder.results) == [3, 3]
    async_batched = asyncio.run(chain.abatch([QUESTION, "How do I install ragbot?"]))
    assert "installation.md" in async_batched[1].split("\n", 1)[0]


def test_a_retriever_reads_only_its_own_bot(world: World) -> None:
    rival = RagbotRetriever.from_runtime(world.runtime, bot_id=world.bot_b["id"], k=5)
    docs = rival.invoke(QUESTION)
    assert docs and all(d.metadata["source"].startswith(str(world.rival_dir)) for d in docs)
    assert "zanzibar" in docs[0].page_content
    with pytest.raises(ValueError):
        rival.invoke("   ")
