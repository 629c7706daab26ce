"""ragbot's retriever as a LangChain ``BaseRetriever``: the same hybrid retrieval the chat and
``POST /v1/search`` use, returning ``Document``s that carry the citation metadata.

    from ragbot.integrations.langchain import RagbotRetriever
    retriever = RagbotRetriever.from_settings(bot_id="default", k=4)
    docs = retriever.invoke("How do I install ragbot?")

``page_content`` is the chunk's text; ``metadata`` says where it came from (``source``: its URL or path,
``title``, ``page``, ``start_s``...), how it ranked (``rank``, ``score``, every retriever's ``scores``),
why it matched (``matched_terms``, and ``highlights``: spans of ``page_content``) and a ``snippet``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from ragbot.services.search import MAX_TOP_K, Passage, SearchService, search_service

if TYPE_CHECKING:
    from ragbot.config import Settings
    from ragbot.runtime import Runtime

__all__ = ["RagbotRetriever", "passage_document"]


class RagbotRetriever(BaseRetriever):
    """One bot's knowledge base as a LangChain retriever; build it with ``from_settings`` (it then owns a
    runtime: ``close()`` it, or use it as a context manager) or ``from_runtime`` (an application's own)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: SearchService
    bot_id: str
    k: int = Field(default=5, ge=1, le=MAX_TOP_K)

    _owned: Runtime | None = PrivateAttr(default=None)

    @classmethod
    def from_runtime(
        cls, runtime: Runtime, *, bot_id: str | None = None, k: int | None = None
    ) -> RagbotRetriever:
        """Over a runtime's served retriever (its encoders, index and per-bot fusion calibration)."""
        return cls(
            service=search_service(runtime),
            bot_id=bot_id or runtime.settings.bot_id,
            k=k or runtime.settings.top_k,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, bot_id: str | None = None, k: int | None = None
    ) -> RagbotRetriever:
        """Over the deployment the settings describe (default: ``RAGBOT_*`` from the environment); the
        models load on the first query."""
        from ragbot.runtime import Runtime

        runtime = Runtime(settings)
        retriever = cls.from_runtime(runtime, bot_id=bot_id, k=k)
        retriever._owned = runtime
        return retriever

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        passages = self.service.search(self.bot_id, query, self.k)
        return [passage_document(p, self.bot_id) for p in passages]

    def close(self) -> None:
        """Release the runtime ``from_settings`` opened (the index shard, the database)."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> RagbotRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def passage_document(passage: Passage, bot_id: str) -> Document:
    """A search result as a LangChain ``Document``: the chunk's text and its citation metadata."""
    hit, chunk = passage.hit, passage.hit.chunk
    metadata: dict[str, Any] = {
        "source": chunk.url or chunk.path,
        "title": chunk.title,
        "url": chunk.url,
        "path": chunk.path,
        "heading_path": list(chunk.heading_path),
        "page": chunk.page,
        "start_s": chunk.start_s,
        "end_s": chunk.end_s,
        "chunk_id": chunk.id,
        "source_id": chunk.source_id,
        "bot_id": bot_id,
        "rank": passage.rank,
        "score": hit.score,
        "scores": passage.scores,
        "ranks": passage.ranks,
        "matched_terms": [
            {"term": t.term, "contribution": t.contribution, "in_text": t.in_text} for t in hit.matched_terms
        ],
        "highlights": [list(span) for span in passage.highlights],
        "snippet": passage.snippet.text,
        "language": passage.language,
    }
    return Document(page_content=chunk.text, metadata=metadata, id=chunk.id)
