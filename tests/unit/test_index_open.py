from __future__ import annotations

from pathlib import Path

import pytest

from ragbot.config import Settings
from ragbot.index import open_index
from ragbot.index.base import VectorIndex
from ragbot.index.edge import EdgeIndex
from ragbot.index.remote import QdrantServerIndex

pytestmark = pytest.mark.unit


def test_without_a_url_the_index_is_an_embedded_edge_shard_under_data_dir(tmp_path: Path) -> None:
    index = open_index(Settings(data_dir=tmp_path, qdrant_collection="kb"))
    try:
        assert isinstance(index, EdgeIndex)
        assert isinstance(index, VectorIndex)
        assert index.path == tmp_path / "qdrant-edge" / "kb"
        assert index.count("any-bot") == 0  # nothing is created on disk until the first write
        assert not index.path.exists()
    finally:
        index.close()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_url_selects_the_qdrant_server_backend(tmp_path: Path) -> None:
    # Nothing listens on this port; constructing the client does not connect.
    index = open_index(Settings(data_dir=tmp_path, qdrant_url="http://127.0.0.1:9", qdrant_api_key="k"))
    try:
        assert isinstance(index, QdrantServerIndex)
        assert isinstance(index, VectorIndex)
    finally:
        index.close()


def test_a_collection_name_that_is_not_a_plain_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="collection name"):
        open_index(Settings(data_dir=tmp_path, qdrant_collection="../elsewhere"))
