"""Vector index backends behind one protocol (``ragbot.index.base.VectorIndex``).

Backends import their client libraries lazily, so importing this package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragbot.config import Settings
    from ragbot.index.base import VectorIndex

__all__ = ["open_index"]


def open_index(settings: Settings) -> VectorIndex:
    """Embedded Qdrant Edge shard under ``data_dir`` unless ``qdrant_url`` names a Qdrant server."""
    if settings.qdrant_url:
        from ragbot.index.remote import QdrantServerIndex

        return QdrantServerIndex(
            settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            collection=settings.qdrant_collection,
            lexical=settings.lexical_retriever,
        )
    from ragbot.index.edge import EdgeIndex

    return EdgeIndex(settings.edge_path, settings.qdrant_collection, lexical=settings.lexical_retriever)
