"""The spine's acceptance check on the embedded defaults: ingest a folder of one-fact files and ask about
each fact through the real CLI path's service with the packaged local LLM (served through LiteLLM);
the top citation must be the file holding the fact for at least 80% of the questions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.facts import make_facts, write_facts

from ragbot.config import Settings
from ragbot.runtime import Runtime

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("seed", [101])
def test_top_citation_is_the_file_holding_the_fact(
    tmp_path: Path, seed: int, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    from connectors.files import FileConnector

    facts = make_facts(24, seed)
    folder = tmp_path / "facts"
    write_facts(folder, facts)
    runtime = Runtime(
        Settings(data_dir=tmp_path / "data"),
        sparse_encoder=real_sparse_encoder,
        dense_encoder=real_dense_encoder,
    )
    try:
        report = runtime.ingest_service.ingest("facts", FileConnector(str(folder), max_bytes=1 << 20))
        assert report.added == len(facts)
        asked = facts[:10]
        correct = 0
        for fact in asked:
            result = runtime.chat_service.ask("facts", fact.question)
            # a declined answer (nothing the model wrote could be verified, no sentence to quote) has no
            # citation and counts as a miss; a generated or extractive one must cite the fact's file
            assert result.status in ("complete", "refused"), result
            assert result.grounded == bool(result.citations), result
            top = result.citations[0]["path"] if result.citations else ""
            correct += top.endswith(fact.filename)
    finally:
        runtime.close()
    assert correct / len(asked) >= 0.8, f"{correct}/{len(asked)} top citations named the fact's file"
